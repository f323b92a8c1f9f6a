package main

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/node/config"
	"github.com/p2pbft/p2pbft/testnet"
)

// runIn is run with standard input.
func runIn(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// Every kind of failure exits with its own status (README, "Exit status").
func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	if _, err := run(t, "init", "--home", home); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"frobnicate"}, exitUsage, "unknown command"},
		{[]string{"tx", "frobnicate"}, exitUsage, "unknown command"},
		{[]string{"testnet", "frobnicate"}, exitUsage, "unknown command"},
		{[]string{"init", "--no-such-flag"}, exitUsage, "unknown flag"},
		{[]string{"keygen"}, exitUsage, "--out"},
		{[]string{"keygen", "--out", filepath.Join(dir, "k"), "extra"}, exitUsage, "unknown command"},
		{[]string{"tx", "--home", home, "put", "k"}, exitUsage, "arg"},
		{[]string{"tx", "--home", home, "--base64", "get", "!!"}, exitUsage, "base64"},
		{[]string{"tx", "--home", home, "--local", "get", "k"}, exitUsage, "--api"},
		{[]string{"status", "--timeout", "soon"}, exitUsage, "invalid argument"},
		{[]string{"start", "--home", home, "--window", "7"}, exitUsage, "consensus.window"},
		{[]string{"bench", "--mode", "open", "--duration", "1s"}, exitUsage, "rate"},
		{[]string{"status", "--api", closedAddr(t), "--timeout", "5s"}, exitUnavailable, "is the node running"},
		{[]string{"tx", "--api", closedAddr(t), "--timeout", "5s", "put", "k", "v"}, exitUnavailable, "is the node running"},
		{[]string{"testnet", "kill", "node0", "--dir", dir}, exitUnavailable, "testnet"},
		{[]string{"id", "--home", filepath.Join(dir, "missing")}, exitError, "p2pbft init"},
	} {
		out, err := run(t, tc.args...)
		if got := exitCode(err); got != tc.code || err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%v: exit %d (%v), want %d and %q\n%s", tc.args, got, err, tc.code, tc.msg, out)
		}
	}
	if _, err := run(t, "version"); exitCode(err) != exitOK {
		t.Errorf("version: %v", err)
	}
	// Bare commands that group others print their help and succeed.
	if out, err := run(t, "tx"); err != nil || !strings.Contains(out, "Available Commands") {
		t.Errorf("tx alone: %v\n%s", err, out)
	}
}

// The API's error statuses map to exit statuses: refused as invalid, unavailable, not found, other.
func TestAPIErrorExitCodes(t *testing.T) {
	var status atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(int(status.Load()))
		io.WriteString(w, `{"error": "no", "code": "x"}`)
	}))
	defer srv.Close()
	for _, tc := range []struct{ status, code int }{
		{400, exitRejected}, {413, exitRejected}, {422, exitRejected}, {503, exitUnavailable}, {504, exitUnavailable}, {500, exitError},
	} {
		status.Store(int32(tc.status))
		_, err := run(t, "status", "--api", srv.URL)
		if got := exitCode(err); got != tc.code {
			t.Errorf("HTTP %d: exit %d (%v), want %d", tc.status, got, err, tc.code)
		}
	}
}

