package pbft

import (
	"errors"
	"fmt"

	"github.com/p2pbft/p2pbft/wire"
)

// The normal case: batching and pipelining at the primary, PRE-PREPARE, PREPARE and COMMIT (docs/design/pbft.md rows
// 2-4 and 8-9).

// maybePropose lets the primary cut batches while the pipeline and the window have room.
func (r *Replica) maybePropose() {
	if !r.active || !r.isPrimary() {
		return
	}
	for r.nextSeq <= r.high() && r.nextSeq <= r.lastDelivered+uint64(r.cfg.PipelineDepth) {
		front := r.pending.front()
		if front == nil {
			return
		}
		if r.cfg.BatchTimeout > 0 && r.pending.qlen < r.cfg.MaxBatchRequests && r.pending.qbytes < r.cfg.MaxBatchBytes &&
			r.now-front.arrived < uint64(r.cfg.BatchTimeout) {
			return
		}
		if r.nextSeq > r.lastDelivered+1 && r.pending.qlen < r.cfg.PipelineMinBatch && r.pending.qbytes < r.cfg.MaxBatchBytes {
			return // a batch is in flight: let this one grow until it is worth a batch of its own
		}
		if !r.propose() {
			return
		}
	}
}

// propose cuts one batch from the queue and sends its PRE-PREPARE.
func (r *Replica) propose() bool {
	var reqs []*request
	bytes := 0
	for len(reqs) < r.cfg.MaxBatchRequests {
		pr := r.pending.front()
		if pr == nil {
			break
		}
		if len(reqs) > 0 && bytes+pr.req.size > r.cfg.MaxBatchBytes {
			break
		}
		r.pending.dequeue(pr)
		pr.assigned = true
		if ce := r.clients.get(pr.req.client); ce != nil && ClassifyRequest(pr.req.ts, ce.delivTS) != RequestNew {
			continue // executed meanwhile
		}
		reqs = append(reqs, pr.req)
		bytes += pr.req.size
	}
	if len(reqs) == 0 {
		return r.pending.front() != nil
	}
	envs := make([]*wire.Envelope, len(reqs))
	ids := make([]wire.Digest, len(reqs))
	for i, q := range reqs {
		envs[i] = q.env
		ids[i] = q.id
	}
	body, err := EncodeBatch(envs)
	if err != nil {
		return false
	}
	b := &batch{digest: BatchDigest(ids), body: body, reqs: reqs}
	seq := r.nextSeq
	pp, err := r.sign(wire.KindPrePrepare, &PrePrepare{View: r.view, Seq: seq, Digest: b.digest})
	if err != nil {
		return false
	}
	r.nextSeq++
	s := r.slotFor(seq)
	s.advance(r.view)
	s.pp, s.digest = pp, b.digest
	s.addBatch(b)
	full := pp.WithoutBody()
	full.Body = body
	r.persist(Entry{Seq: seq, Env: full})
	r.send(Broadcast, full)
	r.seen(seq)
	r.checkPrepared(s)
	return true
}

// parseBatch decodes a batch body, checks the limits and every request's form, and computes its digest. It
// does not verify signatures.
func (r *Replica) parseBatch(body []byte) (*batch, error) {
	if len(body) > r.cfg.MaxBatchBytes {
		return nil, fmt.Errorf("batch of %d bytes exceeds %d", len(body), r.cfg.MaxBatchBytes)
	}
	envs, verified := r.hinted(body), true
	if envs == nil {
		var err error
		if envs, err = DecodeBatch(body); err != nil {
			return nil, err
		}
		verified = false
	}
	if len(envs) == 0 {
		return nullBatch, nil
	}
	if len(envs) > r.cfg.MaxBatchRequests {
		return nil, fmt.Errorf("batch of %d requests exceeds %d", len(envs), r.cfg.MaxBatchRequests)
	}
	reqs := make([]*request, len(envs))
	ids := make([]wire.Digest, len(envs))
	for i, e := range envs {
		q, err := r.checkRequest(e)
		if err != nil {
			return nil, fmt.Errorf("request %d: %w", i, err)
		}
		reqs[i], ids[i] = q, q.id
	}
	return &batch{digest: BatchDigest(ids), body: body, reqs: reqs, verified: verified}, nil
}

