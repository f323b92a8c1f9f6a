package node

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/p2pbft/p2pbft/node/config"
	"github.com/p2pbft/p2pbft/node/trace"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

func TestPeekViewSeq(t *testing.T) {
	for _, c := range []struct{ view, seq uint64 }{{0, 0}, {1, 23}, {24, 255}, {256, 65536}, {1 << 32, 1<<64 - 1}} {
		for _, payload := range []any{&pbft.PrePrepare{View: c.view, Seq: c.seq}, &pbft.Prepare{View: c.view, Seq: c.seq},
			&pbft.Commit{View: c.view, Seq: c.seq}} {
			b, err := wire.Marshal(payload)
			if err != nil {
				t.Fatal(err)
			}
			v, s, ok := peekViewSeq(b)
			if !ok || v != c.view || s != c.seq {
				t.Fatalf("%T%+v: got (%d, %d, %v)", payload, c, v, s, ok)
			}
		}
	}
	b, err := wire.Marshal(&pbft.NewView{View: 7, ViewChanges: []*wire.Envelope{}})
	if err != nil {
		t.Fatal(err)
	}
	if v, _, ok := peekViewSeq(b); !ok || v != 7 {
		t.Fatalf("new-view: view %d, %v", v, ok)
	}
	for _, bad := range [][]byte{nil, {0x83}, {0x01, 0x02}, {0x83, 0x1b, 0x01}, {0x83, 0x40}} {
		if _, _, ok := peekViewSeq(bad); ok {
			t.Fatalf("% x: read as a payload", bad)
		}
	}
}

// peekViewSeq reads (view, seq) from consensus payloads that arrive from peers, by hand: it must never
// panic, and whenever it reads a payload that decodes as a view-and-sequence message it must agree with the
// codec. For a canonically encoded message (what replicas send) it must read it.
func FuzzPeekViewSeq(f *testing.F) {
	for _, payload := range []any{&pbft.PrePrepare{View: 3, Seq: 70000}, &pbft.Prepare{View: 1 << 40, Seq: 24},
		&pbft.Commit{View: 255, Seq: 1<<64 - 1}, &pbft.NewView{View: 7, ViewChanges: []*wire.Envelope{}}} {
		b, err := wire.Marshal(payload)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x83, 0x1b, 0x01})
	f.Add([]byte{0x98, 0x03, 0x01, 0x02, 0x40})
	f.Fuzz(func(t *testing.T, b []byte) {
		view, seq, ok := peekViewSeq(b)
		var p pbft.Prepare
		if wire.Unmarshal(b, &p) != nil {
			return
		}
		if ok && (view != p.View || seq != p.Seq) {
			t.Fatalf("% x: peek (%d, %d), codec (%d, %d)", b, view, seq, p.View, p.Seq)
		}
		if again, err := wire.Marshal(&p); err == nil && bytes.Equal(again, b) && !ok {
			t.Fatalf("% x: a canonical prepare not read", b)
		}
	})
}

