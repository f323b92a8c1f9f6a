package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/node/api/apitypes"
	"github.com/p2pbft/p2pbft/node/config"
)

// syncBuffer is a bytes.Buffer safe for a command writing while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// initHome makes a node home with `init` and a genesis listing the given homes' keys (with their order).
func initHome(t *testing.T, home string, extra ...string) {
	t.Helper()
	args := []string{"init", "--home", home, "--listen", "/ip4/127.0.0.1/tcp/0,/ip4/127.0.0.1/udp/0/quic-v1", "--api", "127.0.0.1:0"}
	args = append(args, extra...)
	if out, err := run(t, args...); err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
}

func writeGenesis(t *testing.T, home string, keys ...*identity.Key) {
	t.Helper()
	var reps []identity.Replica
	for _, k := range keys {
		reps = append(reps, identity.Replica{PeerID: k.PeerID()})
	}
	g, err := identity.NewGenesis("cli-test", reps)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Save(filepath.Join(home, config.GenesisFile)); err != nil {
		t.Fatal(err)
	}
}

func loadKey(t *testing.T, home string) *identity.Key {
	t.Helper()
	k, err := identity.LoadKey(filepath.Join(home, config.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestStartClearErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := run(t, "start", "--home", filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "p2pbft init") {
		t.Fatalf("missing home: %v", err)
	}

	// A genesis that does not list this node.
	h := filepath.Join(dir, "stranger")
	initHome(t, h)
	other, _ := identity.GenerateKey()
	writeGenesis(t, h, other)
	if _, err := run(t, "start", "--home", h); err == nil || !strings.Contains(err.Error(), "does not list this node") {
		t.Fatalf("genesis without this node: %v", err)
	}

	// A key other users can read.
	h = filepath.Join(dir, "loose")
	initHome(t, h)
	writeGenesis(t, h, loadKey(t, h))
	if err := os.Chmod(filepath.Join(h, config.KeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "start", "--home", h); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("loose key permissions: %v", err)
	}
	os.Chmod(filepath.Join(h, config.KeyFile), 0o600)

	// Addresses in use: the HTTP API's, then the p2p listen address.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if _, err := run(t, "start", "--home", h, "--api", busy.Addr().String()); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("API address in use: %v", err)
	}
	port := busy.Addr().(*net.TCPAddr).Port
	if _, err := run(t, "start", "--home", h, "--listen", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("p2p address in use: %v", err)
	}

	// A bad flag value is named.
	if _, err := run(t, "start", "--home", h, "--log-format", "xml"); err == nil || !strings.Contains(err.Error(), "log.format") {
		t.Fatalf("bad log format: %v", err)
	}
	if _, err := run(t, "start", "--home", h, "--window", "7"); err == nil || !strings.Contains(err.Error(), "consensus.window") {
		t.Fatalf("bad window: %v", err)
	}
}

// A one-replica chain (n = 1, f = 0) started in process: the API answers, tx through libp2p and through
// the API commit, status reads, and cancelling the context stops it cleanly.
func TestStartTxStatusOneReplica(t *testing.T) {
	dir := t.TempDir()
	h := filepath.Join(dir, "solo")
	apiAddr := freeAddr(t)
	initHome(t, h, "--moniker", "solo", "--api", apiAddr)
	writeGenesis(t, h, loadKey(t, h))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := newRootCmd()
	logs := &syncBuffer{}
	cmd.SetOut(logs)
	cmd.SetErr(logs)
	cmd.SetArgs([]string{"start", "--home", h, "--log-level", "debug", "--log-format", "json"})
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()

	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + apiAddr + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("start returned early: %v\n%s", err, logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("node not healthy\n%s", logs)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The genesis lists no addresses: the client bootstraps from the node's address.
	var st0 apitypes.Status
	sout, err := run(t, "status", "--home", h, "--json")
	if err != nil || json.Unmarshal([]byte(sout), &st0) != nil || len(st0.ListenAddrs) == 0 {
		t.Fatalf("status: %v\n%s", err, sout)
	}
	boot := st0.ListenAddrs[0]
	out, err := run(t, "tx", "--home", h, "--timeout", "2s", "put", "color", "red")
	if err == nil {
		t.Fatalf("tx without any address of the replicas succeeded: %s", out)
	}
	out, err = run(t, "tx", "--home", h, "--bootstrap", boot, "put", "color", "red")
	if err != nil || !strings.Contains(out, `ok: put "color"`) {
		t.Fatalf("tx put over libp2p: %v\n%s", err, out)
	}
	out, err = run(t, "tx", "--home", h, "--bootstrap", boot, "get", "color")
	if err != nil || out != "red\n" {
		t.Fatalf("tx get: %v %q", err, out)
	}
	if _, err := os.Stat(filepath.Join(h, CLIKeyFile)); err != nil {
		t.Fatalf("tx did not create its client key: %v", err)
	}
	out, err = run(t, "tx", "--home", h, "--api", "home", "cas", "color", "red", "green")
	if err != nil || !strings.Contains(out, "replica 0 answered") {
		t.Fatalf("tx cas over HTTP: %v\n%s", err, out)
	}
	if _, err := run(t, "tx", "--home", h, "--api", apiAddr, "cas", "color", "red", "blue"); err == nil || !strings.Contains(err.Error(), `holds "green"`) {
		t.Fatalf("failing cas: %v", err)
	}
	out, err = run(t, "tx", "--api", "http://"+apiAddr, "--local", "get", "color")
	if err != nil || out != "green\n" {
		t.Fatalf("local get: %v %q", err, out)
	}
	if _, err := run(t, "tx", "--home", h, "--bootstrap", boot, "get", "nothing"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("get missing: %v", err)
	}
	out, err = run(t, "tx", "--home", h, "--bootstrap", boot, "--base64", "--json", "put", "AAE=", "/w==")
	if err != nil {
		t.Fatal(err)
	}
	var jo txOutcome
	if err := json.Unmarshal([]byte(out), &jo); err != nil || jo.Status != "ok" || jo.Key != "AAE=" || len(jo.Replicas) != 1 {
		t.Fatalf("json output: %v %q", err, out)
	}
	out, err = run(t, "status", "--home", h)
	if err != nil || !strings.Contains(out, "replica     0 (solo)") || !strings.Contains(out, "mode normal") {
		t.Fatalf("status: %v\n%s", err, out)
	}
	out, err = run(t, "status", "--api", apiAddr, "--json")
	var st apitypes.Status
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || st.Height < 4 || st.ChainID != "cli-test" {
		t.Fatalf("status --json: %v %+v\n%s", err, st, out)
	}
	// Logs are JSON lines carrying the replica index.
	if !strings.Contains(logs.String(), `"replica":0`) {
		t.Fatalf("JSON logs without the replica index:\n%s", logs.String()[:min(2000, len(logs.String()))])
	}
	// ... and every key once per line (the node, its p2p host and gossipsub each add theirs).
	checkKeysOnce(t, logs.String())

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("start after cancel: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("start did not stop")
	}
	if _, err := http.Get("http://" + apiAddr + "/health"); err == nil {
		t.Fatal("API still answers after shutdown")
	}
	if _, err := run(t, "status", "--api", apiAddr); err == nil || !strings.Contains(err.Error(), "is the node running") {
		t.Fatalf("status of a stopped node: %v", err)
	}
}

func TestHelpDocumentsEveryFlag(t *testing.T) {
	for _, args := range [][]string{{"start", "--help"}, {"tx", "--help"}, {"tx", "cas", "--help"}, {"status", "--help"}, {"testnet", "--help"}, {"testnet", "kill", "--help"}, {"testnet", "init", "--help"}} {
		out, err := run(t, args...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if !strings.Contains(out, "Flags:") && !strings.Contains(out, "Global Flags:") {
			t.Fatalf("%v: no flags section:\n%s", args, out)
		}
	}
	out, _ := run(t, "start", "--help")
	for _, flag := range []string{"--bootstrap", "--listen", "--api", "--log-format", "--request-timeout", "--store-sync", "--external", "--mdns", "--trace", "--trace-slots"} {
		if !strings.Contains(out, flag) {
			t.Errorf("start --help does not document %s", flag)
		}
	}
}
