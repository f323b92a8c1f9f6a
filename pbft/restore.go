package pbft

import (
	"errors"
	"fmt"

	"github.com/p2pbft/p2pbft/wire"
)

// Crash recovery (docs/design/pbft.md row 18). Everything a replica promised is in the log before the message carrying
// the promise leaves (Ready's order): its pre-prepares, prepares, commits and checkpoints, the votes of others
// it acted on, its VIEW-CHANGE and the NEW-VIEW it entered (in HardState). Restart rebuilds the slots from the
// log in order, so a restarted replica holds the same pre-prepares and sent the same votes, never signs a
// different one for the same slot, and resends its stored VIEW-CHANGE rather than signing a new one.
//
// The application's durable position `applied` (the node persists blocks and application state atomically)
// decides what happens to execution: batches above the checkpoint snapshot up to applied come out of Ready
// with AlreadyApplied set (not to be executed again; the driver reports their stored results so that the
// core rebuilds its client table), later committed batches are delivered normally, and if the application
// is behind the stable checkpoint the replica asks for a state transfer.

// ErrAppBehind is returned by Restart when the application is behind the checkpoint whose state the core
// persisted: the driver reported Executed before the application state was durable.
var ErrAppBehind = errors.New("application behind the persisted checkpoint")

// Restart rebuilds a replica from what its Readys told the driver to persist, and the last sequence number
// the application durably applied. A nil p starts from the genesis state (like New).
func Restart(cfg Config, p *Persisted, applied uint64) (*Replica, error) {
	r, err := newReplica(cfg)
	if err != nil {
		return nil, err
	}
	if p == nil {
		if applied != 0 {
			return nil, fmt.Errorf("pbft: restart: applied %d but no persisted state: %w", applied, ErrAppBehind)
		}
		return r, nil
	}
	hs := &p.HardState
	if err := r.restoreHardState(hs); err != nil {
		return nil, fmt.Errorf("pbft: restart: %w", err)
	}
	snapSeq := r.snapshot.Seq
	if applied < snapSeq {
		return nil, fmt.Errorf("pbft: restart: application applied %d, core state is at %d: %w", applied, snapSeq, ErrAppBehind)
	}
	for i := range p.Entries {
		if err := r.restoreEntry(&p.Entries[i], snapSeq); err != nil {
			return nil, fmt.Errorf("pbft: restart: entry %d: %w", i, err)
		}
	}
	for seq := snapSeq + 1; seq <= applied; seq++ {
		s := r.slots[seq]
		if s == nil || s.committedBatch() == nil {
			return nil, fmt.Errorf("pbft: restart: application applied %d but the log lacks committed batch %d", applied, seq)
		}
		r.deliver(seq, s.cert, s.committedBatch(), true)
		s.delivered = true
	}
	// Slots at or below the stable checkpoint were kept for the replay above, or to deliver.
	for seq, s := range r.slots {
		if seq <= r.stable.seq && (seq <= applied || !s.committed || seq > applied+2*r.cfg.Window) {
			delete(r.slots, seq)
		}
	}
	for seq := range r.slots {
		r.highestSeen = max(r.highestSeen, seq)
	}
	r.lastProgress = 0
	r.restored = true
	if r.active {
		r.startRequestTimer()
	} else if r.ownVC != nil {
		r.resend(Broadcast, r.ownVC)
		r.vcResendAt = uint64(r.cfg.RetransmitTimeout)
	}
	r.tryDeliver()
	if r.lastDelivered < r.stable.seq {
		r.catchUpOrTransfer()
	}
	return r, nil
}

func (r *Replica) restoreHardState(hs *HardState) error {
	r.view = hs.View
	r.active = hs.Active || hs.View == 0
	if hs.StableSeq > 0 {
		if err := r.checkCheckpointProof(hs.StableSeq, hs.StableDigest, hs.StableProof); err != nil {
			return fmt.Errorf("stable checkpoint: %w", err)
		}
	}
	r.stable = stableCheckpoint{seq: hs.StableSeq, digest: hs.StableDigest, proof: hs.StableProof}
	if hs.StableSeq > 0 {
		r.rememberCertified(hs.StableSeq, hs.StableDigest)
	}
	r.nextSeq = r.stable.seq + 1
	if s := hs.Snapshot; s != nil && (s.Seq > 0 || len(s.ClientTable) > 0) {
		if s.Seq > r.stable.seq {
			return fmt.Errorf("snapshot at %d above the stable checkpoint %d", s.Seq, r.stable.seq)
		}
		ct, err := clientTableFrom(s.ClientTable)
		if err != nil {
			return err
		}
		r.clients = ct
		r.snapshot = s
		r.lastDelivered, r.lastExecuted, r.appDigest = s.Seq, s.Seq, s.AppDigest
		r.ownCkpts[s.Seq] = &ownCkpt{snap: s, digest: s.Digest()}
	}
	if r.active {
		r.newViewEnv = hs.NewView
	} else if hs.ViewChange != nil {
		// In a view change with its own VIEW-CHANGE. (Without one it followed the view change silently,
		// below its signed mark: see startViewChange.)
		vc, err := DecodeViewChange(hs.ViewChange.Payload)
		if err != nil {
			return err
		}
		r.ownVC = hs.ViewChange
		r.latestVC[r.id] = &vcInfo{view: vc.View, id: hs.ViewChange.ID(), env: hs.ViewChange, vc: vc}
	}
	return nil
}

