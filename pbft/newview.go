package pbft

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/p2pbft/p2pbft/wire"
)

// NEW-VIEW (docs/design/pbft.md rows 15-16). From a quorum of valid VIEW-CHANGEs for view v the new primary computes:
//
//	min-s = the highest stable checkpoint among them (its proof comes with it),
//	max-s = the highest sequence number of a prepared certificate among them,
//	for every n in (min-s, max-s]: the digest prepared in the highest view (ties, which only more than f
//	faulty replicas could cause, go to the smaller digest), or the null batch if none prepared n,
//
// and signs a pre-prepare for view v for each n. Backups check every VIEW-CHANGE, recompute the same list and
// reject a NEW-VIEW that differs. Entering the view, a replica adopts min-s as stable if it is newer (state
// transfer if it lacks the state), prepares every pre-prepare (even for batches it executed, so that others
// can commit; it never executes them again) and fetches the bodies of batches it does not hold.

type newViewPlan struct {
	stable stableCheckpoint
	seqs   []uint64
	digest []wire.Digest
}

// planNewView computes min-s, its proof, and the digests for (min-s, max-s] from checked view changes.
func (r *Replica) planNewView(vcs []*ViewChange, infos [][]pcertInfo) newViewPlan {
	var p newViewPlan
	for _, vc := range vcs {
		if vc.StableSeq > p.stable.seq || (vc.StableSeq == 0 && p.stable.seq == 0 && p.stable.proof == nil) {
			p.stable = stableCheckpoint{seq: vc.StableSeq, digest: vc.StableDigest, proof: vc.CheckpointProof}
		}
	}
	best := make(map[uint64]pcertInfo)
	maxS := p.stable.seq
	for _, list := range infos {
		for _, pc := range list {
			if pc.seq <= p.stable.seq {
				continue
			}
			b, ok := best[pc.seq]
			if !ok || pc.view > b.view || (pc.view == b.view && bytes.Compare(pc.digest[:], b.digest[:]) < 0) {
				best[pc.seq] = pc
			}
			maxS = max(maxS, pc.seq)
		}
	}
	for n := p.stable.seq + 1; n <= maxS; n++ {
		d := NullDigest
		if b, ok := best[n]; ok {
			d = b.digest
		}
		p.seqs = append(p.seqs, n)
		p.digest = append(p.digest, d)
	}
	return p
}

// sendNewView builds, signs and applies the NEW-VIEW of the current view (this replica is its primary).
func (r *Replica) sendNewView(chosen []*vcInfo) {
	vcs := make([]*ViewChange, len(chosen))
	infos := make([][]pcertInfo, len(chosen))
	envs := make([]*wire.Envelope, len(chosen))
	for i, c := range chosen {
		list, err := r.checkViewChange(c.vc)
		if err != nil {
			return // cannot happen: checked on receipt
		}
		vcs[i], infos[i], envs[i] = c.vc, list, c.env.WithoutBody()
	}
	plan := r.planNewView(vcs, infos)
	pps := make([]*wire.Envelope, len(plan.seqs))
	for i, seq := range plan.seqs {
		e, err := r.sign(wire.KindPrePrepare, &PrePrepare{View: r.view, Seq: seq, Digest: plan.digest[i]})
		if err != nil {
			return
		}
		pps[i] = e
	}
	nv, err := r.sign(wire.KindNewView, &NewView{View: r.view, ViewChanges: envs, PrePrepares: pps})
	if err != nil {
		return
	}
	r.send(Broadcast, nv)
	r.enterNewView(r.view, nv, plan, pps)
}

func (r *Replica) onNewView(e *wire.Envelope, from int) error {
	nv, err := DecodeNewView(e.Payload)
	if err != nil {
		return r.reject(e.Kind, ReasonMalformed, err)
	}
	if from != r.primaryOf(nv.View) {
		return r.reject(e.Kind, ReasonNotPrimary, nil)
	}
	if nv.View < r.view || (nv.View == r.view && r.active) {
		return r.reject(e.Kind, ReasonStaleView, nil)
	}
	if nv.View == 0 {
		return r.reject(e.Kind, ReasonBadNewView, errors.New("new view for view 0"))
	}
	plan, err := r.checkNewView(nv)
	if err != nil {
		return r.reject(e.Kind, ReasonBadNewView, err)
	}
	r.enterNewView(nv.View, e.WithoutBody(), plan, nv.PrePrepares)
	return nil
}