// checkBatch parses a batch body, checks it against digest and, if verifySigs, verifies the requests'
// signatures that were not verified before (in one VerifyBatch call). A body bound by a certified digest (a
// commit certificate, or a prepared certificate in a NEW-VIEW) needs no signature checks: a quorum accepted
// it, so a correct replica verified it.
func (r *Replica) checkBatch(body []byte, digest wire.Digest, verifySigs bool) (*batch, error) {
	b, err := r.parseBatch(body)
	if err != nil {
		return nil, err
	}
	if b.digest != digest {
		return nil, errors.New("body does not match the digest")
	}
	if verifySigs && !b.verified {
		var todo []*wire.Envelope
		for _, q := range b.reqs {
			if !r.verifiedRequest(q) {
				todo = append(todo, q.env)
			}
		}
		if len(todo) > 0 {
			// Not cached: learnRequests makes them pending, which remembers they were verified.
			if err := r.verify(todo, false); err != nil {
				return nil, fmt.Errorf("request signature: %w", err)
			}
		}
	}
	return b, nil
}

// viewCheck classifies a message of view v: nil if for the current, active view; otherwise the error to
// return, after buffering it if it is for a later view.
func (r *Replica) viewCheck(e *wire.Envelope, from int, v uint64) error {
	if v == r.view && r.active {
		return nil
	}
	if v < r.view {
		return r.reject(e.Kind, ReasonStaleView, nil)
	}
	return r.buffer(e, from)
}

func (r *Replica) onPrePrepare(e *wire.Envelope, from int) error {
	p, err := DecodePrePrepare(e.Payload)
	if err != nil {
		return r.reject(e.Kind, ReasonMalformed, err)
	}
	if from != r.primaryOf(p.View) {
		return r.reject(e.Kind, ReasonNotPrimary, nil)
	}
	r.seen(p.Seq)
	if err := r.viewCheck(e, from, p.View); err != nil {
		return err
	}
	if !r.inWindow(p.Seq) {
		return r.reject(e.Kind, ReasonOutOfWindow, nil)
	}
	s := r.slotFor(p.Seq)
	s.advance(p.View)
	if s.pp != nil {
		if s.digest != p.Digest {
			return r.reject(e.Kind, ReasonEquivocation, nil)
		}
		if s.batch(p.Digest) != nil || len(e.Body) == 0 {
			return r.reject(e.Kind, ReasonDuplicate, nil)
		}
		// A pre-prepare from a NEW-VIEW whose body we lacked: take it from the primary's retransmission.
		b, err := r.checkBatch(e.Body, p.Digest, false)
		if err != nil {
			return r.reject(e.Kind, ReasonBadBatch, err)
		}
		r.attachBatch(s, b)
		return nil
	}
	if s.committed && s.cert.digest != p.Digest {
		return r.reject(e.Kind, ReasonBadBatch, errors.New("conflicts with the committed batch"))
	}
	if len(e.Body) == 0 && p.Digest != NullDigest {
		return r.reject(e.Kind, ReasonBadBatch, errors.New("pre-prepare without its batch"))
	}
	b, err := r.checkBatch(e.Body, p.Digest, true)
	if err != nil {
		return r.reject(e.Kind, ReasonBadBatch, err)
	}
	s.pp, s.digest = e.WithoutBody(), p.Digest
	s.addBatch(b)
	r.vcache.AddEnvelope(e)
	r.persist(Entry{Seq: p.Seq, Env: e})
	r.learnRequests(b)
	r.sendPrepare(s)
	r.checkPrepared(s)
	return nil
}

// attachBatch records a batch body learned after its pre-prepare.
func (r *Replica) attachBatch(s *slot, b *batch) {
	if s.batch(b.digest) != nil {
		return
	}
	s.addBatch(b)
	r.persist(Entry{Seq: s.seq, Batch: b.body})
	r.learnRequests(b)
}

