package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/node/config"
	"github.com/p2pbft/p2pbft/testnet"
)

// p2pbftBinary is built once by TestMain (without -race, so the replicas run at full speed).
var p2pbftBinary string

func TestMain(m *testing.M) {
	os.Exit(testnet.RunWithBinary(moduleDir(), func(bin string) { p2pbftBinary = bin }, m.Run))
}

// TestMeasureLocal runs a closed and an open loop against four local replicas and checks that every
// figure of the result is filled in from what the replicas and the kernel report; then it targets the
// same replicas by folder and by API addresses.
func TestMeasureLocal(t *testing.T) {
	if p2pbftBinary == "" {
		t.Skip("end-to-end tests disabled (-short or P2PBFT_E2E=0)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	tg, err := StartLocal(ctx, LocalConfig{Dir: dir, N: 4, Binary: p2pbftBinary,
		Configure: func(_ int, c *config.Config) { c.Consensus.RequestTimeout = 3 * time.Second }})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()

	res, err := Measure(ctx, tg, Config{Warmup: time.Second, Load: LoadConfig{Mode: Closed, Clients: 4,
		Duration: Duration(4 * time.Second), Workload: Workload{Size: 64}, Seed: 3}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Acked == 0 || res.Failed != 0 || res.Throughput <= 0 || res.Executed <= 0 || res.Latency.P50 <= 0 ||
		res.Latency.P99 < res.Latency.P50 || res.BatchMean <= 0 || res.MessagesPerRequest <= 0 || res.ReceivedPerRequest <= 0 {
		t.Fatalf("closed loop: %+v", res)
	}
	// The window starts once the 1 s warmup is over and ends when the 4 s of load do. Where exactly depends
	// on how busy the machine is (the baseline is read when the observer gets to it: 1.6 s in a CI run on a
	// loaded machine), so only those bounds are checked.
	if res.WarmupMs < 990 || res.WindowMs <= 0 || res.WarmupMs+res.WindowMs < 3990 {
		t.Fatalf("window %v ms after %v ms warmup: want it to start after the 1 s warmup and end after the 4 s load", res.WindowMs, res.WarmupMs)
	}
	for _, u := range res.Replicas {
		if u.Cores <= 0 || u.MicrosPerRequest <= 0 || u.Source != "proc" {
			t.Fatalf("CPU of %s: %+v", u.Name, u)
		}
	}
	if _, err := exec.LookPath("ss"); err == nil && res.BytesSource == "" {
		t.Fatalf("no bytes per request although ss is installed: %v", res.Notes)
	}
	if res.Presigned < int(res.Issued) || res.SignedLive != 0 {
		t.Fatalf("pre-signed %d for %d issued, %d signed live", res.Presigned, res.Issued, res.SignedLive)
	}
	if len(res.Series.T) == 0 || len(res.Series.Executed) == 0 {
		t.Fatalf("series: %+v", res.Series)
	}
	t.Logf("closed loop, 4 clients: %.0f req/s, p50 %.1f ms, %.1f requests per block, %.1f messages and %.0f bytes per request",
		res.Throughput, res.Latency.P50, res.BatchMean, res.MessagesPerRequest, res.BytesPerRequest)
	if err := WritePlot(res, "test", filepath.Join(t.TempDir(), "p.png")); err != nil {
		t.Fatal(err)
	}

	// An open loop at 40 requests/s for 3 s, bounded at 100 requests: 100 issued.
	res, err = Measure(ctx, tg, Config{Load: LoadConfig{Mode: Open, Rate: 40, Clients: 16, Requests: 100,
		Duration: Duration(10 * time.Second), Seed: 4}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Issued != 100 || res.Acked+res.Failed != 100 || res.Failed != 0 {
		t.Fatalf("open loop: %d issued, %d accepted, %d failed", res.Issued, res.Acked, res.Failed)
	}
	if res.WindowMs < 2000 {
		t.Fatalf("100 requests at 40/s took %v ms", res.WindowMs)
	}

	// The same replicas, by folder and by API addresses: the processes are found.
	byDir, err := OpenTestnet(dir)
	if err != nil {
		t.Fatal(err)
	}
	var apis []string
	for _, nd := range byDir.Nodes {
		if nd.PID == 0 || nd.PID != tg.Nodes[nd.Replica].PID {
			t.Fatalf("by folder: %s has pid %d, want %d", nd.Name, nd.PID, tg.Nodes[nd.Replica].PID)
		}
		apis = append(apis, nd.API)
	}
	byAPI, err := FromAPIs(ctx, filepath.Join(dir, testnet.GenesisFile), []string{apis[2][len("http://"):], apis[0], apis[1], apis[3]}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, nd := range byAPI.Nodes {
		if nd.PID != tg.Nodes[nd.Replica].PID || nd.Name != tg.Nodes[nd.Replica].Name {
			t.Fatalf("by API: %+v, want pid %d", nd, tg.Nodes[nd.Replica].PID)
		}
	}
	if _, err := FromAPIs(ctx, filepath.Join(dir, testnet.GenesisFile), []string{apis[0], apis[0]}, nil); err == nil {
		t.Fatal("the same API twice accepted")
	}
}

// moduleDir is the module's root (tests run in the package folder).
func moduleDir() string {
	wd, _ := os.Getwd()
	return filepath.Dir(wd)
}
