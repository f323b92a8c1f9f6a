package sim

import (
	"math/rand/v2"
	"slices"

	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// The certsplit fault: a schedule of message deliveries that makes a NEW-VIEW choose between prepared
// certificates of one sequence number from different views, the case where taking the certificate of the
// highest view (and not the first one met) keeps a committed batch. The random faults do not produce it: it
// needs a certificate that formed at a minority, outlived a view in which another batch committed at its
// sequence number, and then met that batch's certificate in one NEW-VIEW (seeds 1..1000 at n=4 and 7,
// before this fault, gave 157 NEW-VIEWs with certificates for one sequence number from different views,
// all for the same batch).
//
// A round targets a new batch a correct primary proposes, after 0 to 5 others drawn from the seed: view v,
// sequence number s, and x, the primary of view v+2 (correct, so that it puts its own VIEW-CHANGE first
// and the NEW-VIEW meets x's certificate before the other):
//
//  1. In view v the PREPAREs for s reach x only (and so do fetch replies that carry votes for s): x
//     prepares the batch, nobody else does, and s cannot commit. The backups' request timers expire.
//  2. From the first VIEW-CHANGE for v+1 on, x is cut off: its VIEW-CHANGE for v+1 reaches nobody and
//     nothing reaches x but VIEW-CHANGEs for v+2 and later. The others make view v+1 without x's
//     certificate, so its NEW-VIEW orders another batch at s (the null batch when a later sequence number
//     prepared in v) and they commit it. CHECKPOINTs at or above s are dropped throughout, so no stable
//     checkpoint covers s: the window fills, the backups' request timers expire again.
//  3. The VIEW-CHANGEs for v+2 pull x into view v+2 (the join rule). As its primary, x builds the NEW-VIEW
//     from its own VIEW-CHANGE, which holds the view-v certificate for s, and the first others to arrive,
//     which hold the view-(v+1) certificate for s. The round ends with that NEW-VIEW and the network
//     carries everything again; one round per run, as each costs three views. A round is abandoned, and
//     another begins, when x did not prepare s in v, another replica did, or the views run past v+2;
//     and for good when the fault period ends.
//
// Everything is decided by the messages the replicas send, on the simulation's single thread, so a seed
// replays exactly. The observer counts, in every run, the NEW-VIEWs of correct primaries whose
// VIEW-CHANGEs hold prepared certificates for one sequence number from different views (mixedNewViews),
// and those for different batches (conflictingNewViews), so that a campaign shows how often the situation
// arises, with or without this fault.

type certSplit struct {
	c     *Cluster
	rng   *rand.Rand
	phase splitPhase
	skip  int // fresh batches to let pass before the next round
	view  uint64
	seq   uint64
	x     int
	// prepared: x sent its COMMIT for (view, seq), so it holds the certificate.
	prepared bool
	// lastPP is the highest (view, sequence number) of a PRE-PREPARE a correct primary sent, so that a
	// round targets a new batch, not a retransmission of one the others may have prepared.
	lastPP [2]uint64

	// Counters for the report.
	rounds   int // rounds armed on a batch
	minority int // rounds in which x held the only certificate when view v ended
	hits     int // rounds whose NEW-VIEW for v+2 held both certificates for s
	// hitsConflicting: hits whose two certificates name different batches.
	hitsConflicting int
	// NEW-VIEWs of correct primaries (each counted once per primary and view) whose VIEW-CHANGEs hold
	// prepared certificates for one sequence number from different views, and those among them whose
	// certificates also name different batches.
	mixedNewViews, conflictingNewViews int
	newViewsSeen                       map[[2]uint64]bool
}

type splitPhase int

const (
	splitOff     splitPhase = iota // no round: the fault is off, or the run's round is over
	splitArmed                     // waiting for a batch to target
	splitPrepare                   // view v: the PREPAREs for s reach x only
	splitCutOff                    // view v+1: x cut off until its NEW-VIEW for v+2
)

func newCertSplit(c *Cluster) *certSplit {
	s := &certSplit{c: c, newViewsSeen: map[[2]uint64]bool{}}
	if c.opt.has(FaultCertSplit) {
		// A stream of its own, so that the other faults of the seed draw what they would without it.
		s.rng = rand.New(rand.NewPCG(uint64(c.opt.Seed), 0xce7755))
		s.rearm()
	}
	return s
}

// rearm starts the next round after a few more batches (drawn from the seed), while the load lasts: a
// round that begins late finds no batch to target.
func (s *certSplit) rearm() {
	s.phase = splitArmed
	s.prepared = false
	s.skip = s.rng.IntN(6)
}

// onSend watches what replica src sends (as its core produced it) to move the round along, and counts
// mixed NEW-VIEWs.
func (s *certSplit) onSend(src *node, e *wire.Envelope) {
	if !src.correct() {
		return
	}
	if e.Kind == wire.KindNewView {
		s.countNewView(src, e)
	}
	if s.rng == nil {
		return
	}
	if s.c.net.healed {
		s.phase = splitOff // the fault period ended, mid-round or not
		return
	}
	switch e.Kind {
	case wire.KindPrePrepare:
		p, err := pbft.DecodePrePrepare(e.Payload)
		if err != nil || len(e.Body) == 0 {
			return
		}
		fresh := p.View > s.lastPP[0] || (p.View == s.lastPP[0] && p.Seq > s.lastPP[1])
		if !fresh {
			return // a retransmission: the others may have prepared it already
		}
		s.lastPP = [2]uint64{p.View, p.Seq}
		if s.phase != splitArmed {
			return
		}
		if s.skip > 0 {
			s.skip--
			return
		}
		n := uint64(s.c.opt.N)
		x := int((p.View + 2) % n)
		xs := s.c.byIdx[x]
		if len(xs) != 1 || !xs[0].correct() || !xs[0].up || int(p.View%n) != src.idx {
			return // x must be a correct replica that is running, to build the NEW-VIEW of v+2
		}
		s.phase, s.view, s.seq, s.x = splitPrepare, p.View, p.Seq, x
		s.rounds++
		s.c.tracef("certsplit: view %d seq %d: prepares to r%d only", s.view, s.seq, x)
	case wire.KindCommit:
		if s.phase != splitPrepare {
			return
		}
		if p, err := pbft.DecodeCommit(e.Payload); err == nil && p.View == s.view && p.Seq == s.seq {
			if src.idx != s.x {
				// Another replica prepared s in v (it had the votes before the round began).
				s.c.tracef("certsplit: r%d prepared seq %d in view %d too, round abandoned", src.idx, s.seq, s.view)
				s.rearm()
				return
			}
			s.prepared = true
		}
	case wire.KindViewChange:
		vc, err := pbft.DecodeViewChange(e.Payload)
		if err != nil || s.phase < splitPrepare {
			return
		}
		switch {
		case vc.View > s.view+2:
			s.c.tracef("certsplit: views ran past %d, round abandoned", s.view+2)
			s.rearm()
		case s.phase == splitPrepare && vc.View > s.view:
			if !s.prepared {
				s.c.tracef("certsplit: r%d did not prepare seq %d in view %d, round abandoned", s.x, s.seq, s.view)
				s.rearm()
				return
			}
			s.minority++
			s.phase = splitCutOff
			s.c.tracef("certsplit: view %d ends with the certificate for %d at r%d only: r%d cut off", s.view, s.seq, s.x, s.x)
		}
	case wire.KindNewView:
		nv, err := pbft.DecodeNewView(e.Payload)
		if err != nil || s.phase != splitCutOff || src.idx != s.x || nv.View != s.view+2 {
			return
		}
		if views, digests := certViews(nv, s.seq); len(views) > 1 {
			s.hits++
			if len(digests) > 1 {
				s.hitsConflicting++
			}
			s.c.tracef("certsplit: r%d's NEW-VIEW for %d holds certificates for %d from views %v", s.x, nv.View, s.seq, views)
		}
		// One round per run: every round costs three views.
		s.phase = splitOff
	}
}

// cut returns, for one message from src, whether the round drops its copy to replica j; nil when it
// drops none.
func (s *certSplit) cut(src *node, e *wire.Envelope) func(j int) bool {
	if s.phase < splitPrepare {
		return nil
	}
	cutOff := s.phase == splitCutOff
	// In view v+1, x hears nothing but the VIEW-CHANGEs that pull it into v+2.
	toX := func(j int) bool { return cutOff && j == s.x }
	switch e.Kind {
	case wire.KindPrepare:
		if p, err := pbft.DecodePrepare(e.Payload); err == nil && p.View == s.view && p.Seq == s.seq {
			return func(j int) bool { return j != s.x || toX(j) }
		}
	case wire.KindFetchReply:
		// Votes for s handed over in a fetch reply would let another replica prepare it.
		if fr, err := pbft.DecodeFetchReply(e.Payload); err == nil {
			for _, fs := range fr.Slots {
				if fs.Seq == s.seq && len(fs.Messages) > 0 {
					return func(j int) bool { return j != s.x || toX(j) }
				}
			}
		}
	case wire.KindCheckpoint:
		// No stable checkpoint may cover s before the NEW-VIEW of v+2: it would drop both certificates.
		if p, err := pbft.DecodeCheckpoint(e.Payload); err == nil && p.Seq >= s.seq {
			return func(int) bool { return true }
		}
	case wire.KindViewChange:
		if !cutOff {
			return nil
		}
		vc, err := pbft.DecodeViewChange(e.Payload)
		if err != nil {
			return nil
		}
		if vc.View > s.view+1 {
			return nil
		}
		if src.idx == s.x {
			return func(int) bool { return true } // x stays out of the quorum of v+1
		}
	}
	if cutOff {
		return toX
	}
	return nil
}

// countNewView counts a correct primary's NEW-VIEW whose VIEW-CHANGEs hold prepared certificates for one
// sequence number from different views (once per primary and view: it resends the same NEW-VIEW).
func (s *certSplit) countNewView(src *node, e *wire.Envelope) {
	nv, err := pbft.DecodeNewView(e.Payload)
	if err != nil {
		return
	}
	k := [2]uint64{uint64(src.idx), nv.View}
	if s.newViewsSeen[k] {
		return
	}
	s.newViewsSeen[k] = true
	mixed, conflicting := false, false
	for _, seq := range certSeqs(nv) {
		views, digests := certViews(nv, seq)
		if len(views) > 1 {
			mixed = true
			if len(digests) > 1 {
				conflicting = true
			}
		}
	}
	if mixed {
		s.mixedNewViews++
	}
	if conflicting {
		s.conflictingNewViews++
	}
}

// certSeqs lists the sequence numbers that prepared certificates in a NEW-VIEW's VIEW-CHANGEs name.
func certSeqs(nv *pbft.NewView) []uint64 {
	var out []uint64
	seen := map[uint64]bool{}
	for _, vcEnv := range nv.ViewChanges {
		vc, err := pbft.DecodeViewChange(vcEnv.Payload)
		if err != nil {
			continue
		}
		for _, pc := range vc.Prepared {
			if p, err := pbft.DecodePrePrepare(pc.PrePrepare.Payload); err == nil && !seen[p.Seq] {
				seen[p.Seq] = true
				out = append(out, p.Seq)
			}
		}
	}
	return out
}

// certViews returns the distinct views, and the distinct digests, of the prepared certificates for seq in a
// NEW-VIEW's VIEW-CHANGEs.
func certViews(nv *pbft.NewView, seq uint64) ([]uint64, []wire.Digest) {
	var views []uint64
	var digests []wire.Digest
	for _, vcEnv := range nv.ViewChanges {
		vc, err := pbft.DecodeViewChange(vcEnv.Payload)
		if err != nil {
			continue
		}
		for _, pc := range vc.Prepared {
			p, err := pbft.DecodePrePrepare(pc.PrePrepare.Payload)
			if err != nil || p.Seq != seq {
				continue
			}
			if !slices.Contains(views, p.View) {
				views = append(views, p.View)
			}
			if !slices.Contains(digests, p.Digest) {
				digests = append(digests, p.Digest)
			}
		}
	}
	return views, digests
}

// SplitStats counts what the certsplit schedule did in a run (or a campaign) and what the observer saw.
type SplitStats struct {
	// Rounds armed on a batch; Minority: rounds in which view v ended with the batch prepared at x alone;
	// Hits: rounds whose NEW-VIEW for v+2 held certificates for the round's sequence number from views v
	// and v+1, and HitsConflicting: those whose two certificates also name different batches (where the
	// rule "highest view wins" decides which batch survives).
	Rounds, Minority, Hits, HitsConflicting int
	// MixedNewViews: NEW-VIEWs of correct primaries, with or without the fault, whose VIEW-CHANGEs hold
	// prepared certificates for one sequence number from different views; ConflictingNewViews: those
	// among them with certificates for different batches at one sequence number.
	MixedNewViews, ConflictingNewViews int
}

func (s *SplitStats) add(o SplitStats) {
	s.Rounds += o.Rounds
	s.Minority += o.Minority
	s.Hits += o.Hits
	s.HitsConflicting += o.HitsConflicting
	s.MixedNewViews += o.MixedNewViews
	s.ConflictingNewViews += o.ConflictingNewViews
}

func (s *certSplit) stats() SplitStats {
	return SplitStats{Rounds: s.rounds, Minority: s.minority, Hits: s.hits, HitsConflicting: s.hitsConflicting,
		MixedNewViews: s.mixedNewViews, ConflictingNewViews: s.conflictingNewViews}
}
