package p2p

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/wire"
)

// The multicast benchmarks run 4 hosts in one process on 127.0.0.1, every host publishing (all-to-all,
// the PBFT prepare/commit pattern). One benchmark op is one multicast delivered to the 3 other hosts.
// Each publisher keeps at most w multicasts in flight (not yet delivered everywhere), as the engine bounds
// its window. Every message is signed with ed25519 by its publisher and verified by each
// receiver, as in production.
//
// Reported metrics:
//
//	msgs/s          multicasts per second, each delivered to all 3 other hosts
//	deliveries/s    3 x msgs/s
//	p50-ms, p99-ms  publish-to-deliver latency over all deliveries
//	cpu-us/delivery process CPU time (user+system, all 4 hosts) per delivery
//	dups/delivery   gossip copies dropped as duplicates per delivery (overlay redundancy)
//	drops           messages lost to full queues (must be 0)
//
// Run (the figures in docs/design/measured-limits.md came from this command):
//
//	go test -run - -bench 'Multicast|BroadcastDirect' -benchtime 3s ./p2p/
const benchHosts = 4

// Windows: 1 measures latency at low load (one multicast per publisher in flight); 16 measures
// throughput (the queues stay busy, and latency includes queueing).
var benchWindows = []int{1, 16}

var benchSizes = []int{256, 4 << 10, 256 << 10}

func sizeName(n int) string {
	if n >= 1<<10 {
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

func BenchmarkMulticast(b *testing.B) {
	for _, v := range []struct {
		mode string
		sign bool
	}{{ModeDirect, false}, {ModeDirect, true}, {ModeMesh, false}} {
		policy := "StrictNoSign"
		if v.sign {
			policy = "StrictSign"
		}
		for _, size := range benchSizes {
			for _, w := range benchWindows {
				b.Run(fmt.Sprintf("%s/%s/%s/w=%d", v.mode, policy, sizeName(size), w), func(b *testing.B) {
					benchSpread(b, size, w, false, func(c *Config) {
						c.Dissemination.Mode = v.mode
						c.Dissemination.PubsubSigning = v.sign
					})
				})
			}
		}
	}
}

// BenchmarkBroadcastDirect is the same load over direct streams (BroadcastDirect) instead of gossip.
func BenchmarkBroadcastDirect(b *testing.B) {
	for _, size := range benchSizes {
		for _, w := range benchWindows {
			b.Run(fmt.Sprintf("%s/w=%d", sizeName(size), w), func(b *testing.B) { benchSpread(b, size, w, true, nil) })
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchSpread(b *testing.B, size, window int, direct bool, mutate func(*Config)) {
	keys := testKeys(b, "bench", benchHosts)
	g := testGenesis(b, "bench-chain", keys)
	hosts := make([]*Host, benchHosts)
	for i, k := range keys {
		cfg := baseConfig(b, k, g)
		if i > 0 {
			cfg.Bootstrap = []string{hosts[0].Addrs()[0].String()}
		}
		if mutate != nil {
			mutate(&cfg)
		}
		h, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		hosts[i] = h
	}
	defer func() {
		for _, h := range hosts {
			h.Close()
		}
	}()
	waitMesh(b, hosts, 30*time.Second)

	n := b.N
	delivered := make([]atomic.Int32, n)
	credits := make([]chan struct{}, benchHosts)
	for i := range credits {
		credits[i] = make(chan struct{}, window)
		for j := 0; j < window; j++ {
			credits[i] <- struct{}{}
		}
	}
	var remaining atomic.Int64
	remaining.Store(int64(n * (benchHosts - 1)))
	allDone := make(chan struct{})
	lat := make([][]time.Duration, benchHosts)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i, h := range hosts {
		lat[i] = make([]time.Duration, 0, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case d := <-h.Deliveries():
					now := time.Now().UnixNano()
					p := d.Envelope.Payload
					sent := int64(binary.BigEndian.Uint64(p[0:8]))
					idx := int(binary.BigEndian.Uint64(p[8:16]))
					lat[i] = append(lat[i], time.Duration(now-sent))
					if delivered[idx].Add(1) == benchHosts-1 {
						credits[idx%benchHosts] <- struct{}{}
					}
					if remaining.Add(-1) == 0 {
						close(allDone)
					}
				case <-ctx.Done():
					return
				}
			}
		}()
	}

	payloadFiller := make([]byte, size)
	cpu0 := cpuTime()
	b.ResetTimer()
	start := time.Now()
	var pubErr atomic.Value
	var pwg sync.WaitGroup
	for p := 0; p < benchHosts; p++ {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			for idx := p; idx < n; idx += benchHosts {
				select {
				case <-credits[p]:
				case <-time.After(30 * time.Second):
					pubErr.Store(fmt.Errorf("publisher %d: window never reopened (lost messages?) stats %+v", p, hosts[p].Stats().Drops))
					return
				}
				payload := make([]byte, size)
				copy(payload, payloadFiller)
				binary.BigEndian.PutUint64(payload[8:16], uint64(idx))
				binary.BigEndian.PutUint64(payload[0:8], uint64(time.Now().UnixNano()))
				e, err := wire.Seal(keys[p], g.ChainID(), wire.KindPrepare, payload)
				if err != nil {
					pubErr.Store(err)
					return
				}
				if direct {
					err = hosts[p].BroadcastDirect(e)
				} else {
					err = hosts[p].Multicast(ctx, e)
				}
				if err != nil {
					pubErr.Store(err)
					return
				}
			}
		}()
	}
	pwg.Wait()
	if err, _ := pubErr.Load().(error); err != nil {
		b.Fatal(err)
	}
	select {
	case <-allDone:
	case <-time.After(60 * time.Second):
		b.Fatalf("%d deliveries missing after 60s", remaining.Load())
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cpu := cpuTime() - cpu0
	cancel()
	wg.Wait()

	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	pct := func(q float64) float64 {
		return float64(all[min(len(all)-1, int(q*float64(len(all))))].Microseconds()) / 1000
	}
	var dups, drops uint64
	for _, h := range hosts {
		s := h.Stats()
		dups += s.Duplicates
		for _, v := range s.Drops {
			drops += v
		}
	}
	deliveries := float64(n * (benchHosts - 1))
	b.ReportMetric(float64(n)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(deliveries/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(cpu.Microseconds())/deliveries, "cpu-us/delivery")
	b.ReportMetric(float64(dups)/deliveries, "dups/delivery")
	b.ReportMetric(float64(drops), "drops")
	b.ReportMetric(0, "ns/op") // wall time per op is msgs/s's inverse; hide the misleading default
}
