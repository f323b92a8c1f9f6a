package pbft

import (
	"errors"
	"fmt"

	"github.com/p2pbft/p2pbft/wire"
)

// Repair. Messages get lost (gossip drops, partitions, restarts), so a replica that stops making progress
// does two things every RetransmitTimeout ticks: it resends its own messages for the stuck sequence numbers
// (with a new Resend counter), and it asks one peer, in turn, with a KindFetch for what that peer has: a
// commit certificate with the batch (which lets it commit at once, like a block), or the peer's pre-prepare,
// prepare and commit, or a batch body it lacks after a NEW-VIEW. A replica also resends its VIEW-CHANGE while
// waiting for a NEW-VIEW and its latest checkpoint until it is stable, and an idle replica probes a peer now
// and then (with exponential backoff) so that one that missed the end of the traffic still catches up.

func (r *Replica) tickRepair() {
	rt := uint64(r.cfg.RetransmitTimeout)
	if r.restored {
		r.restored = false
		r.sendFetch(true)
	}
	if !r.active && r.ownVC != nil && r.now >= r.vcResendAt {
		r.resend(Broadcast, r.ownVC)
		r.vcResendAt = r.now + rt
		r.stats.Retransmits++
	}
	if r.ownLatest != nil && r.now >= r.ckptAt {
		r.resend(Broadcast, r.ownLatest)
		r.ckptAt = r.now + rt
		r.stats.Retransmits++
	}
	if r.syncing && r.now >= r.stAt+r.timeout(r.cfg.RequestTimeout) {
		r.stats.StateTransfers-- // a repeat of the same request
		r.requestTransfer()
	}
	if r.syncDeadline != 0 && r.now >= r.syncDeadline {
		r.syncDeadline = 0
		if r.lastDelivered < r.stable.seq {
			r.requestTransfer()
		}
	}
	if r.now < r.fetchAt {
		return
	}
	stalled := r.highestSeen > r.lastDelivered && (r.now >= r.lastProgress+rt || r.lastDelivered < r.stable.seq)
	if stalled || r.missingBody() {
		r.retransmitOwn()
		r.sendFetch(false)
		r.fetchAt = r.now + rt
		if r.lastProgress < r.now-min(r.now, 8*rt) {
			// Eight rounds without progress: forget what others claimed to have executed (a faulty
			// replica may lie); real work announces itself again with new messages.
			r.highestSeen = max(r.lastDelivered, r.stable.seq)
			r.lastProgress = r.now
		}
		return
	}
	if r.now >= r.lastProgress+r.probeInterval && r.now >= r.probeAt {
		r.sendFetch(true)
		r.probeAt = r.now + r.probeInterval
		r.probeInterval = min(2*r.probeInterval, 64*rt)
	}
}

// missingBody reports whether the next sequence numbers to execute have a known digest but no body.
func (r *Replica) missingBody() bool {
	for seq := r.lastDelivered + 1; seq <= r.lastDelivered+uint64(r.cfg.FetchBatch); seq++ {
		s := r.slots[seq]
		if s == nil {
			continue
		}
		if s.committed && s.committedBatch() == nil {
			return true
		}
		if s.pp != nil && s.batch(s.digest) == nil {
			return true
		}
	}
	return false
}

// retransmitOwn resends this replica's messages for the stuck sequence numbers.
func (r *Replica) retransmitOwn() {
	for seq := r.lastDelivered + 1; seq <= r.lastDelivered+uint64(r.cfg.FetchBatch); seq++ {
		s := r.slots[seq]
		if s == nil || s.view != r.view || !r.active {
			continue
		}
		if r.primaryOf(s.view) == r.id && s.pp != nil {
			e := s.pp.WithoutBody()
			if b := s.batch(s.digest); b != nil {
				e.Body = b.body
			}
			r.resend(Broadcast, e)
		}
		if v := s.prepares[r.id]; v.env != nil {
			r.resend(Broadcast, v.env)
		}
		if v := s.commits[r.id]; v.env != nil {
			r.resend(Broadcast, v.env)
		}
		r.stats.Retransmits++
	}
}