// One name per concept: --api is the HTTP API everywhere (the old names still work, hidden, with a
// warning); --home only where a node's home is used; --json where a script reads the output.
func TestFlagNames(t *testing.T) {
	help := func(args ...string) string {
		t.Helper()
		out, err := run(t, append(args, "--help")...)
		if err != nil {
			t.Fatalf("%v --help: %v", args, err)
		}
		return out
	}
	for _, c := range [][]string{{"start"}, {"init"}, {"status"}, {"tx"}, {"tx", "put"}, {"bench"}, {"trace"}} {
		if h := help(c...); !strings.Contains(h, "--api ") {
			t.Errorf("%v has no --api:\n%s", c, h)
		}
	}
	for _, c := range [][]string{{"status"}, {"tx"}} {
		if h := help(c...); strings.Contains(h, "--api-url") || strings.Contains(h, "--http ") {
			t.Errorf("%v --help shows a deprecated name:\n%s", c, h)
		}
	}
	for _, c := range [][]string{{"init"}, {"id"}, {"start"}, {"status"}, {"tx"}, {"tx", "get"}} {
		if h := help(c...); !strings.Contains(h, "--home") || !strings.Contains(h, envHome) {
			t.Errorf("%v does not document --home and %s", c, envHome)
		}
	}
	for _, c := range [][]string{{"keygen"}, {"genesis"}, {"testnet"}, {"testnet", "init"}, {"bench"}, {"trace"}, {"scenario", "run"}, {"version"}} {
		if h := help(c...); strings.Contains(h, "--home") {
			t.Errorf("%v shows --home, which it does not use", c)
		}
	}
	for _, c := range [][]string{{"id"}, {"init"}, {"keygen"}, {"status"}, {"tx"}, {"testnet", "nodes"}, {"bench"}, {"trace"}, {"version"}} {
		if h := help(c...); !strings.Contains(h, "--json") {
			t.Errorf("%v has no --json", c)
		}
	}
	// The deprecated names still work and point at the new one.
	addr := closedAddr(t)
	out, err := run(t, "status", "--api-url", addr, "--timeout", "5s")
	if exitCode(err) != exitUnavailable || !strings.Contains(out, "use --api") {
		t.Errorf("status --api-url: %v\n%s", err, out)
	}
	out, err = run(t, "tx", "--http", addr, "--timeout", "5s", "get", "k")
	if exitCode(err) != exitUnavailable || !strings.Contains(out, "use --api") || strings.Contains(err.Error(), "--api-url") {
		t.Errorf("tx --http: %v\n%s", err, out)
	}
	// heal takes no NAME, and says so.
	if h := help("testnet", "heal"); strings.Contains(h, "NAME") {
		t.Errorf("testnet heal --help names a NAME:\n%s", h)
	}
	// The root documents the exit statuses and the environment.
	if h := help(); !strings.Contains(h, "Exit status") || !strings.Contains(h, envHome) {
		t.Errorf("p2pbft --help:\n%s", h)
	}
	if h := help("init"); !strings.Contains(h, defaultP2PPort) || defaultP2PPort == "26656" {
		t.Errorf("init --help: default port %s:\n%s", defaultP2PPort, h)
	}
}

func TestVersionFlag(t *testing.T) {
	out, err := run(t, "--version")
	if err != nil || !strings.HasPrefix(out, "p2pbft ") {
		t.Fatalf("--version: %v %q", err, out)
	}
	out, err = run(t, "version", "--json")
	var v struct {
		Version   string `json:"version"`
		GoVersion string `json:"go_version"`
	}
	if err != nil || json.Unmarshal([]byte(out), &v) != nil || v.Version == "" || v.GoVersion == "" {
		t.Fatalf("version --json: %v %q", err, out)
	}
}

