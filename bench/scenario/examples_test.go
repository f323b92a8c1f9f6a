package scenario

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/bench"
	"github.com/p2pbft/p2pbft/internal/netlab"
	"github.com/p2pbft/p2pbft/testnet"
)

// p2pbftBinary is built once by TestMain without -race: the replicas and the scenario runner (with its
// load generator) run as processes at full speed while this test process may run under -race.
var p2pbftBinary string

func TestMain(m *testing.M) {
	os.Exit(testnet.RunWithBinary(moduleRoot(), func(bin string) { p2pbftBinary = bin }, m.Run))
}

func moduleRoot() string {
	wd, _ := os.Getwd()
	return filepath.Join(wd, "..", "..")
}

// capabilities reports which experiment features the binary's `start` offers.
func capabilities(t *testing.T) (byzantine, admin bool) {
	out, err := exec.Command(p2pbftBinary, "start", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("p2pbft start --help: %v\n%s", err, out)
	}
	return strings.Contains(string(out), "--experiment-byzantine"), strings.Contains(string(out), "--experiment-admin-api")
}

// TestExampleScenarios runs every scenario of scenarios/ in its short form, each as a `p2pbft scenario
// run --short` process, and requires every check to pass: progress resumed within the bound after each
// event, returning replicas caught up, the correct replicas converged on the same chain, and every
// accepted request is in it exactly once.
func TestExampleScenarios(t *testing.T) {
	if p2pbftBinary == "" {
		t.Skip("end-to-end tests disabled (-short or P2PBFT_E2E=0)")
	}
	files, err := filepath.Glob(filepath.Join(moduleRoot(), "scenarios", "*.toml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no example scenarios: %v", err)
	}
	byzantine, admin := capabilities(t)
	for _, file := range files {
		s, err := Load(file, true)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(s.Name, func(t *testing.T) {
			if needsByzantine(s) && !byzantine {
				t.Skip("the node offers no Byzantine experiment modes (p2pbft start --experiment-byzantine) yet")
			}
			if s.Network != nil {
				if err := netlab.Available(); err != nil {
					t.Skipf("[network] runs the replicas on network namespaces with emulated links: %v", err)
				}
			} else if needsAdmin(s) && !admin {
				t.Skip("the node offers no partition endpoints (p2pbft start --experiment-admin-api) yet")
			}
			runExample(t, file)
		})
	}
}

func needsByzantine(s *Scenario) bool {
	if len(s.Byzantine) > 0 {
		return true
	}
	for _, e := range s.Events {
		if e.Action == ActionByzantine {
			return true
		}
	}
	return false
}

func needsAdmin(s *Scenario) bool {
	for _, e := range s.Events {
		if e.Action == ActionPartition || e.Action == ActionHeal {
			return true
		}
	}
	return false
}

const exampleSeed = 20260101

// TestExampleInDocker runs the partition scenario's short form with the replicas as docker containers (a
// partition disconnects the primary's container from the docker network). It needs a docker engine;
// P2PBFT_DOCKER=0 skips it.
func TestExampleInDocker(t *testing.T) {
	if p2pbftBinary == "" {
		t.Skip("end-to-end tests disabled (-short or P2PBFT_E2E=0)")
	}
	if os.Getenv("P2PBFT_DOCKER") == "0" {
		t.Skip("P2PBFT_DOCKER=0")
	}
	if err := bench.DockerAvailable(); err != nil {
		t.Skipf("no docker engine: %v", err)
	}
	const image = "p2pbft:scenario-test"
	t.Cleanup(func() { exec.Command("docker", "rmi", image).Run() })
	runExample(t, filepath.Join(moduleRoot(), "scenarios", "partition-primary.toml"), "--docker", "--docker-image", image)
}