// restoreEntry applies one log entry to the slots, as the replica did when it appended it.
func (r *Replica) restoreEntry(e *Entry, snapSeq uint64) error {
	if e.Seq <= snapSeq {
		return nil
	}
	switch {
	case e.Env != nil:
		return r.restoreMessage(e.Seq, e.Env)
	case e.Cert != nil:
		view, digest, err := r.checkCommitCert(e.Seq, e.Cert)
		if err != nil {
			return err
		}
		b, err := r.checkBatch(e.Batch, digest, false)
		if err != nil {
			return err
		}
		s := r.restoreSlot(e.Seq)
		s.addBatch(b)
		if !s.committed {
			s.markCertified(view, digest, e.Cert)
		}
	default:
		b, err := r.parseBatch(e.Batch)
		if err != nil {
			return err
		}
		if s := r.slots[e.Seq]; s != nil {
			s.addBatch(b)
		}
	}
	return nil
}

func (r *Replica) restoreMessage(seq uint64, env *wire.Envelope) error {
	from, ok := r.keys[string(env.Author)]
	if !ok || env.ChainID != r.cfg.ChainID {
		return errors.New("message not from a replica of this chain")
	}
	r.vcache.AddEnvelope(env)
	switch env.Kind {
	case wire.KindPrePrepare:
		p, err := DecodePrePrepare(env.Payload)
		if err != nil {
			return err
		}
		s := r.restoreSlot(p.Seq)
		if p.View < s.view {
			return nil
		}
		s.advance(p.View)
		if s.pp == nil {
			s.pp, s.digest = env.WithoutBody(), p.Digest
		}
		if len(env.Body) > 0 {
			b, err := r.checkBatch(env.Body, p.Digest, false)
			if err != nil {
				return err
			}
			s.addBatch(b)
		}
		if from == r.id && p.View == r.view {
			r.nextSeq = max(r.nextSeq, p.Seq+1)
		}
		r.restoreEval(s)
	case wire.KindPrepare, wire.KindCommit:
		view, s0, d, err := decodeVote(env)
		if err != nil {
			return err
		}
		s := r.restoreSlot(s0)
		if view < s.view {
			return nil
		}
		s.advance(view)
		if env.Kind == wire.KindPrepare {
			s.prepares[from] = vote{env: env, digest: d}
			if from == r.id {
				s.sentPrepare = true
			}
		} else {
			s.commits[from] = vote{env: env, digest: d}
			if from == r.id {
				s.sentCommit = true
			}
		}
		r.restoreEval(s)
	case wire.KindCheckpoint:
		c, err := DecodeCheckpoint(env.Payload)
		if err != nil {
			return err
		}
		if c.Seq > r.stable.seq {
			_ = r.addCheckpointVote(from, c.Seq, c.Digest, env)
			if from == r.id {
				r.ownLatest = env
			}
		}
	default:
		return fmt.Errorf("unexpected %s in the log", env.Kind)
	}
	_ = seq
	return nil
}

// restoreEval recomputes a restored slot's prepared and committed state with the normal case's predicates,
// without sending anything (the own votes that followed are in the log too). A restored slot commits only
// once its own COMMIT is replayed: the normal case sends that COMMIT on preparing, before it can commit.
func (r *Replica) restoreEval(s *slot) {
	if s.reachesPrepared(r.quorum) {
		s.markPrepared(r.quorum)
	}
	if s.sentCommit && s.reachesCommitted(r.quorum) {
		s.markCommitted(r.quorum)
	}
}

// restoreSlot returns the slot for seq, creating it at view 0: the log replays views in order.
func (r *Replica) restoreSlot(seq uint64) *slot {
	s := r.slots[seq]
	if s == nil {
		s = newSlot(seq, r.n, 0)
		r.slots[seq] = s
	}
	return s
}