// sendFetch asks the next peer in turn about the sequence numbers after the last delivered one (only the
// next one for a probe).
func (r *Replica) sendFetch(probe bool) {
	if r.n == 1 {
		return
	}
	r.fetchRot = (r.fetchRot + 1) % r.n
	if r.fetchRot == r.id {
		r.fetchRot = (r.fetchRot + 1) % r.n
	}
	r.sendFetchTo(r.fetchRot, probe)
}

// sendFetchTo asks replica to about the sequence numbers after the last delivered one (only the next one
// for a probe).
func (r *Replica) sendFetchTo(to int, probe bool) {
	f := &Fetch{View: r.view, Active: r.active, Executed: r.lastDelivered}
	last := r.lastDelivered + uint64(r.cfg.FetchBatch)
	if probe {
		last = r.lastDelivered + 1
	} else if h := max(r.highestSeen, r.lastDelivered+1); h < last {
		last = h
	}
	for seq := r.lastDelivered + 1; seq <= last; seq++ {
		it := FetchItem{Seq: seq, NeedBody: true}
		if s := r.slots[seq]; s != nil {
			switch {
			case s.committed:
				it.Digest = s.cert.digest
				it.NeedBody = s.committedBatch() == nil
			case s.pp != nil:
				it.Digest = s.digest
				it.NeedBody = s.batch(s.digest) == nil
			}
		}
		f.Items = append(f.Items, it)
	}
	e, err := r.sign(wire.KindFetch, f)
	if err != nil {
		return
	}
	r.stats.Fetches++
	r.send(to, e)
}

// Status exchange. Every StatusInterval ticks a replica multicasts where it is (a StatusReport). A replica that
// learns from one that it is behind (a later executed sequence number or stable checkpoint) fetches from
// that replica at once, at most once per RetransmitTimeout, instead of waiting for client traffic or for its
// idle probe, whose interval has grown while nothing happened; one in an older view is sent the NEW-VIEW it
// missed. So a replica that comes back to an idle network catches up within about a StatusInterval. Claims in
// a Status are only ever hints: the fetch replies carry certificates, and a sequence number claimed beyond
// the window is not believed (seen).

func (r *Replica) tickStatus() {
	if r.n == 1 || r.now < r.statusAt {
		return
	}
	r.statusAt = r.now + uint64(r.cfg.StatusInterval)
	e, err := r.sign(wire.KindStatus, &StatusReport{View: r.view, Active: r.active, Executed: r.lastDelivered,
		Stable: r.stable.seq, Tick: r.now})
	if err != nil {
		return
	}
	r.stats.StatusesSent++
	r.send(Broadcast, e)
}

func (r *Replica) onStatus(e *wire.Envelope, from int) error {
	st, err := DecodeStatusReport(e.Payload)
	if err != nil {
		return r.reject(e.Kind, ReasonMalformed, err)
	}
	if st.View < r.view || (st.View == r.view && !st.Active) {
		r.serveNewView(from)
	}
	if st.Executed > r.lastDelivered || st.Stable > r.stable.seq {
		r.seen(st.Executed)
		if r.now >= r.statusFetchAt {
			r.statusFetchAt = r.now + uint64(r.cfg.RetransmitTimeout)
			r.probeInterval = uint64(4 * r.cfg.RetransmitTimeout)
			r.stats.StatusFetches++
			r.sendFetchTo(from, false)
		}
	}
	return nil
}

// SetRetransmitTimeout changes RetransmitTimeout (ticks, at least 1) while the replica runs: a driver that
// measures round trips sets it above them, so that a slow network is not flooded with retransmissions.
func (r *Replica) SetRetransmitTimeout(ticks int) {
	r.cfg.RetransmitTimeout = max(1, ticks)
}