// histogramCount returns how many samples the phase histogram holds for p.
func histogramCount(t *testing.T, n *Node, p trace.Phase) uint64 {
	t.Helper()
	var m dto.Metric
	if err := n.metrics.phaseSeconds.WithLabelValues(string(p)).(interface{ Write(*dto.Metric) error }).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// Every replica records the life of committed slots: the primary's pre-prepare sent, the backups'
// received, votes from a quorum, the quorum moments, execution, durability and replies, in that order;
// and, after the primary stops, the view change up to the first commit in the new view.
func TestTraceRecords(t *testing.T) {
	c := newCluster(t, 4, func(cfg *config.Config) { cfg.P2P.Broadcast = config.BroadcastDirect })
	c.startAll()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := c.load(ctx, "a", 2, 3); err != nil {
		t.Fatal(err)
	}
	h := c.nodes[0].Status().Height
	c.waitHeight(h, 30*time.Second)
	for _, n := range c.running() {
		// The outbox records durability after the loop published the height: wait for the records.
		var full *trace.Slot
		waitFor(t, 10*time.Second, "a complete slot record", func() bool {
			slots, _ := n.Traces(0, 0)
			for i := range slots {
				s := &slots[i]
				if s.Requests > 0 && s.Durable != 0 && s.Replied != 0 && len(s.Commits) >= 3 {
					full = s
					return true
				}
			}
			return false
		})
		s := full
		if n.self == 0 && (s.PrePrepareSent == 0 || s.PrePrepareReceived != 0) {
			t.Errorf("primary: pre-prepare sent %d, received %d", s.PrePrepareSent, s.PrePrepareReceived)
		}
		if n.self != 0 && (s.PrePrepareReceived == 0 || s.PrePrepareFrom != 0) {
			t.Errorf("replica %d: pre-prepare received %d from %d", n.self, s.PrePrepareReceived, s.PrePrepareFrom)
		}
		if len(s.Prepares) < 2 || s.Bytes == 0 || s.Replies == 0 {
			t.Errorf("replica %d: slot %+v", n.self, *s)
		}
		order := []int64{s.PrePrepare(), s.Prepared, s.Committed, s.Executed, s.Durable, s.Replied}
		for i := 1; i < len(order); i++ {
			if order[i] < order[i-1] || order[i] == 0 {
				t.Fatalf("replica %d: phases out of order %v in %+v", n.self, order, *s)
			}
		}
		for _, p := range []trace.Phase{trace.PrePrepareToPrepared, trace.PreparedToCommitted, trace.CommittedToExecuted, trace.ExecutedToDurable, trace.DurableToReplied} {
			if histogramCount(t, n, p) == 0 {
				t.Errorf("replica %d: no sample of phase %s", n.self, p)
			}
		}
	}

	c.stop(0)
	if err := c.load(ctx, "b", 2, 2); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.running() {
		view := n.Status().View
		_, vcs := n.Traces(0, 0)
		var vc *trace.ViewChange
		for i := range vcs {
			if vcs[i].View == view {
				vc = &vcs[i]
			}
		}
		// A backup may enter the view on the NEW-VIEW before its own timer fired; the new primary has sent
		// one, and every replica has seen those of a quorum (a backup at the latest inside the NEW-VIEW).
		if vc == nil || (vc.Sent == 0 && n.Status().Primary == n.self) || len(vc.Received) < 2 || vc.NewView() == 0 ||
			vc.FirstCommit < vc.NewView() || vc.FirstCommitSeq == 0 {
			t.Fatalf("replica %d: view change to %d: %+v (all: %+v)", n.self, view, vc, vcs)
		}
		if (vc.NewViewSent != 0) != (n.Status().Primary == n.self) {
			t.Fatalf("replica %d: new-view sent %d, primary %d", n.self, vc.NewViewSent, n.Status().Primary)
		}
		if histogramCount(t, n, trace.ViewChangeToNewView) == 0 || histogramCount(t, n, trace.NewViewToFirstCommit) == 0 {
			t.Errorf("replica %d: no view change phase samples", n.self)
		}
	}
}

// With trace.enabled off a replica keeps no records and still commits.
func TestTraceDisabled(t *testing.T) {
	c := newCluster(t, 1, func(cfg *config.Config) { cfg.Trace.Enabled = false })
	c.startAll()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.load(ctx, "a", 1, 2); err != nil {
		t.Fatal(err)
	}
	if slots, vcs := c.nodes[0].Traces(0, 0); len(slots) != 0 || len(vcs) != 0 || c.nodes[0].TraceEnabled() {
		t.Fatalf("tracing off, yet %d slot and %d view change records", len(slots), len(vcs))
	}
}

// BenchmarkTraceSlot is the cost of tracing one slot at a backup of a 4-replica network, as the node pays
// it: the pre-prepare, 2 PREPAREs and 3 COMMITs received, its own PREPARE and COMMIT sent, both quorums,
// execution, durability and replies, each event with its payload peeked and the clock read. Divided by the
// requests per block, it is the records' CPU per request (compare with bench's "CPU per replica").
func BenchmarkTraceSlot(b *testing.B) {
	reg := prometheus.NewRegistry()
	m := &metrics{reg: reg}
	m.phaseSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "p", Help: "p"}, []string{"phase"})
	m.phases = map[trace.Phase]prometheus.Observer{}
	for _, p := range trace.Phases() {
		m.phases[p] = m.phaseSeconds.WithLabelValues(string(p))
	}
	self := make([]byte, 32)
	n := &Node{nodeIdentity: nodeIdentity{self: 1, pub: self}, components: components{tracer: newTracer(config.Default().Trace, m)}}
	env := func(kind wire.Kind, payload any) *wire.Envelope {
		p, err := wire.Marshal(payload)
		if err != nil {
			b.Fatal(err)
		}
		return &wire.Envelope{Kind: kind, Author: self, Payload: p, Body: make([]byte, 4096)}
	}
	const slots = 4096 // envelopes made ahead, reused round the ring
	type slotEnvs struct{ pp, prep, com *wire.Envelope }
	es := make([]slotEnvs, slots)
	for i := range es {
		seq := uint64(i + 1)
		es[i] = slotEnvs{env(wire.KindPrePrepare, &pbft.PrePrepare{Seq: seq}), env(wire.KindPrepare, &pbft.Prepare{Seq: seq}),
			env(wire.KindCommit, &pbft.Commit{Seq: seq})}
	}
	replies := make([]pbft.ReplyMessage, 32)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		e := es[i%slots]
		seq := uint64(i%slots + 1)
		n.traceStep(e.pp, 0, nil)
		n.traceStep(e.prep, 2, nil)
		n.traceSent(pbft.Message{To: pbft.Broadcast, Env: e.prep})
		n.traceStep(e.prep, 3, nil)
		traceQuorums(n.tracer, &pbft.Ready{Quorums: []pbft.QuorumEvent{{Seq: seq}}})
		n.traceSent(pbft.Message{To: pbft.Broadcast, Env: e.com})
		n.traceStep(e.com, 0, nil)
		n.traceStep(e.com, 2, nil)
		traceQuorums(n.tracer, &pbft.Ready{Quorums: []pbft.QuorumEvent{{Seq: seq, Committed: true}}})
		n.traceStep(e.com, 3, nil)
		n.tracer.Executed(0, seq, len(replies), time.Now().UnixNano())
		traceDurable(n.tracer, []outcome{{seq: seq}})
		for j := range replies {
			replies[j].Seq = seq
		}
		traceReplies(n.tracer, replies)
	}
}
