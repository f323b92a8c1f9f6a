package pbft

import (
	"errors"
	"fmt"
	"slices"

	"github.com/p2pbft/p2pbft/wire"
)

// View change, OSDI'99 with signatures (docs/design/pbft.md rows 12-14). A replica whose request timer expires moves to
// view v+1: it stops accepting messages of v and multicasts VIEW-CHANGE(v+1, stable checkpoint and its
// proof, a prepared certificate for every prepared sequence number above it). Once a quorum of VIEW-CHANGEs
// for its view is in, it waits NewViewTimeout for the NEW-VIEW and otherwise moves on to the next view with
// a doubled timeout. A replica that sees f+1 valid VIEW-CHANGEs for views above its own joins the smallest of
// them at once (the join rule), so a correct replica is never left behind by the others' timers.

func (r *Replica) tickTimers() {
	if r.active && r.reqTimer.running && r.now >= r.reqTimer.deadline {
		if _, pending := r.pending.byID[r.reqTimer.target]; !pending {
			// The watched request left the pending set without passing through requestExecuted: a newer
			// request of the same client replaced it and it executed since. Watch the oldest pending one.
			r.reqTimer.running = false
			r.startRequestTimer()
			return
		}
		if r.view > 0 && !r.progressed {
			// The view we moved to did not execute anything either: back off.
			r.backoff++
		}
		r.startViewChange(r.view + 1)
		return
	}
	if !r.active && r.nvDeadline != 0 && r.now >= r.nvDeadline {
		r.backoff++
		r.startViewChange(r.view + 1)
		return
	}
	if !r.active && r.ownVC == nil && !r.amnesiac() {
		// It followed a view change silently while below its signed mark (or restarted in one), and a
		// stable checkpoint covers the mark now: it takes part again, in the next view (it sent nothing
		// for this one, but the others may be waiting on it for a quorum).
		r.startViewChange(r.view + 1)
	}
}

// startViewChange moves to view v (> current view) and multicasts this replica's VIEW-CHANGE.
func (r *Replica) startViewChange(v uint64) {
	if m := r.cfg.SignedMark.View; v <= m && r.cfg.SignedMark != (Mark{}) {
		// It may have sent a VIEW-CHANGE for v in a life it forgot: skip to a view it never voted in.
		v = m + 1
	}
	if v <= r.view {
		return
	}
	if r.amnesiac() {
		// It cannot vouch for what it forgot: a VIEW-CHANGE without the prepared certificates it once
		// voted for could let a new view drop a committed batch (with f faulty replicas beside it). It
		// moves to v and counts as silent until a stable checkpoint covers its mark; the others' quorum
		// makes the new view.
		r.view = v
		r.active = false
		r.ownVC = nil
		r.latestVC[r.id] = nil
		r.newViewEnv = nil
		r.hsDirty = true
		r.progressed = false
		r.vcQuorum = false
		r.stopRequestTimer()
		r.nvDeadline = 0
		r.stats.ViewChanges++
		r.stats.count(ReasonBelowSignedMark)
		r.checkVCQuorum()
		r.checkJoin()
		return
	}
	vc := r.buildViewChange(v)
	e, err := r.sign(wire.KindViewChange, vc)
	if err != nil {
		return
	}
	r.view = v
	r.active = false
	r.ownVC = e
	r.newViewEnv = nil
	r.hsDirty = true
	r.progressed = false
	r.vcQuorum = false
	r.stopRequestTimer()
	r.nvDeadline = 0
	r.vcResendAt = r.now + uint64(r.cfg.RetransmitTimeout)
	r.latestVC[r.id] = &vcInfo{view: v, id: e.ID(), env: e, vc: vc}
	r.stats.ViewChanges++
	r.send(Broadcast, e)
	r.checkVCQuorum()
	r.checkJoin()
}

// amnesiac says whether the replica restarted below its signed mark and no stable checkpoint covers the
// mark yet: it may have voted for batches it no longer knows. A chain without fault tolerance (f = 0) has
// no one else to make a new view and is exempt.
func (r *Replica) amnesiac() bool {
	m := r.cfg.SignedMark
	return m != (Mark{}) && r.quorum.F > 0 && r.stable.seq < m.Seq
}