func (r *Replica) onFetch(e *wire.Envelope, from int) error {
	f, err := DecodeFetch(e.Payload)
	if err != nil {
		return r.reject(e.Kind, ReasonMalformed, err)
	}
	if r.fetchServed[from] == r.now && r.now != 0 {
		return r.reject(e.Kind, ReasonRateLimited, nil)
	}
	r.fetchServed[from] = r.now
	if f.View < r.view || (f.View == r.view && !f.Active) {
		r.serveNewView(from)
	}
	reply := &FetchReply{Executed: r.lastDelivered}
	if f.Executed < r.stable.seq {
		reply.Proof = r.stable.proof
	}
	budget := 2 * r.cfg.MaxBatchBytes
	for _, it := range f.Items {
		s := r.slots[it.Seq]
		if s == nil {
			s = r.tail[it.Seq]
		}
		if s == nil || it.Seq > r.high() {
			continue
		}
		fs := FetchedSlot{Seq: it.Seq}
		if b := s.committedBatch(); b != nil && len(b.body) <= budget {
			fs.Batch, fs.Cert = b.body, s.cert.commits
			budget -= len(b.body)
		} else {
			if it.NeedBody {
				d := it.Digest
				if d.IsZero() {
					d = s.digest
				}
				if b := s.batch(d); b != nil && len(b.body) <= budget {
					fs.Batch = b.body
					budget -= len(b.body)
				}
			}
			if s.pp != nil {
				fs.Messages = append(fs.Messages, s.pp)
			}
			if v := s.prepares[r.id]; v.env != nil {
				fs.Messages = append(fs.Messages, v.env)
			}
			if v := s.commits[r.id]; v.env != nil {
				fs.Messages = append(fs.Messages, v.env)
			}
		}
		if len(fs.Batch) > 0 || len(fs.Cert) > 0 || len(fs.Messages) > 0 {
			reply.Slots = append(reply.Slots, fs)
		}
	}
	if len(reply.Slots) == 0 && len(reply.Proof) == 0 && reply.Executed <= f.Executed {
		return nil
	}
	re, err := r.sign(wire.KindFetchReply, reply)
	if err != nil {
		return nil
	}
	r.send(from, re)
	return nil
}

func (r *Replica) onFetchReply(e *wire.Envelope, from int) error {
	fr, err := DecodeFetchReply(e.Payload)
	if err != nil {
		return r.reject(e.Kind, ReasonMalformed, err)
	}
	if len(fr.Proof) > 0 {
		c, err := DecodeCheckpoint(fr.Proof[0].Payload)
		if err != nil {
			return r.reject(e.Kind, ReasonBadCertificate, err)
		}
		if c.Seq > r.stable.seq && c.Seq <= r.high()+r.cfg.Window*64 {
			if err := r.checkCheckpointProof(c.Seq, c.Digest, fr.Proof); err != nil {
				return r.reject(e.Kind, ReasonBadCertificate, err)
			}
			r.onCertified(stableCheckpoint{seq: c.Seq, digest: c.Digest, proof: fr.Proof})
		}
	}
	r.seen(fr.Executed)
	for i := range fr.Slots {
		fs := &fr.Slots[i]
		if fs.Seq <= r.lastDelivered || !r.inCatchUp(fs.Seq) {
			continue
		}
		if len(fs.Cert) > 0 {
			view, digest, err := r.checkCommitCert(fs.Seq, fs.Cert)
			if err != nil {
				return r.reject(e.Kind, ReasonBadCertificate, err)
			}
			b, err := r.checkBatch(fs.Batch, digest, false)
			if err != nil {
				return r.reject(e.Kind, ReasonBadBatch, err)
			}
			r.commitByCert(fs.Seq, view, digest, b, fs.Cert)
			continue
		}
		if err := r.checkEmbeddedVotes(fs.Seq, fs.Messages); err != nil {
			return r.reject(e.Kind, ReasonBadCertificate, err)
		}
		hadPP := false
		for _, m := range fs.Messages {
			j, _ := r.member(m, m.Kind)
			if j == r.id {
				continue
			}
			if m.Kind == wire.KindPrePrepare {
				hadPP = true
				if len(fs.Batch) > 0 {
					m = m.WithoutBody()
					m.Body = fs.Batch
				}
			}
			_ = r.stepReplica(m, j)
		}
		if len(fs.Batch) > 0 && !hadPP {
			r.attachFetchedBody(fs.Seq, fs.Batch)
		}
	}
	return nil
}

