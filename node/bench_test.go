package node

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	p2pclient "github.com/p2pbft/p2pbft/client"
	"github.com/p2pbft/p2pbft/node/config"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// BenchmarkCluster measures the commit throughput of four in-process replicas (real libp2p hosts on
// 127.0.0.1, real pebble stores with fsync) under b.N requests from many concurrent clients. Each client
// has one request outstanding (PBFT's rule), submits it to every replica (Submit, the in-process form of
// the client protocol) and moves on once f+1 replicas executed it. Requests are signed before the timer
// starts; the replicas verify every signature. clients=1 measures the commit latency of an idle network
// (one request at a time). Run it with a fixed count, for example
//
//	go test -run '^$' -bench Cluster -benchtime 20000x ./node/
//	go test -run '^$' -bench 'Cluster/fsync=true/clients=1/' -benchtime 1000x ./node/
var (
	clusterInFlight     = flag.Int("cluster.inflight", 0, "BenchmarkCluster: consensus.max_in_flight (0: the default)")
	clusterBatchTimeout = flag.Duration("cluster.batchtimeout", -1, "BenchmarkCluster: consensus.batch_timeout (-1: the default)")
	clusterBatchMax     = flag.Int("cluster.batchmax", 0, "BenchmarkCluster: consensus.batch_max_requests (0: the default)")
	clusterSendTo       = flag.String("cluster.sendto", "all", "BenchmarkCluster: replicas each request goes to: all, or client (the primary and f backups, as package client does)")
	clusterRate         = flag.Float64("cluster.rate", 0, "BenchmarkCluster: offered load in requests/s (open loop: a request's latency counts from its scheduled time, queueing included); 0: closed loop")
)

// benchConsensus is the default consensus configuration with the benchmark flags on top.
func benchConsensus() config.Consensus {
	cs := config.Default().Consensus
	if *clusterInFlight > 0 {
		cs.MaxInFlight = *clusterInFlight
	}
	if *clusterBatchTimeout >= 0 {
		cs.BatchTimeout = *clusterBatchTimeout
	}
	if *clusterBatchMax > 0 {
		cs.BatchMaxRequests = *clusterBatchMax
	}
	return cs
}

func BenchmarkCluster(b *testing.B) {
	for _, sync := range []bool{true, false} {
		for _, clients := range []int{1, 64, 256, 1024} {
			for _, path := range []string{config.BroadcastDirect, config.BroadcastGossip} {
				b.Run(fmt.Sprintf("fsync=%v/clients=%d/broadcast=%s", sync, clients, path), func(b *testing.B) {
					benchCluster(b, clients, func(cfg *config.Config) {
						cfg.P2P.Broadcast = path
						cfg.Consensus = benchConsensus()
						cfg.Store.Sync = sync
					})
				})
			}
		}
	}
}

func benchCluster(b *testing.B, clients int, mutate func(*config.Config)) {
	c := newCluster(b, 4, mutate)
	c.startAll()
	per := (b.N + clients - 1) / clients
	reqs := make([][]*wire.Envelope, clients)
	for i := range reqs {
		cl := c.client(fmt.Sprint(i))
		for j := range per {
			reqs[i] = append(reqs[i], cl.request(putOp(b, fmt.Sprintf("key-%d-%d", i, j), "value-of-some-length")))
		}
	}
	weak := pbft.QuorumsOf(c.genesis.N()).Weak()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	lat := make([][]time.Duration, clients)
	cpu0 := cpuTime()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	// Open loop: a dispatcher schedules request k at start + k/rate; a free client takes the next
	// scheduled time (a client has one request outstanding, PBFT's rule), and the latency runs from the
	// scheduled time, so time spent waiting for a free client counts.
	var slots chan time.Time
	if *clusterRate > 0 {
		slots = make(chan time.Time, clients*per)
		go func() {
			interval := time.Duration(float64(time.Second) / *clusterRate)
			for k := range clients * per {
				at := start.Add(time.Duration(k) * interval)
				if d := time.Until(at); d > 0 {
					time.Sleep(d)
				}
				slots <- at
			}
		}()
	}
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, req := range reqs[i] {
				t0 := time.Now()
				if slots != nil {
					t0 = <-slots
				}
				targets := c.nodes
				if *clusterSendTo == "client" {
					p := c.nodes[0].Status().Primary
					targets = []*Node{c.nodes[p], c.nodes[(p+1+i%(len(c.nodes)-1))%len(c.nodes)]}
				}
				if err := submitQuorum(ctx, targets, req, weak); err != nil {
					b.Error(err)
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	// CPU time is what the measurement is worth on a shared machine: wall-clock rates depend on what else
	// runs, CPU per request does much less. It covers the whole process: four replicas and the clients.
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(clients*per), "cpu-us/req")
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	if len(all) > 0 {
		b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	}
	total := clients * per
	b.ReportMetric(float64(total)/el.Seconds(), "req/s")
	n0 := c.nodes[0]
	if blocks := counterValue(n0.metrics.blocks); blocks > 0 {
		b.ReportMetric(counterValue(n0.metrics.requests)/blocks, "req/block")
	}
	b.ReportMetric(float64(n0.vstats.verified.Load())/float64(total), "verifies/req")
	b.ReportMetric(float64(n0.Status().View), "final-view")
	if v := n0.vstats.verified.Load(); v > 0 {
		b.ReportMetric(float64(n0.vstats.batched.Load())/float64(v), "batched-frac")
	}
	for name, h := range map[string]prometheus.Histogram{"persist-ms": n0.metrics.persistSeconds, "exec-ms": n0.metrics.executeSeconds} {
		var m dto.Metric
		if h.Write(&m) == nil && m.GetHistogram().GetSampleCount() > 0 {
			hm := m.GetHistogram()
			b.ReportMetric(1000*hm.GetSampleSum()/float64(hm.GetSampleCount()), name)
			b.ReportMetric(float64(hm.GetSampleCount())/el.Seconds(), name[:len(name)-3]+"/s")
		}
	}
}

// cpuTime returns the process's user plus system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// submitQuorum submits req to every replica and returns once `need` of them executed it.
func submitQuorum(ctx context.Context, nodes []*Node, req *wire.Envelope, need int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, len(nodes))
	for _, n := range nodes {
		go func() {
			_, err := n.Submit(ctx, req)
			done <- err
		}()
	}
	ok, failed := 0, 0
	var last error
	for range nodes {
		if err := <-done; err != nil {
			failed++
			last = err
		} else {
			ok++
		}
		if ok >= need {
			return nil
		}
		if failed > len(nodes)-need {
			return last
		}
	}
	return last
}

