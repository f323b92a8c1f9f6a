package testnet

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/internal/netlab"
	"github.com/p2pbft/p2pbft/node/api/apitypes"
	"github.com/p2pbft/p2pbft/node/config"
	"github.com/p2pbft/p2pbft/p2p"
)

// Load from another host. Every replica runs on a host of its own and the client on another: network
// namespaces with their own addresses (internal/netlab), so that the client's connections reach the
// replicas from a real address, not from 127.0.0.1, which libp2p exempts from every per-address limit.

var remoteTx = flag.Int("remote-tx", 200, "TestRemoteHost/tx: how many `p2pbft tx` processes run one after the other")

// remotePort is where replicas listen on their hosts: nothing else runs there.
const remotePort = config.DefaultP2PPort

// newRemoteNet starts a testnet with replica i on hosts[i], listening on that host's address only (the
// genesis lists those addresses, the HTTP API serves on them too).
func newRemoteNet(t *testing.T, hosts []*netlab.Host, configure func(i int, c *config.Config)) *Network {
	t.Helper()
	addrs := make([]string, len(hosts))
	for i, h := range hosts {
		addrs[i] = h.Addr.String()
	}
	net, err := Create(Config{Dir: t.TempDir(), N: len(hosts), ChainID: "remote", Hosts: addrs, BasePort: remotePort,
		Configure: func(i int, c *config.Config) {
			testConfig(i, c)
			if configure != nil {
				configure(i, c)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	net.SetProcessOptions(ProcessOptions{Binary: p2pbftBinary, StopTimeout: 20 * time.Second, ReadyTimeout: 60 * time.Second,
		Command: func(i int, name string, arg ...string) *exec.Cmd { return hosts[i].Command(name, arg...) }})
	t.Cleanup(func() {
		if err := net.Close(); err != nil {
			t.Errorf("stop the replicas: %v", err)
		}
		if t.Failed() {
			for i := range net.N() {
				t.Logf("--- %s (last lines of %s) ---\n%s", net.Nodes()[i].Name, net.LogPath(i), net.LogTail(i, 40))
			}
		}
	})
	if err := net.Start(ctxFor(t, 90*time.Second)); err != nil {
		t.Fatal(err)
	}
	for i, ni := range net.Nodes() {
		if !strings.HasPrefix(ni.Addr, "/ip4/"+addrs[i]+"/") || !strings.HasPrefix(ni.API, addrs[i]+":") {
			t.Fatalf("%s is at %s, API %s: want its host's address %s", ni.Name, ni.Addr, ni.API, addrs[i])
		}
	}
	ctx := ctxFor(t, 60*time.Second)
	err = WaitFor(ctx, "every replica connected to the others", 50*time.Millisecond, func() error {
		for i := range net.N() {
			st, err := net.Status(ctx, i)
			if err != nil {
				return err
			}
			if len(st.Peers) != net.N()-1 {
				return fmt.Errorf("%s has %d peers", net.Nodes()[i].Name, len(st.Peers))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return net
}

// refused returns the connections replica i refused under a limit (p2pbft_p2p_refused_connections_total,
// both directions), by limit; limits that refused none (the series are exported from zero) are left out.
func refused(t *testing.T, net *Network, i int) map[string]float64 {
	t.Helper()
	b, _, err := net.get(ctxFor(t, 10*time.Second), i, "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, "p2pbft_p2p_refused_connections_total{")
		if !ok {
			continue
		}
		_, after, _ := strings.Cut(rest, `limit="`)
		limit, _, _ := strings.Cut(after, `"`)
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err == nil && v != 0 {
			out[limit] += v
		}
	}
	return out
}

// txLoop runs up to count `p2pbft tx put` processes one after the other on the client host, each a
// new libp2p host (a new connection to every replica), and stops at the first failure if stopAtFailure.
// It returns how many succeeded, the first failure's output, and each success's wall time.
func txLoop(t *testing.T, net *Network, client *netlab.Host, count int, timeout time.Duration, stopAtFailure bool, total time.Duration) (ok int, failure string, times []time.Duration) {
	t.Helper()
	ctx := ctxFor(t, total)
	for k := range count {
		pctx, cancel := context.WithTimeout(ctx, timeout+10*time.Second)
		start := time.Now()
		cmd := client.CommandContext(pctx, p2pbftBinary, "tx", "--home", net.ClientHome(), "--timeout", timeout.String(),
			"put", fmt.Sprintf("remote-%d", k), fmt.Sprintf("v%d", k))
		out, err := cmd.CombinedOutput()
		cancel()
		if err == nil {
			ok++
			times = append(times, time.Since(start))
			continue
		}
		if failure == "" {
			failure = fmt.Sprintf("tx %d of %d: %v\n%s", k+1, count, err, out)
		}
		if stopAtFailure || ctx.Err() != nil {
			break
		}
	}
	return ok, failure, times
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

// benchResult is the part of bench.Result (`p2pbft bench --json`) the tests read (package bench imports
// this one).
type benchResult struct {
	Issued     int64   `json:"issued"`
	Acked      int64   `json:"acked"`
	Failed     int64   `json:"failed"`
	Throughput float64 `json:"throughput"`
	Latency    struct {
		P50 float64 `json:"p50"`
		P99 float64 `json:"p99"`
	} `json:"latency_ms"`
}

// Replicas on four hosts, load from a fifth, with the default connection limits: `p2pbft bench` with 512
// clients (64 libp2p hosts, 64 connections to every replica from one address) runs with no connection
// refused and no request failed, and consecutive `p2pbft tx` processes (a new connection each) all
// succeed. Both failed with libp2p's own per-IP limits (see TestRemoteHostLibp2pDefaultLimits).
func TestRemoteHost(t *testing.T) {
	needE2E(t)
	lab := netlab.ForTest(t, netlab.Config{Hosts: []string{"r0", "r1", "r2", "r3", "client"}})
	hosts := lab.Hosts()
	client := lab.Host("client")
	net := newRemoteNet(t, hosts[:4], nil)

	t.Run("bench", func(t *testing.T) {
		apis := []string{}
		for _, ni := range net.Nodes() {
			apis = append(apis, "--api", ni.API)
		}
		args := append([]string{"bench"}, apis...)
		args = append(args, "--genesis", filepath.Join(net.Dir(), GenesisFile), "--clients", "512",
			"--duration", "5s", "--requests", "20000", "--warmup", "1s", "--json", "--progress=false")
		outDir := filepath.Join(t.TempDir(), "result")
		args = append(args, "--out", outDir)
		start := time.Now()
		cmd := client.CommandContext(ctxFor(t, 2*time.Minute), p2pbftBinary, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("bench from %s: %v\n%s", client.Addr, err, stderr.String())
		}
		var res benchResult
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("bench output: %v\n%s", err, out)
		}
		t.Logf("bench from %s with 512 clients: %d issued, %d accepted, %d failed; %.0f req/s accepted in the window, p50 %.1f ms p99 %.1f ms (%s in all)",
			client.Addr, res.Issued, res.Acked, res.Failed, res.Throughput, res.Latency.P50, res.Latency.P99, time.Since(start).Round(time.Millisecond))
		if res.Acked == 0 || res.Failed != 0 || res.Throughput <= 0 {
			t.Fatalf("bench: %d accepted, %d failed, %.0f req/s", res.Acked, res.Failed, res.Throughput)
		}
		for i := range net.N() {
			if r := refused(t, net, i); len(r) > 0 {
				t.Errorf("%s refused connections: %v", net.Nodes()[i].Name, r)
			}
		}
		// The result folder holds the replicas' trace records of the run, from all four.
		b, err := os.ReadFile(filepath.Join(outDir, "trace.json"))
		if err != nil {
			t.Fatalf("bench --out: %v", err)
		}
		var tr struct {
			Sources []struct{ Error string }
			Slots   []struct{ Replicas []struct{ Committed int64 } }
		}
		if err := json.Unmarshal(b, &tr); err != nil || len(tr.Sources) != 4 || len(tr.Slots) == 0 {
			t.Fatalf("trace.json: %v: %d sources, %d slots", err, len(tr.Sources), len(tr.Slots))
		}
		for _, s := range tr.Sources {
			if s.Error != "" {
				t.Errorf("trace.json: a replica did not answer: %s", s.Error)
			}
		}
		for _, f := range []string{"result.json", "plot.png", "trace.txt", "trace.png", "phases.png"} {
			if _, err := os.Stat(filepath.Join(outDir, f)); err != nil {
				t.Errorf("bench --out: %v", err)
			}
		}
	})

	t.Run("tx", func(t *testing.T) {
		count := *remoteTx
		start := time.Now()
		ok, failure, times := txLoop(t, net, client, count, 20*time.Second, false, time.Duration(count)*time.Second+time.Minute)
		elapsed := time.Since(start)
		t.Logf("%d of %d consecutive `p2pbft tx put` processes from %s succeeded in %s (each: p50 %s, p90 %s, max %s)",
			ok, count, client.Addr, elapsed.Round(time.Millisecond), percentile(times, 0.5).Round(time.Millisecond),
			percentile(times, 0.9).Round(time.Millisecond), percentile(times, 1).Round(time.Millisecond))
		if ok != count {
			t.Fatalf("%d of %d tx processes failed; first: %s", count-ok, count, failure)
		}
		// The last write is in the replicas' state.
		ctx := ctxFor(t, 10*time.Second)
		b, _, err := net.get(ctx, 3, "/v1/kv/"+url.PathEscape(fmt.Sprintf("remote-%d", count-1)))
		var kr apitypes.KVResponse
		if err == nil {
			err = json.Unmarshal(b, &kr)
		}
		if err != nil || kr.Value != fmt.Sprintf("v%d", count-1) {
			t.Fatalf("last write: %q, %v", kr.Value, err)
		}
		for i := range net.N() {
			if r := refused(t, net, i); len(r) > 0 {
				t.Errorf("%s refused connections: %v", net.Nodes()[i].Name, r)
			}
		}
	})
}

// The failure the connection settings fix, reproduced: with libp2p's own per-IP limits (8 connections
// at once, 0.2 new per second after a burst of 16, which the host applied before it had settings for
// them), consecutive `p2pbft tx` processes from another host fail once the burst is spent: every replica
// refuses their connections (a process that waits long enough gets one of the replicas' few new places
// every 5 seconds, so each is given 3 s, 20 times what one takes when admitted), and the replicas count
// the refusals under conn_rate_per_ip.
func TestRemoteHostLibp2pDefaultLimits(t *testing.T) {
	needE2E(t)
	lab := netlab.ForTest(t, netlab.Config{Hosts: []string{"r0", "r1", "r2", "r3", "client"}})
	hosts := lab.Hosts()
	net := newRemoteNet(t, hosts[:4], func(_ int, c *config.Config) {
		c.P2P.ConnsPerIP, c.P2P.ConnRatePerIP, c.P2P.ConnBurstPerIP = 8, 0.2, 16
	})
	const attempts = 40
	ok, failure, _ := txLoop(t, net, lab.Host("client"), attempts, 3*time.Second, true, 3*time.Minute)
	if failure == "" {
		t.Fatalf("all %d tx processes succeeded under libp2p's default per-IP limits: the reproduction no longer reproduces", attempts)
	}
	t.Logf("under libp2p's default limits, tx %d failed after %d successes: %s", ok+1, ok, strings.TrimSpace(failure))
	if ok < 8 || ok > 30 {
		t.Errorf("%d tx processes succeeded before the first failure: want about the burst of 16", ok)
	}
	var total float64
	for i := range net.N() {
		r := refused(t, net, i)
		total += r[p2p.LimitConnRate]
		t.Logf("%s refused: %v", net.Nodes()[i].Name, r)
	}
	if total == 0 {
		t.Fatal("no replica counted a refusal under conn_rate_per_ip")
	}
	if !strings.Contains(net.LogTail(0, 400), "limit="+p2p.LimitConnRate) {
		t.Errorf("%s's log does not name the limit that refused", net.Nodes()[0].Name)
	}
}
