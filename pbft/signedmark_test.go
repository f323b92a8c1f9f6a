package pbft

import (
	"testing"

	"github.com/p2pbft/p2pbft/wire"
)

// amnesiaNet: replica 2 prepares request "a" at (view 0, seq 1) while its prepare is lost on the way, then
// loses its whole state (a wiped or truncated store) and restarts with the given signed mark. It returns the
// network with the queue empty and a pre-prepare of another batch for (0, 1), as a faulty primary would send.
func amnesiaNet(t *testing.T, mark Mark) (*tnet, *wire.Envelope) {
	marks := map[int]Mark{}
	tn := newNet(t, 4, func(c *Config) {
		for i, k := range c.Replicas {
			if string(k) == string(c.Signer.PublicKey()) {
				c.SignedMark = marks[i]
			}
		}
	})
	tn.filter = func(m tmsg) bool { return m.env.Kind == wire.KindPrePrepare }
	_ = tn.propose(0, tn.request(1, 1, "a"))
	tn.run()
	if s := tn.reps[2].slots[1]; s == nil || !s.sentPrepare {
		t.Fatal("replica 2 sent no prepare")
	}
	tn.down[2] = true
	tn.stores[2], tn.apps[2] = &tstore{}, newTapp()
	marks[2] = mark
	tn.restart(2)
	tn.queue = nil
	other := tn.request(2, 1, "b")
	body, _ := EncodeBatch([]*wire.Envelope{other})
	pp := tn.sign(0, wire.KindPrePrepare, &PrePrepare{View: 0, Seq: 1, Digest: BatchDigest([]wire.Digest{other.ID()})})
	pp.Body = body
	return tn, pp
}

// sentBy returns the queued messages of kind from replica i.
func sentBy(tn *tnet, i int, kind wire.Kind) []tmsg {
	var out []tmsg
	for _, m := range tn.queue {
		if m.from == i && m.env.Kind == kind {
			out = append(out, m)
		}
	}
	return out
}

// Without a signed mark, a replica that forgot what it signed equivocates: the danger the mark removes.
func TestAmnesiaWithoutSignedMarkEquivocates(t *testing.T) {
	tn, pp := amnesiaNet(t, Mark{})
	_ = tn.step(2, pp)
	if len(sentBy(tn, 2, wire.KindPrepare)) == 0 {
		t.Fatal("the amnesiac replica did not prepare the conflicting batch; this test no longer shows the danger")
	}
}

func TestSignedMarkForbidsForgottenVotes(t *testing.T) {
	tn, pp := amnesiaNet(t, Mark{View: 0, Seq: 1})
	_ = tn.step(2, pp)
	if got := sentBy(tn, 2, wire.KindPrepare); len(got) != 0 {
		t.Fatalf("replica 2 signed %d prepares at or below its signed mark", len(got))
	}
	if tn.reps[2].Stats().Rejected[ReasonBelowSignedMark] == 0 {
		t.Fatal("the refused vote was not counted")
	}

	// Past the mark it votes again, and it catches up on the slot it may not vote in from the others'
	// votes: the correct replicas commit "a" at 1 and "c" at 2.
	var covered []string
	tn.filter = func(m tmsg) bool {
		if m.from == 2 && (m.env.Kind == wire.KindPrepare || m.env.Kind == wire.KindCommit) {
			if view, seq, _, err := decodeVote(m.env); err == nil && view == 0 && seq <= 1 {
				covered = append(covered, m.env.Kind.String())
			}
		}
		return true
	}
	tn.queue = nil
	_ = tn.propose(0, tn.request(3, 1, "c"))
	var prepared2 bool
	for _, m := range sentBy(tn, 0, wire.KindPrePrepare) {
		if p, err := DecodePrePrepare(m.env.Payload); err == nil && p.Seq == 2 {
			prepared2 = true
		}
	}
	if !prepared2 {
		t.Fatal("the primary did not assign sequence number 2")
	}
	tn.run()
	if s := tn.reps[2].slots[2]; s == nil || !s.sentPrepare {
		t.Fatal("replica 2 did not prepare above its signed mark")
	}
	tn.tick(200)
	if tn.executed(2) < 2 {
		t.Fatalf("replica 2 executed %d, want 2 (catch-up below its mark)", tn.executed(2))
	}
	tn.checkAgreement()
	if len(covered) > 0 {
		t.Fatalf("replica 2 sent votes its mark covers: %v", covered)
	}
}

// A view change a replica starts skips every view its mark covers: it may have sent a VIEW-CHANGE there.
// (A mark with Seq 0 is covered by the genesis checkpoint: the replica may send VIEW-CHANGEs.)
func TestSignedMarkViewChangeSkipsCoveredViews(t *testing.T) {
	tn := newNet(t, 4, func(c *Config) { c.SignedMark = Mark{View: 2, Seq: 0} })
	tn.reps[1].startViewChange(1)
	if tn.reps[1].view != 3 || tn.reps[1].ownVC == nil {
		t.Fatalf("view change went to view %d, want 3", tn.reps[1].view)
	}
	vc, err := DecodeViewChange(tn.reps[1].ownVC.Payload)
	if err != nil || vc.View != 3 {
		t.Fatalf("own VIEW-CHANGE: %+v, %v", vc, err)
	}
	if !(Mark{View: 2, Seq: 10}).forbids(wire.KindNewView, 2, 0) || (Mark{View: 2, Seq: 10}).forbids(wire.KindNewView, 3, 0) ||
		!(Mark{View: 2, Seq: 10}).forbids(wire.KindCommit, 1, 10) || (Mark{View: 2, Seq: 10}).forbids(wire.KindCommit, 1, 11) ||
		(Mark{View: 2, Seq: 10}).forbids(wire.KindCheckpoint, 0, 4) || (Mark{}).forbids(wire.KindPrepare, 0, 0) {
		t.Fatal("Mark.forbids")
	}
}

// Until a stable checkpoint covers its mark, a replica that forgot votes sends no VIEW-CHANGE (it could
// not carry the prepared certificates it forgot); it still follows the view change, and the other three
// make the new view without it. Past the mark's checkpoint it takes part again.
func TestSignedMarkNoViewChangeUntilCheckpointCoversMark(t *testing.T) {
	tn := newNet(t, 4, func(c *Config) {
		if string(c.Signer.PublicKey()) == string(c.Replicas[3]) {
			c.SignedMark = Mark{View: 0, Seq: 5}
		}
	})
	r := tn.reps[3]
	r.startViewChange(1)
	tn.drain(3)
	if r.view != 1 || r.ownVC != nil || len(sentBy(tn, 3, wire.KindViewChange)) != 0 {
		t.Fatalf("below its mark: view %d, own VIEW-CHANGE %v, %d sent", r.view, r.ownVC != nil, len(sentBy(tn, 3, wire.KindViewChange)))
	}
	if r.Stats().Rejected[ReasonBelowSignedMark] == 0 {
		t.Fatal("the withheld VIEW-CHANGE was not counted")
	}
	for _, i := range []int{0, 1, 2} {
		tn.reps[i].startViewChange(1)
		tn.drain(i)
	}
	tn.run()
	for i, rep := range tn.reps {
		if rep.view != 1 || !rep.active {
			t.Fatalf("replica %d in view %d (active %v): the new view must form without replica 3", i, rep.view, rep.active)
		}
	}
	r.stable.seq = 5 // a stable checkpoint at the mark
	r.startViewChange(2)
	tn.drain(3)
	if r.ownVC == nil || len(sentBy(tn, 3, wire.KindViewChange)) == 0 {
		t.Fatal("past its mark the replica still sends no VIEW-CHANGE")
	}
}