func (r *Replica) sendPrepare(s *slot) {
	if s.sentPrepare || r.primaryOf(s.view) == r.id {
		return
	}
	e, err := r.sign(wire.KindPrepare, &Prepare{View: s.view, Seq: s.seq, Digest: s.digest})
	if err != nil {
		return
	}
	s.sentPrepare = true
	s.prepares[r.id] = vote{env: e, digest: s.digest}
	r.persist(Entry{Seq: s.seq, Env: e})
	r.send(Broadcast, e)
}

// decodeVote decodes a prepare or commit payload (same shape).
func decodeVote(e *wire.Envelope) (view, seq uint64, d wire.Digest, err error) {
	if e.Kind == wire.KindPrepare {
		p, err := DecodePrepare(e.Payload)
		if err != nil {
			return 0, 0, d, err
		}
		return p.View, p.Seq, p.Digest, nil
	}
	c, err := DecodeCommit(e.Payload)
	if err != nil {
		return 0, 0, d, err
	}
	return c.View, c.Seq, c.Digest, nil
}

func (r *Replica) onPrepare(e *wire.Envelope, from int) error { return r.onVote(e, from) }

func (r *Replica) onCommit(e *wire.Envelope, from int) error { return r.onVote(e, from) }

func (r *Replica) onVote(e *wire.Envelope, from int) error {
	view, seq, d, err := decodeVote(e)
	if err != nil {
		return r.reject(e.Kind, ReasonMalformed, err)
	}
	if e.Kind == wire.KindPrepare && from == r.primaryOf(view) {
		return r.reject(e.Kind, ReasonPrimaryPrepare, nil)
	}
	r.seen(seq)
	if err := r.viewCheck(e, from, view); err != nil {
		return err
	}
	if !r.inWindow(seq) {
		return r.reject(e.Kind, ReasonOutOfWindow, nil)
	}
	s := r.slotFor(seq)
	s.advance(view)
	if s.committed && s.sentCommit {
		// Nothing left to do in this view: we committed and sent our own COMMIT.
		return r.reject(e.Kind, ReasonAlreadyDone, nil)
	}
	votes := s.prepares
	if e.Kind == wire.KindCommit {
		votes = s.commits
	}
	if v := votes[from]; v.env != nil {
		if v.digest != d {
			return r.reject(e.Kind, ReasonEquivocation, nil)
		}
		return r.reject(e.Kind, ReasonDuplicate, nil)
	}
	votes[from] = vote{env: e.WithoutBody(), digest: d}
	r.vcache.AddEnvelope(e)
	r.persist(Entry{Seq: seq, Env: e.WithoutBody()})
	r.checkPrepared(s)
	r.checkCommitted(s)
	return nil
}

// checkPrepared: the slot prepared once it has the pre-prepare and quorum-1 matching prepares from distinct
// backups (the primary sends none), docs/design/pbft.md row 3. Then the replica sends its COMMIT.
func (r *Replica) checkPrepared(s *slot) {
	if !s.reachesPrepared(r.quorum) {
		return
	}
	s.markPrepared(r.quorum)
	r.out.Quorums = append(r.out.Quorums, QuorumEvent{View: s.view, Seq: s.seq})
	if !s.sentCommit {
		e, err := r.sign(wire.KindCommit, &Commit{View: s.view, Seq: s.seq, Digest: s.digest})
		if err != nil {
			return
		}
		s.sentCommit = true
		s.commits[r.id] = vote{env: e, digest: s.digest}
		r.persist(Entry{Seq: s.seq, Env: e})
		r.send(Broadcast, e)
	}
	r.checkCommitted(s)
}

// checkCommitted: committed-local is prepared plus a quorum of matching commits, own included (row 4).
func (r *Replica) checkCommitted(s *slot) {
	if !s.reachesCommitted(r.quorum) {
		return
	}
	s.markCommitted(r.quorum)
	r.out.Quorums = append(r.out.Quorums, QuorumEvent{View: s.view, Seq: s.seq, Committed: true})
	r.stats.CommittedBatches++
}