// buildViewChange collects the stable checkpoint and the highest prepared certificate of every sequence
// number above it.
func (r *Replica) buildViewChange(v uint64) *ViewChange {
	vc := &ViewChange{View: v, StableSeq: r.stable.seq, StableDigest: r.stable.digest, CheckpointProof: r.stable.proof}
	seqs := make([]uint64, 0, len(r.slots))
	for seq, s := range r.slots {
		if s.pcert != nil && seq > r.stable.seq && seq <= r.high() {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	for _, seq := range seqs {
		pc := r.slots[seq].pcert
		vc.Prepared = append(vc.Prepared, PreparedCert{PrePrepare: pc.pp, Prepares: pc.prepares})
	}
	return vc
}

// pcertInfo is a checked prepared certificate.
type pcertInfo struct {
	view, seq uint64
	digest    wire.Digest
	pp        *wire.Envelope
}

// checkViewChange validates a VIEW-CHANGE payload from replica `from` completely: checkpoint proof, every
// prepared certificate (pre-prepare from the primary of its view, quorum-1 matching prepares from distinct
// backups, inside the window above the checkpoint) and all embedded signatures.
func (r *Replica) checkViewChange(vc *ViewChange) ([]pcertInfo, error) {
	if vc.View == 0 {
		return nil, errors.New("view change to view 0")
	}
	if err := r.checkCheckpointProof(vc.StableSeq, vc.StableDigest, vc.CheckpointProof); err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	if uint64(len(vc.Prepared)) > r.cfg.Window {
		return nil, fmt.Errorf("%d prepared certificates exceed the window", len(vc.Prepared))
	}
	infos := make([]pcertInfo, 0, len(vc.Prepared))
	var sigs []*wire.Envelope
	for i := range vc.Prepared {
		pc := &vc.Prepared[i]
		info, err := r.checkPreparedCert(pc, vc.View)
		if err != nil {
			return nil, fmt.Errorf("prepared certificate %d: %w", i, err)
		}
		if info.seq <= vc.StableSeq || info.seq > vc.StableSeq+r.cfg.Window {
			return nil, fmt.Errorf("prepared certificate for %d outside (%d, %d]", info.seq, vc.StableSeq, vc.StableSeq+r.cfg.Window)
		}
		if i > 0 && info.seq <= infos[i-1].seq {
			return nil, errors.New("prepared certificates not in increasing sequence order")
		}
		infos = append(infos, info)
		sigs = append(sigs, pc.PrePrepare)
		sigs = append(sigs, pc.Prepares...)
	}
	if err := r.verifyEnvelopes(sigs); err != nil {
		return nil, err
	}
	return infos, nil
}

// checkPreparedCert checks the structure of one prepared certificate (not the signatures).
func (r *Replica) checkPreparedCert(pc *PreparedCert, below uint64) (pcertInfo, error) {
	var info pcertInfo
	pi, err := r.member(pc.PrePrepare, wire.KindPrePrepare)
	if err != nil {
		return info, err
	}
	pp, err := DecodePrePrepare(pc.PrePrepare.Payload)
	if err != nil {
		return info, err
	}
	if pp.View >= below {
		return info, fmt.Errorf("pre-prepare of view %d not below %d", pp.View, below)
	}
	if pi != r.primaryOf(pp.View) {
		return info, errors.New("pre-prepare not from the primary of its view")
	}
	if len(pc.Prepares) < r.quorum.Prepare() || len(pc.Prepares) > r.n {
		return info, fmt.Errorf("%d prepares, want %d", len(pc.Prepares), r.quorum.Prepare())
	}
	seen := make([]bool, r.n)
	for _, e := range pc.Prepares {
		i, err := r.member(e, wire.KindPrepare)
		if err != nil {
			return info, err
		}
		if i == pi || seen[i] {
			return info, errors.New("prepare from the primary or counted twice")
		}
		seen[i] = true
		p, err := DecodePrepare(e.Payload)
		if err != nil {
			return info, err
		}
		if p.View != pp.View || p.Seq != pp.Seq || p.Digest != pp.Digest {
			return info, errors.New("prepare does not match the pre-prepare")
		}
	}
	return pcertInfo{view: pp.View, seq: pp.Seq, digest: pp.Digest, pp: pc.PrePrepare.WithoutBody()}, nil
}

// validViewChange decodes and validates a VIEW-CHANGE envelope, caching the result by envelope ID.
// vc, if not nil, is the already decoded payload.
func (r *Replica) validViewChange(e *wire.Envelope, vc *ViewChange) (*ViewChange, error) {
	id := e.ID()
	if cached, ok := r.vcValid[id]; ok && r.vcache.HasEnvelope(e) {
		return cached, nil
	}
	if vc == nil {
		var err error
		if vc, err = DecodeViewChange(e.Payload); err != nil {
			return nil, err
		}
	}
	if _, err := r.checkViewChange(vc); err != nil {
		return nil, err
	}
	if len(r.vcValid) >= 4*r.n {
		clear(r.vcValid)
	}
	r.vcValid[id] = vc
	return vc, nil
}

func (r *Replica) onViewChange(e *wire.Envelope, from int) error {
	if l := r.latestVC[from]; l != nil && l.id == e.ID() {
		// A retransmission of what we hold: skip the decoding.
		if l.view < r.view || (l.view == r.view && r.active) {
			r.serveNewView(from)
		}
		return r.reject(e.Kind, ReasonDuplicate, nil)
	}
	vc, err := DecodeViewChange(e.Payload)
	if err != nil {
		return r.reject(e.Kind, ReasonMalformed, err)
	}
	if vc.View < r.view || (vc.View == r.view && r.active) {
		// The sender is behind us: if we are in a view it has not seen the NEW-VIEW of, send it.
		r.serveNewView(from)
		return r.reject(e.Kind, ReasonStaleView, nil)
	}
	if l := r.latestVC[from]; l != nil && vc.View <= l.view {
		if vc.View == l.view && l.id == e.ID() {
			return r.reject(e.Kind, ReasonDuplicate, nil)
		}
		return r.reject(e.Kind, ReasonStaleView, nil)
	}
	if _, err := r.validViewChange(e, vc); err != nil {
		return r.reject(e.Kind, ReasonBadCertificate, err)
	}
	r.vcache.AddEnvelope(e)
	r.latestVC[from] = &vcInfo{view: vc.View, id: e.ID(), env: e.WithoutBody(), vc: vc}
	r.checkJoin()
	r.checkVCQuorum()
	return nil
}

// serveNewView sends the NEW-VIEW of the current view to a replica that is still before it (rate-limited).
func (r *Replica) serveNewView(to int) {
	if !r.active || r.newViewEnv == nil || r.nvServed[to]+uint64(r.cfg.RetransmitTimeout) > r.now && r.nvServed[to] != 0 {
		return
	}
	r.nvServed[to] = r.now
	r.resend(to, r.newViewEnv)
}

// checkJoin applies the join rule: f+1 replicas in views above ours pull us to the smallest of those views.
func (r *Replica) checkJoin() {
	var views []uint64
	for i, l := range r.latestVC {
		if i != r.id && l != nil && l.view > r.view {
			views = append(views, l.view)
		}
	}
	if len(views) >= r.quorum.Weak() {
		r.startViewChange(slices.Min(views))
	}
}

// checkVCQuorum starts the NEW-VIEW timer once a quorum of replicas is in our view or beyond (they all left
// the previous view), and lets the new primary send its NEW-VIEW once a quorum of VIEW-CHANGEs for exactly
// our view is in. A replica never times out of a view alone: one that got ahead waits for the others (who
// time out toward it, or join it by the f+1 rule), so timeouts cannot make correct replicas chase each
// other through the views.
func (r *Replica) checkVCQuorum() {
	if r.active {
		return
	}
	if !r.vcQuorum {
		n := 0
		for _, l := range r.latestVC {
			if l != nil && l.view >= r.view {
				n++
			}
		}
		if n >= r.quorum.Commit() {
			r.vcQuorum = true
			r.nvDeadline = r.now + r.timeout(r.cfg.NewViewTimeout)
		}
	}
	if r.isPrimary() {
		if vcs := r.viewChangesFor(r.view); len(vcs) >= r.quorum.Commit() {
			r.sendNewView(vcs[:r.quorum.Commit()])
		}
	}
}

// viewChangesFor returns the latest VIEW-CHANGEs for view v, own first, then by replica index.
func (r *Replica) viewChangesFor(v uint64) []*vcInfo {
	var out []*vcInfo
	if l := r.latestVC[r.id]; l != nil && l.view == v {
		out = append(out, l)
	}
	for i, l := range r.latestVC {
		if i != r.id && l != nil && l.view == v {
			out = append(out, l)
		}
	}
	return out
}
