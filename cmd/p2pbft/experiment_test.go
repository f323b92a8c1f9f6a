package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/node/api/apitypes"
	"github.com/p2pbft/p2pbft/node/config"
	"github.com/p2pbft/p2pbft/testnet"
)

// A Byzantine mode never takes effect without --experiment-byzantine: given by flag or by config.toml,
// start refuses and says why; the flag without a mode, or an unknown mode, is refused too.
func TestStartByzantineNeedsExplicitFlag(t *testing.T) {
	h := filepath.Join(t.TempDir(), "byz")
	initHome(t, h)
	writeGenesis(t, h, loadKey(t, h))
	if _, err := run(t, "start", "--home", h, "--byzantine-mode", "silent"); err == nil || !strings.Contains(err.Error(), "--experiment-byzantine") {
		t.Fatalf("mode by flag without the opt-in: %v", err)
	}
	cfg, err := config.Load(h)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Experiment.ByzantineMode = "equivocate"
	b, err := config.Commented(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h, config.ConfigFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "start", "--home", h); err == nil || !strings.Contains(err.Error(), "--experiment-byzantine") {
		t.Fatalf("mode by config.toml without the opt-in: %v", err)
	}
	if _, err := run(t, "start", "--home", h, "--byzantine-mode", "", "--experiment-byzantine"); err == nil || !strings.Contains(err.Error(), "without a mode") {
		t.Fatalf("opt-in without a mode: %v", err)
	}
	if _, err := run(t, "start", "--home", h, "--byzantine-mode", "sneaky", "--experiment-byzantine"); err == nil || !strings.Contains(err.Error(), "experiment.byzantine_mode") {
		t.Fatalf("unknown mode: %v", err)
	}
}

// startSolo starts a one-replica chain in process with extra start flags and returns its API address and
// a function that stops it.
func startSolo(t *testing.T, extra ...string) (string, func()) {
	t.Helper()
	h := filepath.Join(t.TempDir(), "solo")
	apiAddr := freeAddr(t)
	initHome(t, h, "--api", apiAddr)
	writeGenesis(t, h, loadKey(t, h))
	return apiAddr, startHome(t, h, apiAddr, extra...)
}

// freeAddr returns a loopback address whose port is free, drawn as testnet draws its replicas' ports
// (below the ephemeral range, so that no connection takes it before the replica binds it).
func freeAddr(t *testing.T) string {
	t.Helper()
	ports, err := testnet.FreePorts("127.0.0.1", 1)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
}

// startHome starts the replica of home h (its API at apiAddr) in process and returns a function that
// stops it.
func startHome(t *testing.T, h, apiAddr string, extra ...string) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := newRootCmd()
	logs := &syncBuffer{}
	cmd.SetOut(logs)
	cmd.SetErr(logs)
	cmd.SetArgs(append([]string{"start", "--home", h}, extra...))
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
			cancel()
			t.Fatalf("start returned early: %v\n%s", err, logs)
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("node not healthy\n%s", logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("start: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("start did not stop")
		}
	}
}

func httpDo(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// With the opt-in the replica runs its Byzantine mode and says so in its status; --experiment-admin-api
// serves the partition endpoints, which are absent otherwise.
func TestStartExperimentFlags(t *testing.T) {
	api, stop := startSolo(t, "--experiment-byzantine", "--byzantine-mode", "delay", "--byzantine-delay", "5ms", "--experiment-admin-api")
	var st apitypes.Status
	code, body := httpDo(t, "GET", "http://"+api+"/v1/status", "")
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil || st.Byzantine != "delay" {
		t.Fatalf("status: %d %s", code, body)
	}
	if code, body := httpDo(t, "GET", "http://"+api+"/admin/partition", ""); code != 200 || !strings.Contains(body, `"partitioned": []`) {
		t.Fatalf("GET /admin/partition: %d %s", code, body)
	}
	if code, body := httpDo(t, "POST", "http://"+api+"/admin/partition", `{"peers": [0]}`); code != 400 || !strings.Contains(body, "this replica") {
		t.Fatalf("partition from itself: %d %s", code, body)
	}
	if code, body := httpDo(t, "POST", "http://"+api+"/admin/heal", `{}`); code != 200 {
		t.Fatalf("heal: %d %s", code, body)
	}
	stop()

	api, stop = startSolo(t)
	defer stop()
	if code, _ := httpDo(t, "GET", "http://"+api+"/admin/partition", ""); code != 404 {
		t.Fatalf("admin endpoints without --experiment-admin-api: %d", code)
	}
	code, body = httpDo(t, "GET", "http://"+api+"/v1/status", "")
	var st2 apitypes.Status
	if code != 200 || json.Unmarshal([]byte(body), &st2) != nil || st2.Byzantine != "" {
		t.Fatalf("status of a correct replica: %d %s", code, body)
	}
}

func TestBenchAndScenarioHelp(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		flags []string
	}{
		{[]string{"bench", "--help"}, []string{"--n", "--dir", "--api", "--mode", "--rate", "--clients", "--duration", "--requests", "--size", "--keys", "--presign", "--half-load", "--out", "--json"}},
		{[]string{"scenario", "run", "--help"}, []string{"--short", "--seed", "--out", "--docker", "--keep"}},
		{[]string{"start", "--help"}, []string{"--experiment-byzantine", "--byzantine-mode", "--experiment-admin-api"}},
	} {
		out, err := run(t, tc.args...)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		for _, f := range tc.flags {
			if !strings.Contains(out, f) {
				t.Errorf("%v does not document %s", tc.args, f)
			}
		}
	}
	if _, err := run(t, "bench", "--mode", "open", "--duration", "1s"); err == nil || !strings.Contains(err.Error(), "rate") {
		t.Fatalf("open loop without a rate: %v", err)
	}
	if _, err := run(t, "bench", "--keys", "pareto"); err == nil || !strings.Contains(err.Error(), "pareto") {
		t.Fatalf("unknown key distribution: %v", err)
	}
	if _, err := run(t, "scenario", "check", filepath.Join("..", "..", "scenarios", "primary-crash.toml")); err != nil {
		t.Fatalf("scenario check: %v", err)
	}
}
