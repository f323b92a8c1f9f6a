package node

import (
	"flag"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/node/config"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

type tracer struct {
	mu sync.Mutex
	ev map[string]time.Time
}

func (tr *tracer) mark(k string) {
	tr.mu.Lock()
	if _, ok := tr.ev[k]; !ok {
		tr.ev[k] = time.Now()
	}
	tr.mu.Unlock()
}

func (tr *tracer) hooks(i int) *hooks {
	return &hooks{
		sent: func(m pbft.Message) {
			var seq uint64
			switch m.Env.Kind {
			case wire.KindPrePrepare:
				p, _ := pbft.DecodePrePrepare(m.Env.Payload)
				seq = p.Seq
			case wire.KindPrepare:
				p, _ := pbft.DecodePrepare(m.Env.Payload)
				seq = p.Seq
			case wire.KindCommit:
				p, _ := pbft.DecodeCommit(m.Env.Payload)
				seq = p.Seq
			default:
				return
			}
			tr.mark(fmt.Sprintf("%d/%s/%d", i, m.Env.Kind, seq))
		},
		executed: func(seq uint64) { tr.mark(fmt.Sprintf("%d/exec/%d", i, seq)) },
		stepped: func(e *wire.Envelope) {
			if e.Kind == wire.KindPrePrepare {
				p, _ := pbft.DecodePrePrepare(e.Payload)
				tr.mark(fmt.Sprintf("%d/recv-pp/%d", i, p.Seq))
			}
		},
	}
}

// BenchmarkClusterPhases is a diagnostic: it runs the same load as BenchmarkCluster (-phases.clients,
// -phases.fsync) and reports, as medians over the sequence numbers 10-199, where a batch's time goes: from the
// primary sending the pre-prepare to replica 1 handing it to its engine (pp->recv: transport and ingress),
// to replica 1 sending its prepare (pp->prep), its commit (prep->commit) and executing it (commit->exec),
// and from pre-prepare to execution at the primary (pp->exec0).
//
//	go test -run '^$' -bench ClusterPhases -benchtime 10000x ./node/
var (
	phasesClients = flag.Int("phases.clients", 1024, "BenchmarkClusterPhases: concurrent clients")
	phasesSync    = flag.Bool("phases.fsync", false, "BenchmarkClusterPhases: fsync the store")
)

func BenchmarkClusterPhases(b *testing.B) {
	tr := &tracer{ev: map[string]time.Time{}}
	var c *cluster
	mut := func(cfg *config.Config) {
		cfg.Consensus = benchConsensus()
		cfg.Store.Sync = *phasesSync
	}
	_ = c
	clients := *phasesClients
	cc := newCluster(b, 4, mut)
	for i := range 4 {
		cc.hooks[i] = tr.hooks(i)
	}
	c = cc
	c.startAll()
	per := (b.N + clients - 1) / clients
	reqs := make([][]*wire.Envelope, clients)
	for i := range reqs {
		cl := c.client(fmt.Sprint(i))
		for j := range per {
			reqs[i] = append(reqs[i], cl.request(putOp(b, fmt.Sprintf("key-%d-%d", i, j), "value")))
		}
	}
	b.ResetTimer()
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, req := range reqs[i] {
				if err := submitQuorum(b.Context(), c.nodes, req, pbft.QuorumsOf(len(c.nodes)).Weak()); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	var d0, d1, d2, d3, d4 []float64
	for seq := uint64(10); seq < 200; seq++ {
		pp, ok := tr.ev[fmt.Sprintf("0/pre-prepare/%d", seq)]
		p1, ok1 := tr.ev[fmt.Sprintf("1/prepare/%d", seq)]
		c1, ok2 := tr.ev[fmt.Sprintf("1/commit/%d", seq)]
		e1, ok3 := tr.ev[fmt.Sprintf("1/exec/%d", seq)]
		e0, ok4 := tr.ev[fmt.Sprintf("0/exec/%d", seq)]
		if !(ok && ok1 && ok2 && ok3 && ok4) {
			continue
		}
		if r1, ok := tr.ev[fmt.Sprintf("1/recv-pp/%d", seq)]; ok {
			d0 = append(d0, r1.Sub(pp).Seconds()*1000)
		}
		d1 = append(d1, p1.Sub(pp).Seconds()*1000)
		d2 = append(d2, c1.Sub(p1).Seconds()*1000)
		d3 = append(d3, e1.Sub(c1).Seconds()*1000)
		d4 = append(d4, e0.Sub(pp).Seconds()*1000)
	}
	med := func(x []float64) float64 {
		if len(x) == 0 {
			return -1
		}
		sort.Float64s(x)
		return x[len(x)/2]
	}
	b.ReportMetric(med(d0), "pp->recv-ms")
	b.ReportMetric(med(d1), "pp->prep-ms")
	b.ReportMetric(med(d2), "prep->commit-ms")
	b.ReportMetric(med(d3), "commit->exec-ms")
	b.ReportMetric(med(d4), "pp->exec0-ms")
	var gaps []float64
	var prev time.Time
	for seq := uint64(10); seq < 200; seq++ {
		pp, ok := tr.ev[fmt.Sprintf("0/pre-prepare/%d", seq)]
		if !ok {
			continue
		}
		if !prev.IsZero() {
			gaps = append(gaps, pp.Sub(prev).Seconds()*1000)
		}
		prev = pp
	}
	b.ReportMetric(med(gaps), "pp-gap-ms")
}
