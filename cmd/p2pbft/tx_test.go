package main

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/multiformats/go-multiaddr"

	"github.com/p2pbft/p2pbft/client"
	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/node/config"
)

// `tx` against a chain none of whose replicas listens fails at once, with the unavailable status and a
// message naming every replica it tried, instead of waiting out the connection timeouts: connection
// refused leaves nothing to wait for.
func TestTxNoReplicaListening(t *testing.T) {
	home := t.TempDir()
	var reps []identity.Replica
	for range 4 {
		k, err := identity.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		host, port, _ := strings.Cut(closedAddr(t), ":")
		a, err := multiaddr.NewMultiaddr("/ip4/" + host + "/tcp/" + port)
		if err != nil {
			t.Fatal(err)
		}
		reps = append(reps, identity.Replica{PeerID: k.PeerID(), Addrs: []multiaddr.Multiaddr{a}})
	}
	g, err := identity.NewGenesis("cli-unreachable", reps)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Save(filepath.Join(home, config.GenesisFile)); err != nil {
		t.Fatal(err)
	}
	// The command's own timeout is long: a run that waited for it (or for the client's 10 s connect
	// timeout after the CLI's 3 s head start) would take far longer than the bound below.
	const timeout = 60 * time.Second
	start := time.Now()
	out, err := run(t, "tx", "--home", home, "--timeout", timeout.String(), "put", "k", "v")
	took := time.Since(start)
	if exitCode(err) != exitUnavailable || !errors.Is(err, client.ErrUnreachable) {
		t.Fatalf("exit %d, err %v, want %d wrapping %q\n%s", exitCode(err), err, exitUnavailable, client.ErrUnreachable, out)
	}
	for r := range 4 {
		if !strings.Contains(err.Error(), "replica "+string(rune('0'+r))+":") {
			t.Errorf("the error does not name replica %d: %v", r, err)
		}
	}
	if !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("the error does not say why: %v", err)
	}
	if took > timeout/2 {
		t.Fatalf("tx failed after %s: it waited for its timeout (%s) rather than failing on refused connections", took, timeout)
	}
	t.Logf("failed after %s: %v", took, err)
}