// checkNewView validates a NEW-VIEW completely and returns the plan it must follow.
func (r *Replica) checkNewView(nv *NewView) (newViewPlan, error) {
	if len(nv.ViewChanges) < r.quorum.Commit() || len(nv.ViewChanges) > r.n {
		return newViewPlan{}, fmt.Errorf("%d view changes, want %d to %d", len(nv.ViewChanges), r.quorum.Commit(), r.n)
	}
	seen := make([]bool, r.n)
	vcs := make([]*ViewChange, len(nv.ViewChanges))
	infos := make([][]pcertInfo, len(nv.ViewChanges))
	for i, e := range nv.ViewChanges {
		j, err := r.member(e, wire.KindViewChange)
		if err != nil {
			return newViewPlan{}, err
		}
		if seen[j] {
			return newViewPlan{}, errors.New("a replica's view change counted twice")
		}
		seen[j] = true
		vc, err := DecodeViewChange(e.Payload)
		if err != nil {
			return newViewPlan{}, err
		}
		if vc.View != nv.View {
			return newViewPlan{}, fmt.Errorf("view change for view %d in new view %d", vc.View, nv.View)
		}
		list, err := r.checkViewChange(vc)
		if err != nil {
			return newViewPlan{}, fmt.Errorf("view change of replica %d: %w", j, err)
		}
		vcs[i], infos[i] = vc, list
	}
	if err := r.verifyEnvelopes(nv.ViewChanges); err != nil {
		return newViewPlan{}, err
	}
	plan := r.planNewView(vcs, infos)
	if len(nv.PrePrepares) != len(plan.seqs) {
		return newViewPlan{}, fmt.Errorf("%d pre-prepares, recomputed %d", len(nv.PrePrepares), len(plan.seqs))
	}
	primary := r.primaryOf(nv.View)
	for i, e := range nv.PrePrepares {
		j, err := r.member(e, wire.KindPrePrepare)
		if err != nil {
			return newViewPlan{}, err
		}
		pp, err := DecodePrePrepare(e.Payload)
		if err != nil {
			return newViewPlan{}, err
		}
		if j != primary || pp.View != nv.View || pp.Seq != plan.seqs[i] || pp.Digest != plan.digest[i] {
			return newViewPlan{}, fmt.Errorf("pre-prepare %d differs from the recomputed one", i)
		}
	}
	if err := r.verifyEnvelopes(nv.PrePrepares); err != nil {
		return newViewPlan{}, err
	}
	return plan, nil
}

// enterNewView installs a checked NEW-VIEW.
func (r *Replica) enterNewView(v uint64, nv *wire.Envelope, plan newViewPlan, pps []*wire.Envelope) {
	r.view = v
	r.active = true
	r.newViewEnv = nv
	r.ownVC = nil
	r.hsDirty = true
	r.nvDeadline = 0
	r.vcQuorum = false
	r.progressed = false
	r.stats.NewViews++
	if plan.stable.seq > r.stable.seq {
		r.onCertified(plan.stable)
	}
	maxSeq := plan.stable.seq
	inBatches := make(map[wire.Digest]bool)
	for i, seq := range plan.seqs {
		maxSeq = seq
		if seq <= r.stable.seq {
			continue
		}
		s := r.slotFor(seq)
		if s.committed && s.cert.digest != plan.digest[i] {
			// The new view orders another batch where this replica committed one: with at most f faulty
			// replicas this cannot happen. Count it loudly; the driver should alert.
			r.stats.SafetyAlarms++
		}
		s.advance(v)
		s.pp, s.digest = pps[i].WithoutBody(), plan.digest[i]
		entry := pps[i].WithoutBody()
		if b := s.batch(s.digest); b != nil {
			entry.Body = b.body
			for _, q := range b.reqs {
				inBatches[q.id] = true
			}
		}
		r.persist(Entry{Seq: seq, Env: entry})
		r.sendPrepare(s)
		r.checkPrepared(s)
	}
	r.nextSeq = max(maxSeq, r.stable.seq) + 1
	r.pending.requeueAll(inBatches)
	if !r.isPrimary() {
		r.forwardPending()
	}
	r.replayFuture()
	r.startRequestTimer()
	r.fetchAt = r.now // fetch missing bodies at the next tick
}

// forwardPending sends the new primary the oldest pending requests that are not in a batch yet, in case it
// never received them.
func (r *Replica) forwardPending() {
	n := 0
	for _, pr := range r.pending.all[r.pending.ahead:] {
		if n >= r.cfg.MaxBatchRequests {
			return
		}
		if pr == nil || pr.assigned || r.pending.byID[pr.req.id] != pr {
			continue
		}
		r.pending.dequeue(pr)
		r.send(r.primaryOf(r.view), pr.req.env)
		n++
	}
	// Backups do not batch: keep the queue empty.
	for pr := r.pending.front(); pr != nil; pr = r.pending.front() {
		r.pending.dequeue(pr)
	}
}

// buffer keeps a message for a view this replica has not entered yet, bounded per sender.
func (r *Replica) buffer(e *wire.Envelope, from int) error {
	if len(r.future[from]) >= r.cfg.MaxFutureMessages {
		return r.reject(e.Kind, ReasonFutureFull, nil)
	}
	r.future[from] = append(r.future[from], e)
	r.stats.Buffered++
	return errBuffered
}

// errBuffered tells a handler to stop: the message was kept for later. Step reports it as success.
var errBuffered = errors.New("buffered for a later view")

// replayFuture processes buffered messages for the view just entered and drops those for views left behind.
func (r *Replica) replayFuture() {
	for from, list := range r.future {
		r.future[from] = nil
		for _, e := range list {
			_ = r.stepReplica(e, from)
		}
	}
}