// checkEmbeddedVotes checks that the messages of a fetched slot are pre-prepares, prepares or commits of
// replicas for that sequence number, with valid signatures.
func (r *Replica) checkEmbeddedVotes(seq uint64, msgs []*wire.Envelope) error {
	if len(msgs) > 3 {
		return errors.New("too many messages for one slot")
	}
	for _, m := range msgs {
		switch m.Kind {
		case wire.KindPrePrepare, wire.KindPrepare, wire.KindCommit:
		default:
			return fmt.Errorf("unexpected %s", m.Kind)
		}
		if _, err := r.member(m, m.Kind); err != nil {
			return err
		}
		var s uint64
		if m.Kind == wire.KindPrePrepare {
			p, err := DecodePrePrepare(m.Payload)
			if err != nil {
				return err
			}
			s = p.Seq
		} else {
			_, q, _, err := decodeVote(m)
			if err != nil {
				return err
			}
			s = q
		}
		if s != seq {
			return errors.New("message for another sequence number")
		}
	}
	return r.verifyEnvelopes(msgs)
}

// attachFetchedBody attaches a fetched body to the slot whose accepted digest it matches.
func (r *Replica) attachFetchedBody(seq uint64, body []byte) {
	s := r.slots[seq]
	if s == nil {
		return
	}
	for _, d := range []wire.Digest{s.digest, r.certDigest(s)} {
		if d.IsZero() || s.batch(d) != nil {
			continue
		}
		if b, err := r.checkBatch(body, d, false); err == nil {
			r.attachBatch(s, b)
			return
		}
	}
}

func (r *Replica) certDigest(s *slot) wire.Digest {
	if s.cert != nil {
		return s.cert.digest
	}
	return wire.Digest{}
}

// checkCommitCert checks a commit certificate for seq: its structure (CheckCommitCert: a quorum of COMMITs
// from distinct replicas for one view and digest), then the signatures.
func (r *Replica) checkCommitCert(seq uint64, cert []*wire.Envelope) (uint64, wire.Digest, error) {
	view, digest, err := CheckCommitCert(r.set, seq, cert)
	if err != nil {
		return 0, digest, err
	}
	if err := r.verifyEnvelopes(cert); err != nil {
		return 0, digest, err
	}
	return view, digest, nil
}

// inCatchUp reports whether a commit certificate for seq may be used: inside the window, or below it while
// catching up to the stable checkpoint (a certified batch needs no votes; the range is bounded).
func (r *Replica) inCatchUp(seq uint64) bool {
	return seq > r.lastDelivered && (r.inWindow(seq) || seq <= r.lastDelivered+2*r.cfg.Window)
}

// commitByCert commits a slot on the strength of a commit certificate.
func (r *Replica) commitByCert(seq, view uint64, digest wire.Digest, b *batch, cert []*wire.Envelope) {
	if seq <= r.lastDelivered || !r.inCatchUp(seq) {
		return
	}
	s := r.slotFor(seq)
	if s.committed {
		if s.cert.digest != digest {
			r.stats.SafetyAlarms++ // two commit certificates for one sequence number
		} else if s.batch(digest) == nil {
			r.attachBatch(s, b)
		}
		return
	}
	s.addBatch(b)
	s.markCertified(view, digest, cert)
	r.out.Quorums = append(r.out.Quorums, QuorumEvent{View: view, Seq: seq, Committed: true})
	r.stats.CertCommits++
	r.stats.CommittedBatches++
	r.persist(Entry{Seq: seq, Batch: b.body, Cert: cert})
}