// P2PBFT_HOME sets the default home; id --json prints addresses another machine can dial (no wildcard).
func TestHomeFromEnvAndIDJSON(t *testing.T) {
	home := filepath.Join(t.TempDir(), "envhome")
	t.Setenv(envHome, home)
	out, err := run(t, "init", "--json")
	var created struct {
		Home   string `json:"home"`
		PeerID string `json:"peer_id"`
	}
	if err != nil || json.Unmarshal([]byte(out), &created) != nil {
		t.Fatalf("init --json: %v\n%s", err, out)
	}
	if created.Home != home {
		t.Fatalf("init used home %q, want %s from %s", created.Home, home, envHome)
	}
	out, err = run(t, "id", "--json")
	var id struct {
		PeerID string   `json:"peer_id"`
		Addrs  []string `json:"addrs"`
	}
	if err != nil || json.Unmarshal([]byte(out), &id) != nil || id.PeerID == "" || len(id.Addrs) == 0 {
		t.Fatalf("id --json: %v\n%s", err, out)
	}
	for _, a := range id.Addrs {
		if strings.Contains(a, "/0.0.0.0/") || !strings.HasSuffix(a, "/p2p/"+id.PeerID) || !strings.Contains(a, "/"+defaultP2PPort+"/") {
			t.Errorf("id address %q", a)
		}
	}
	if last := id.Addrs[len(id.Addrs)-1]; !strings.HasPrefix(last, "/ip4/127.") {
		t.Errorf("loopback is not last: %v", id.Addrs)
	}
	kout, err := run(t, "keygen", "--out", filepath.Join(t.TempDir(), "k"), "--json")
	if err != nil || !strings.Contains(kout, `"peer_id": "12D3KooW`) {
		t.Fatalf("keygen --json: %v %s", err, kout)
	}
}

// genesis --out refuses to replace a file unless --force, like init and keygen.
func TestGenesisOutRefusesOverwrite(t *testing.T) {
	k, _ := identity.GenerateKey()
	path := filepath.Join(t.TempDir(), "genesis.toml")
	args := []string{"genesis", "--chain-id", "a", "--replica", k.PeerID().String(), "--out", path}
	if _, err := run(t, args...); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	other := append([]string{}, args...)
	other[2] = "b"
	if _, err := run(t, other...); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second genesis --out: %v", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("the refused genesis changed the file")
	}
	if _, err := run(t, append(other, "--force")...); err != nil {
		t.Fatal(err)
	}
	if g, err := identity.LoadGenesis(path); err != nil || g.ChainID() != "b" {
		t.Fatalf("--force: %v %v", g, err)
	}
}

// testnet init takes what testnet takes when it creates a folder.
func TestTestnetInitOptions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tn")
	out, err := run(t, "testnet", "init", "--dir", dir, "--n", "4", "--chain-id", "opts", "--log-level", "debug", "--log-format", "json",
		"--request-timeout", "3s", "--view-change-timeout", "4s", "--experiment-admin-api")
	if err != nil {
		t.Fatalf("testnet init: %v\n%s", err, out)
	}
	net, err := testnet.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(filepath.Join(dir, net.Nodes()[2].Home))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Log.Level != "debug" || cfg.Log.Format != "json" || cfg.Consensus.RequestTimeout != 3*time.Second ||
		cfg.Consensus.ViewChangeTimeout != 4*time.Second || !cfg.Experiment.AdminAPI || net.Genesis().ChainID() != "opts" {
		t.Fatalf("node2's config: %+v", cfg)
	}
	if _, err := run(t, "testnet", "init", "--dir", filepath.Join(t.TempDir(), "x"), "--log-format", "xml"); exitCode(err) != exitUsage {
		t.Fatalf("bad log format: %v", err)
	}
	// Both commands document the same creation flags.
	a, _ := run(t, "testnet", "--help")
	b, _ := run(t, "testnet", "init", "--help")
	for _, f := range []string{"--n ", "--chain-id", "--log-level", "--log-format", "--request-timeout", "--view-change-timeout", "--experiment-admin-api"} {
		if !strings.Contains(a, f) || !strings.Contains(b, f) {
			t.Errorf("%s: testnet %v, testnet init %v", f, strings.Contains(a, f), strings.Contains(b, f))
		}
	}
	// nodes --json on a folder nothing runs.
	out, err = run(t, "testnet", "nodes", "--dir", dir, "--json")
	var nodes struct {
		Running bool `json:"running"`
		Nodes   []struct {
			Name string `json:"name"`
		} `json:"nodes"`
	}
	if err != nil || json.Unmarshal([]byte(out), &nodes) != nil || nodes.Running || len(nodes.Nodes) != 4 {
		t.Fatalf("testnet nodes --json: %v\n%s", err, out)
	}
}