func runExample(t *testing.T, file string, extra ...string) {
	out := filepath.Join(t.TempDir(), "result")
	if os.Getenv("P2PBFT_SCENARIO_KEEP") != "" {
		var err error
		if out, err = os.MkdirTemp("", "p2pbft-scenario-"); err != nil {
			t.Fatal(err)
		}
		out = filepath.Join(out, "result")
		t.Logf("result folder: %s", out)
	}
	// Generous: a short scenario takes 10-30 s; a loaded machine may triple that.
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	args := append([]string{"scenario", "run", file, "--short", "--seed", fmt.Sprint(exampleSeed), "--out", out}, extra...)
	cmd := exec.CommandContext(ctx, p2pbftBinary, args...)
	cmd.WaitDelay = 30 * time.Second
	start := time.Now()
	stdout, err := cmd.Output()
	var stderr []byte
	if ee, ok := err.(*exec.ExitError); ok {
		stderr = ee.Stderr
	}
	b, rerr := os.ReadFile(filepath.Join(out, "run.json"))
	if rerr != nil {
		t.Fatalf("scenario run: %v (no run.json: %v)\nstdout:\n%s\nstderr:\n%s", err, rerr, stdout, stderr)
	}
	var o Outcome
	if err := json.Unmarshal(b, &o); err != nil {
		t.Fatal(err)
	}
	if err != nil || !o.Pass {
		t.Errorf("scenario %s (seed %d) failed: %v\n%s\nstderr:\n%s", o.Name, o.Seed, err, stdout, tail(string(stderr), 60))
		for _, l := range mustGlob(t, filepath.Join(out, "logs", "*.log")) {
			lb, _ := os.ReadFile(l)
			t.Logf("--- %s ---\n%s", filepath.Base(l), tail(string(lb), 30))
		}
		return
	}
	// The result folder holds what a rerun needs.
	for _, f := range []string{"scenario.toml", "run.json", "result.txt", "plot.png", "trace.json", "trace.txt", "trace.png", "phases.png", filepath.Join("logs", "node0.log")} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("result folder: %v", err)
		}
	}
	// Its trace records show the view change of a scenario that crashes the primary.
	if o.Name == "primary-crash" {
		b, err := os.ReadFile(filepath.Join(out, "trace.json"))
		var tr struct {
			ViewChanges []struct{ View uint64 } `json:"view_changes"`
		}
		if err == nil {
			err = json.Unmarshal(b, &tr)
		}
		if err != nil || len(tr.ViewChanges) == 0 {
			t.Errorf("trace.json of %s: %v, %d view changes, want the one the crash caused", o.Name, err, len(tr.ViewChanges))
		}
	}
	if o.Seed != exampleSeed || !strings.Contains(o.Rerun, fmt.Sprintf("--seed %d", exampleSeed)) || o.Figures == nil {
		t.Errorf("outcome: seed %d, rerun %q, figures %v", o.Seed, o.Rerun, o.Figures != nil)
	}
	if o.Network != nil {
		// The replicas really talked over the emulated links.
		var sent, lost, cut uint64
		for _, l := range o.Network.Links {
			sent, lost, cut = sent+l.Stats.Packets, lost+l.Stats.Lost, cut+l.Stats.Cut
		}
		t.Logf("network %s: %d packets over the emulated links, %d lost, %d dropped by cuts", o.Network.Subnet, sent, lost, cut)
		if sent < 1000 || len(o.Network.Hosts) == 0 {
			t.Errorf("the run recorded %d packets over its links and %d hosts", sent, len(o.Network.Hosts))
		}
	}
	var steps []string
	for _, s := range o.Steps {
		steps = append(steps, fmt.Sprintf("%s %s: progress %.2fs", s.Action, strings.Join(s.Targets, ","), s.ResumeMs/1000))
	}
	t.Logf("%s passed in %s: %d accepted (%.0f/s, p50 %.1f ms); %s", o.Name, time.Since(start).Round(time.Second),
		o.Figures.Acked, o.Figures.Throughput, o.Figures.Latency.P50, strings.Join(steps, "; "))
}

func mustGlob(t *testing.T, pattern string) []string {
	m, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func tail(s string, lines int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}
