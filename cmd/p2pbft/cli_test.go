package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/p2pbft/p2pbft/identity"
)

// run executes the root command in-process with args and returns its standard output.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestInitGenesisID(t *testing.T) {
	dir := t.TempDir()
	var homes []string
	for i := 0; i < 4; i++ {
		h := filepath.Join(dir, "n"+string(rune('0'+i)))
		homes = append(homes, h)
		if out, err := run(t, "init", "--home", h, "--moniker", "node"+string(rune('0'+i))); err != nil {
			t.Fatalf("init: %v\n%s", err, out)
		}
		st, err := os.Stat(filepath.Join(h, "node_key"))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("node key: %v %v", st, err)
		}
	}
	if _, err := run(t, "init", "--home", homes[0]); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second init: %v", err)
	}
	args := []string{"genesis", "--chain-id", "lab", "--out", filepath.Join(dir, "genesis.toml")}
	for _, h := range homes {
		args = append(args, "--from-home", h)
	}
	if out, err := run(t, args...); err != nil || !strings.Contains(out, "n=4, f=1") {
		t.Fatalf("genesis: %v\n%s", err, out)
	}
	g, err := identity.LoadGenesis(filepath.Join(dir, "genesis.toml"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "id", "--home", homes[2])
	if err != nil {
		t.Fatal(err)
	}
	if first := strings.SplitN(out, "\n", 2)[0]; first != g.PeerID(2).String() {
		t.Fatalf("id printed %q, genesis has %s at index 2", first, g.PeerID(2))
	}
	if !strings.Contains(out, "/tcp/26690/p2p/"+g.PeerID(2).String()) {
		t.Fatalf("id did not print a bootstrap multiaddr:\n%s", out)
	}
}

func TestGenesisFromSpecs(t *testing.T) {
	var ids []string
	for i := 0; i < 4; i++ {
		k, err := identity.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, k.PeerID().String())
	}
	out, err := run(t, "genesis", "--chain-id", "c1",
		"--replica", "a="+ids[0]+"@/ip4/10.0.0.1/tcp/26690",
		"--replica", ids[1], "--replica", ids[2], "--replica", ids[3])
	if err != nil {
		t.Fatalf("genesis: %v\n%s", err, out)
	}
	g, err := identity.ParseGenesis([]byte(out))
	if err != nil {
		t.Fatalf("printed genesis does not parse: %v\n%s", err, out)
	}
	if g.N() != 4 || g.Replica(0).Name != "a" || len(g.Replica(0).Addrs) != 1 {
		t.Fatalf("genesis %+v", g.Replicas())
	}
	for _, bad := range []string{"x=notapeer", ids[0] + "@/ip4/nope"} {
		if _, err := run(t, "genesis", "--chain-id", "c1", "--replica", bad); err == nil {
			t.Errorf("--replica %q accepted", bad)
		}
	}
	if _, err := run(t, "genesis", "--chain-id", "c1", "--replica", ids[0], "--replica", ids[0]); err == nil {
		t.Error("duplicate replica accepted")
	}
}

func TestKeygenAndMissingHome(t *testing.T) {
	path := filepath.Join(t.TempDir(), "client.key")
	out, err := run(t, "keygen", "--out", path)
	if err != nil || !strings.HasPrefix(out, "12D3KooW") {
		t.Fatalf("keygen: %v %q", err, out)
	}
	if _, err := run(t, "keygen", "--out", path); err == nil {
		t.Fatal("keygen overwrote a key")
	}
	if _, err := run(t, "id", "--home", filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "p2pbft init") {
		t.Fatalf("missing home: %v", err)
	}
}

// genesis warns, on standard error, when the replica count tolerates no fault or pays for replicas that
// add no tolerance; the genesis on standard output stays parseable.
func TestGenesisFaultToleranceWarning(t *testing.T) {
	var ids []string
	for range 5 {
		k, err := identity.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, k.PeerID().String())
	}
	for _, tc := range []struct {
		n    int
		warn string
	}{{1, "tolerates no faulty replica (f=0)"}, {3, "tolerates no faulty replica (f=0)"}, {4, ""}, {5, "n=5 tolerates f=1, as n=4 does"}} {
		args := []string{"genesis", "--chain-id", "c"}
		for _, id := range ids[:tc.n] {
			args = append(args, "--replica", id)
		}
		cmd := newRootCmd()
		var out, errOut bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&errOut)
		cmd.SetArgs(args)
		if err := cmd.Execute(); err != nil {
			t.Fatalf("n=%d: %v", tc.n, err)
		}
		if _, err := identity.ParseGenesis(out.Bytes()); err != nil {
			t.Fatalf("n=%d: the genesis on standard output does not parse: %v", tc.n, err)
		}
		switch {
		case tc.warn == "" && errOut.Len() > 0:
			t.Fatalf("n=%d: unexpected warning %q", tc.n, errOut.String())
		case tc.warn != "" && !strings.Contains(errOut.String(), tc.warn):
			t.Fatalf("n=%d: warning %q, want it to say %q", tc.n, errOut.String(), tc.warn)
		}
	}
}