// go-libp2p's warnings about peers that went away (a client that disconnects during identify) are
// debug lines; its other warnings stay warnings.
func TestLibp2pChurnIsDebug(t *testing.T) {
	var buf bytes.Buffer
	r := &libp2pLogs{}
	r.set(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}), slog.LevelWarn)
	log := slog.New(routeHandler{r: r}).With("logger", "identify")
	log.Warn("error reading identify message", "err", "stream reset")
	log.Warn("error reading identify message", "err", "read tcp 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer")
	log.Warn("failed to open the resource manager", "err", "permission denied")
	if got := buf.String(); strings.Contains(got, "identify message") || !strings.Contains(got, "permission denied") {
		t.Fatalf("at warn:\n%s", got)
	}
	buf.Reset()
	r.set(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}), slog.LevelDebug)
	log.Warn("error reading identify message", "err", "stream reset")
	if got := buf.String(); !strings.Contains(got, `"level":"DEBUG"`) || !strings.Contains(got, "identify message") {
		t.Fatalf("at debug:\n%s", got)
	}
}

// Values from standard input and from a file, against a running one-replica chain.
func TestTxValueFromStdinAndFile(t *testing.T) {
	api, stop := startSolo(t)
	defer stop()
	if out, err := runIn(t, "from\nstdin", "tx", "--api", api, "put", "a", "-"); err != nil {
		t.Fatalf("put from stdin: %v\n%s", err, out)
	}
	file := filepath.Join(t.TempDir(), "v")
	if err := os.WriteFile(file, []byte{0, 1, 2, 255}, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, "tx", "--api", api, "put", "b", "--value-file", file); err != nil {
		t.Fatalf("put from a file: %v\n%s", err, out)
	}
	if out, err := runIn(t, "new", "tx", "--api", api, "cas", "a", "from\nstdin", "--value-file", "-"); err != nil {
		t.Fatalf("cas from stdin: %v\n%s", err, out)
	}
	if out, err := run(t, "tx", "--api", api, "get", "a"); err != nil || out != "new\n" {
		t.Fatalf("get a: %v %q", err, out)
	}
	if out, err := run(t, "tx", "--api", api, "--base64", "get", "Yg=="); err != nil || out != "AAEC/w==\n" {
		t.Fatalf("get b: %v %q", err, out)
	}
	if _, err := run(t, "tx", "--api", api, "put", "c", "v", "--value-file", file); exitCode(err) != exitUsage {
		t.Fatalf("a value and --value-file: %v", err)
	}
	if _, err := run(t, "tx", "--api", api, "put", "c", "--value-file", filepath.Join(t.TempDir(), "none")); exitCode(err) != exitUsage {
		t.Fatalf("missing --value-file: %v", err)
	}
	// Exit statuses a script branches on.
	if _, err := run(t, "tx", "--api", api, "get", "nothing"); exitCode(err) != exitNotFound {
		t.Fatalf("get missing: %v", err)
	}
	if _, err := run(t, "tx", "--api", api, "cas", "a", "old", "x"); exitCode(err) != exitConflict {
		t.Fatalf("failed cas: %v", err)
	}
	if _, err := run(t, "tx", "--api", api, "del", "nothing"); exitCode(err) != exitNotFound {
		t.Fatalf("del missing: %v", err)
	}
}

// checkKeysOnce fails if a JSON log line holds a key twice at its top level.
func checkKeysOnce(t *testing.T, logs string) {
	t.Helper()
	lines := 0
	for _, line := range strings.Split(logs, "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		lines++
		dec := json.NewDecoder(strings.NewReader(line))
		if _, err := dec.Token(); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		seen := map[string]bool{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			key, _ := k.(string)
			if seen[key] {
				t.Errorf("key %q twice: %s", key, line)
			}
			seen[key] = true
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				t.Fatalf("%q: %v", line, err)
			}
		}
	}
	if lines == 0 {
		t.Fatal("no JSON log lines")
	}
}