// BenchmarkClusterLinks measures the whole request path as a deployment runs it, in one process so that
// one CPU profile shows all of it: four in-process replicas (real libp2p on 127.0.0.1, pebble with fsync)
// and one client.Client of `clients` sessions, whose requests go over its links to the primary and whose
// replies come back in bundles from every replica (f+1 matching accepted). Requests are signed before the
// timer starts. cpu-us/req covers the whole process: four replicas and the client.
//
//	go test -run '^$' -bench 'ClusterLinks/clients=512' -benchtime 30000x -cpuprofile cpu.out ./node/
func BenchmarkClusterLinks(b *testing.B) {
	for _, clients := range []int{1, 64, 512} {
		for _, path := range []string{config.BroadcastDirect, config.BroadcastGossip} {
			b.Run(fmt.Sprintf("clients=%d/broadcast=%s", clients, path), func(b *testing.B) {
				benchClusterLinks(b, clients, func(cfg *config.Config) {
					cfg.P2P.Broadcast = path
					cfg.Consensus = benchConsensus()
				})
			})
		}
	}
}

func benchClusterLinks(b *testing.B, clients int, mutate func(*config.Config)) {
	c := newCluster(b, 4, mutate)
	c.startAll()
	c.waitConnected(30 * time.Second)
	var boot []string
	for _, n := range c.nodes {
		boot = append(boot, n.host.Addrs()[0].String())
	}
	cl, err := p2pclient.New(p2pclient.Config{Key: testKey(b, b.Name()+"-client"), Genesis: c.genesis, Bootstrap: boot,
		Sessions: clients, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := cl.WaitConnected(ctx, 4); err != nil {
		b.Fatal(err)
	}
	per := (b.N + clients - 1) / clients
	type signed struct {
		env *wire.Envelope
		ts  uint64
	}
	reqs := make([][]signed, clients)
	for i := range reqs {
		s := cl.Session(i)
		for j := range per {
			env, ts, err := s.NewRequest(testChain, putOp(b, fmt.Sprintf("key-%d-%d", i, j), "value-of-some-length"))
			if err != nil {
				b.Fatal(err)
			}
			reqs[i] = append(reqs[i], signed{env, ts})
		}
	}
	lat := make([][]time.Duration, clients)
	cpu0 := cpuTime()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, r := range reqs[i] {
				t0 := time.Now()
				if _, err := cl.DoSigned(ctx, i, r.env, r.ts); err != nil {
					b.Error(err)
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	total := clients * per
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(total), "cpu-us/req")
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	if len(all) > 0 {
		b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	}
	b.ReportMetric(float64(total)/el.Seconds(), "req/s")
	n0 := c.nodes[0]
	if blocks := counterValue(n0.metrics.blocks); blocks > 0 {
		b.ReportMetric(counterValue(n0.metrics.requests)/blocks, "req/block")
	}
	st := cl.Stats()
	b.ReportMetric(float64(st.Broadcasts)/float64(total), "broadcasts/req")
}
