package node

import (
	"bytes"
	"errors"
	"time"

	"github.com/p2pbft/p2pbft/node/config"
	"github.com/p2pbft/p2pbft/node/trace"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// Tracing (package node/trace) records the life of each slot from what the node, as the engine's driver,
// sees anyway: the messages it hands to the engine (step) and to the network (send), the
// quorums the engine reports (pbft.Ready.Quorums), the blocks it executes and makes durable, and the replies
// it hands out. The engine stays pure and unaware of it. Every record takes the wall clock, so that the
// records of different replicas line up in one timeline (p2pbft trace). Votes the engine takes from inside
// other messages (a FETCH-REPLY repairing a slot) are not seen by the driver and not recorded; the quorum
// moments are, whatever brought the votes.

// newTracer returns the replica's recorder, or nil when tracing is off (every recording call is then a nil
// check). Phases go to p2pbft_consensus_phase_seconds.
func newTracer(cfg config.Trace, m *metrics) *trace.Recorder {
	if !cfg.Enabled {
		return nil
	}
	return trace.New(trace.Options{Slots: cfg.Slots, ViewChanges: cfg.ViewChanges,
		Observe: func(p trace.Phase, d time.Duration) { m.phase(p, d) }})
}

// Traces returns this replica's slot records (see trace.Recorder.Slots for from and limit) and view change
// records; both are empty when tracing is off (config trace.enabled).
func (n *Node) Traces(from uint64, limit int) ([]trace.Slot, []trace.ViewChange) {
	return n.tracer.Slots(from, limit), n.tracer.ViewChanges()
}

// TraceEnabled reports whether this replica keeps trace records.
func (n *Node) TraceEnabled() bool { return n.tracer != nil }

// traceStep records a message from replica from that the engine took (err, its verdict, is nil) or that
// came after its slot committed here (a late vote: it shows which replica lagged). Other messages the engine
// refused are not recorded: they may name any slot, and must not push real records out of the ring.
func (n *Node) traceStep(e *wire.Envelope, from int, err error) {
	if n.tracer == nil {
		return
	}
	if err != nil {
		var se *pbft.StepError
		if !errors.As(err, &se) || se.Reason != pbft.ReasonAlreadyDone {
			return
		}
	}
	view, seq, ok := peekViewSeq(e.Payload)
	if !ok {
		return
	}
	at := time.Now().UnixNano()
	switch e.Kind {
	case wire.KindPrePrepare:
		n.tracer.PrePrepareReceived(view, seq, from, len(e.Body), at)
	case wire.KindPrepare:
		n.tracer.Prepare(view, seq, from, at)
	case wire.KindCommit:
		n.tracer.Commit(view, seq, from, at)
	case wire.KindViewChange:
		n.tracer.ViewChangeReceived(view, from, at)
	case wire.KindNewView:
		n.tracer.NewViewReceived(view, at)
		n.traceNewViewSlots(e, from, at, false)
	}
}

// traceNewViewSlots records the pre-prepares a NEW-VIEW carries (the slots the new primary re-proposes) as
// sent by the primary or received from it at time at; at a backup, the VIEW-CHANGEs it carries count as
// received then, unless they arrived on their own before. View changes are rare: decoding the NEW-VIEW
// again here costs nothing that matters.
func (n *Node) traceNewViewSlots(e *wire.Envelope, primary int, at int64, sent bool) {
	nv, err := pbft.DecodeNewView(e.Payload)
	if err != nil {
		return
	}
	if !sent {
		for _, vc := range nv.ViewChanges {
			if from, ok := n.genesis.IndexOfKey(vc.Author); ok && from != n.self {
				n.tracer.ViewChangeReceived(nv.View, from, at)
			}
		}
	}
	for _, pp := range nv.PrePrepares {
		view, seq, ok := peekViewSeq(pp.Payload)
		if !ok {
			continue
		}
		if sent {
			n.tracer.PrePrepareSent(view, seq, 0, at)
		} else {
			n.tracer.PrePrepareReceived(view, seq, primary, 0, at)
		}
	}
}

// traceSent records a message of this replica's own leaving it. A retransmission records nothing new (the
// first sending counts), nor does another replica's message this one passes on (a NEW-VIEW or pre-prepare
// resent to a replica that missed it).
func (n *Node) traceSent(m pbft.Message) {
	if n.tracer == nil {
		return
	}
	e := m.Env
	switch e.Kind {
	case wire.KindPrePrepare, wire.KindPrepare, wire.KindCommit, wire.KindViewChange, wire.KindNewView:
	default:
		return
	}
	if !bytes.Equal(e.Author, n.pub) {
		return
	}
	view, seq, ok := peekViewSeq(e.Payload)
	if !ok {
		return
	}
	at := time.Now().UnixNano()
	switch e.Kind {
	case wire.KindPrePrepare:
		// Pre-prepares a NEW-VIEW carries travel inside it, not alone; one sent alone carries its batch.
		n.tracer.PrePrepareSent(view, seq, len(e.Body), at)
	case wire.KindPrepare:
		n.tracer.Prepare(view, seq, n.self, at)
	case wire.KindCommit:
		n.tracer.Commit(view, seq, n.self, at)
	case wire.KindViewChange:
		n.tracer.ViewChangeSent(view, at)
	case wire.KindNewView:
		n.tracer.NewViewSent(view, at)
		n.traceNewViewSlots(e, n.self, at, true)
	}
}

// traceQuorums records the quorums the engine reached while producing rd.
func traceQuorums(tr *trace.Recorder, rd *pbft.Ready) {
	if tr == nil || len(rd.Quorums) == 0 {
		return
	}
	at := time.Now().UnixNano()
	for _, q := range rd.Quorums {
		if q.Committed {
			tr.Committed(q.View, q.Seq, at)
		} else {
			tr.Prepared(q.View, q.Seq, at)
		}
	}
}

// traceReplies records replies handed to the clients' connections. They come grouped by block: each run of
// one block's replies counts once.
func traceReplies(tr *trace.Recorder, rs []pbft.ReplyMessage) {
	if tr == nil {
		return
	}
	at := time.Now().UnixNano()
	var seq uint64
	count := 0
	for _, r := range rs {
		if r.Seq != seq && count > 0 {
			tr.Replied(seq, count, at)
			count = 0
		}
		seq = r.Seq
		if seq != 0 { // 0: a reply resent to a repeated request
			count++
		}
	}
	if count > 0 {
		tr.Replied(seq, count, at)
	}
}

// traceDurable records executed blocks whose store batch is synced.
func traceDurable(tr *trace.Recorder, outs []outcome) {
	if tr == nil || len(outs) == 0 {
		return
	}
	at := time.Now().UnixNano()
	for _, o := range outs {
		if !o.replayed {
			tr.Durable(o.view, o.seq, at)
		}
	}
}

// peekViewSeq reads the first fields of a consensus payload without decoding it: PRE-PREPARE, PREPARE and
// COMMIT start with the view and the sequence number, VIEW-CHANGE and NEW-VIEW with the view (for them seq
// is meaningless). Payloads are CBOR arrays with unsigned integers first (wire.Marshal); anything else
// reports !ok. The engine has checked the payload already; this only avoids decoding it a second time.
func peekViewSeq(p []byte) (view, seq uint64, ok bool) {
	// Major type 4 (array) with its length in the first byte: the consensus payloads have a few fields.
	if len(p) < 2 || p[0]>>5 != 4 || p[0]&0x1f >= 24 {
		return 0, 0, false
	}
	view, p, ok = cborUint(p[1:])
	if !ok {
		return 0, 0, false
	}
	seq, _, _ = cborUint(p)
	return view, seq, true
}

// cborUint reads one CBOR unsigned integer (major type 0) from the start of p and returns the rest.
func cborUint(p []byte) (uint64, []byte, bool) {
	if len(p) == 0 || p[0]>>5 != 0 {
		return 0, p, false
	}
	info := p[0] & 0x1f
	if info < 24 {
		return uint64(info), p[1:], true
	}
	size := 0
	switch info {
	case 24:
		size = 1
	case 25:
		size = 2
	case 26:
		size = 4
	case 27:
		size = 8
	default:
		return 0, p, false
	}
	if len(p) < 1+size {
		return 0, p, false
	}
	var v uint64
	for _, b := range p[1 : 1+size] {
		v = v<<8 | uint64(b)
	}
	return v, p[1+size:], true
}
