package pbft

import (
	"github.com/p2pbft/p2pbft/wire"
)

// Checkpoints and garbage collection (docs/design/pbft.md rows 9-10). After executing a multiple of K a replica signs
// CHECKPOINT(seq, digest) with digest = CheckpointDigest(seq, app digest, client table digest). A quorum of
// matching checkpoints from distinct replicas makes it stable: the low watermark h moves to seq, the window
// to (h, h+L], and everything at or below seq is discarded, keeping the proof. A replica that learns a stable
// checkpoint it has not reached asks for a state transfer.

func (r *Replica) takeCheckpoint(seq uint64) {
	table, err := r.clients.encode()
	if err != nil {
		return
	}
	snap := &Snapshot{Seq: seq, AppDigest: r.appDigest, ClientTable: table}
	d := snap.Digest()
	switch {
	case seq > r.stable.seq:
		r.ownCkpts[seq] = &ownCkpt{snap: snap, digest: d}
		e, err := r.sign(wire.KindCheckpoint, &Checkpoint{Seq: seq, Digest: d})
		if err != nil {
			return
		}
		r.persist(Entry{Seq: seq, Env: e})
		r.send(Broadcast, e)
		r.ownLatest = e
		r.ckptAt = r.now + uint64(r.cfg.RetransmitTimeout)
		_ = r.addCheckpointVote(r.id, seq, d, e)
		r.checkStable(seq, d)
	case seq == r.stable.seq:
		// Reached the stable checkpoint after it became stable (slow execution, catching up, or blocks
		// fetched for a state transfer): now this replica holds its state.
		if d != r.stable.digest {
			r.diverged()
			return
		}
		r.holdState(snap)
	}
}

// holdState records that the replica holds the state of the stable checkpoint: it becomes the snapshot a
// restart starts from, and the log below it can go.
func (r *Replica) holdState(snap *Snapshot) {
	r.ownCkpts[snap.Seq] = &ownCkpt{snap: snap, digest: r.stable.digest}
	r.snapshot = snap
	r.hsDirty = true
	r.truncate = snap.Seq
	r.syncing = false
	r.syncDeadline = 0
}

// diverged handles an own checkpoint that contradicts the certified one: this replica's state cannot be
// trusted, so it fetches the certified state.
func (r *Replica) diverged() {
	r.stats.Divergences++
	delete(r.ownCkpts, r.stable.seq)
	r.requestTransfer()
}

func (r *Replica) onCheckpoint(e *wire.Envelope, from int) error {
	c, err := DecodeCheckpoint(e.Payload)
	if err != nil {
		return r.reject(e.Kind, ReasonMalformed, err)
	}
	if c.Seq%r.cfg.CheckpointInterval != 0 {
		return r.reject(e.Kind, ReasonBadCheckpoint, nil)
	}
	if c.Seq <= r.stable.seq {
		return r.reject(e.Kind, ReasonStaleView, nil)
	}
	r.seen(c.Seq)
	env := e.WithoutBody()
	if err := r.addCheckpointVote(from, c.Seq, c.Digest, env); err != nil {
		return err
	}
	r.vcache.AddEnvelope(e)
	r.persist(Entry{Seq: c.Seq, Env: env})
	r.checkStable(c.Seq, c.Digest)
	return nil
}

// maxCertified bounds the stable checkpoints remembered for state transfer (certified): with the default
// interval of 32 that is the last 512 sequence numbers (a few seconds under load).
const maxCertified = 16

type certifiedCheckpoint struct {
	seq    uint64
	digest wire.Digest
}

func (r *Replica) rememberCertified(seq uint64, d wire.Digest) {
	if n := len(r.certified); n > 0 && r.certified[n-1].seq >= seq {
		return
	}
	if len(r.certified) == maxCertified {
		copy(r.certified, r.certified[1:])
		r.certified = r.certified[:maxCertified-1]
	}
	r.certified = append(r.certified, certifiedCheckpoint{seq: seq, digest: d})
}

// certifiedDigest returns the certified digest of the checkpoint at seq, if it is one of the latest
// stable checkpoints.
func (r *Replica) certifiedDigest(seq uint64) (wire.Digest, bool) {
	if seq == r.stable.seq {
		return r.stable.digest, true
	}
	for _, c := range r.certified {
		if c.seq == seq {
			return c.digest, true
		}
	}
	return wire.Digest{}, false
}

// maxCheckpointVotes bounds the checkpoints kept per replica above the stable one: the window holds L/K of
// them, and a lagging replica must still see a few beyond it to learn that it lags.
func (r *Replica) maxCheckpointVotes() int { return int(r.cfg.Window/r.cfg.CheckpointInterval) + 2 }

func (r *Replica) addCheckpointVote(from int, seq uint64, d wire.Digest, e *wire.Envelope) error {
	vs := r.ckptVotes[from]
	for _, v := range vs {
		if v.seq == seq {
			if v.digest != d {
				return r.reject(wire.KindCheckpoint, ReasonEquivocation, nil)
			}
			return r.reject(wire.KindCheckpoint, ReasonDuplicate, nil)
		}
	}
	vs = append(vs, ckptVote{seq: seq, digest: d, env: e})
	if len(vs) > r.maxCheckpointVotes() {
		lo := 0
		for i := range vs {
			if vs[i].seq < vs[lo].seq {
				lo = i
			}
		}
		vs = append(vs[:lo], vs[lo+1:]...)
	}
	r.ckptVotes[from] = vs
	return nil
}

func (r *Replica) checkStable(seq uint64, d wire.Digest) {
	var proof []*wire.Envelope
	for i := range r.ckptVotes {
		for _, v := range r.ckptVotes[i] {
			if v.seq == seq && v.digest == d {
				proof = append(proof, v.env)
			}
		}
	}
	if len(proof) >= r.quorum.Commit() {
		r.onCertified(stableCheckpoint{seq: seq, digest: d, proof: proof[:r.quorum.Commit()]})
	}
}

// onCertified moves the low watermark to a checkpoint a quorum certified (from checkpoint messages, a
// NEW-VIEW or a fetch reply), and sees to the state: a replica that has it keeps it as its snapshot; one that
// is a little behind catches up through the normal protocol and fetched commit certificates for a few
// retransmission periods; one far behind, or still behind after that, asks for a state transfer (docs/design/pbft.md
// pitfall 5: the watermarks never move without the state following).
func (r *Replica) onCertified(c stableCheckpoint) {
	if c.seq <= r.stable.seq {
		return
	}
	r.moveStable(c)
	switch own := r.ownCkpts[c.seq]; {
	case own != nil && own.digest == c.digest:
		r.holdState(own.snap)
	case own != nil:
		r.diverged()
	default:
		r.catchUpOrTransfer()
	}
}

// catchUpOrTransfer decides how a replica that lacks the stable checkpoint's state gets it.
func (r *Replica) catchUpOrTransfer() {
	switch {
	case r.lastDelivered >= r.stable.seq:
		// Executed(stable) is on its way; takeCheckpoint compares then.
	case r.syncing || r.stable.seq > r.lastDelivered+2*r.cfg.Window:
		r.requestTransfer()
	case r.syncDeadline == 0 && !r.syncing:
		r.syncDeadline = r.now + 3*uint64(r.cfg.RetransmitTimeout)
		r.fetchAt = r.now
	}
}

// requestTransfer asks the driver for the state at the stable checkpoint.
func (r *Replica) requestTransfer() {
	r.syncing = true
	r.syncDeadline = 0
	r.stAt = r.now
	r.stats.StateTransfers++
	r.out.StateTransfer = &StateTransfer{Seq: r.stable.seq, Digest: r.stable.digest, Proof: r.stable.proof, Applied: r.lastExecuted}
}

// moveStable makes c the stable checkpoint: the window moves to (c, c+L] and everything at or below c is
// discarded, except committed batches not delivered yet (still to execute) and the delivered ones of the
// last window (kept to serve peers that lag).
func (r *Replica) moveStable(c stableCheckpoint) {
	r.stable = c
	r.rememberCertified(c.seq, c.digest)
	r.hsDirty = true
	r.stats.StableCheckpoints++
	for k, s := range r.slots {
		if k > c.seq {
			continue
		}
		switch {
		case k <= r.lastDelivered:
			delete(r.slots, k)
			if s.committedBatch() != nil {
				r.tail[k] = s
			}
		case !s.committed || k > r.lastDelivered+2*r.cfg.Window:
			delete(r.slots, k)
		}
	}
	for k := range r.tail {
		if k+r.cfg.Window <= c.seq {
			delete(r.tail, k)
		}
	}
	for i, vs := range r.ckptVotes {
		kept := vs[:0]
		for _, v := range vs {
			if v.seq > c.seq {
				kept = append(kept, v)
			}
		}
		r.ckptVotes[i] = kept
	}
	for k := range r.ownCkpts {
		if k < c.seq {
			delete(r.ownCkpts, k)
		}
	}
	if r.ownLatest != nil {
		if cp, err := DecodeCheckpoint(r.ownLatest.Payload); err == nil && cp.Seq <= c.seq {
			r.ownLatest = nil
		}
	}
	r.highestSeen = max(r.highestSeen, c.seq)
	r.nextSeq = max(r.nextSeq, c.seq+1)
}

// checkCheckpointProof checks that proof certifies (seq, d): its structure (CheckCheckpointProof: a quorum
// of CHECKPOINT envelopes from distinct replicas), then the signatures.
func (r *Replica) checkCheckpointProof(seq uint64, d wire.Digest, proof []*wire.Envelope) error {
	if err := CheckCheckpointProof(r.set, r.cfg.CheckpointInterval, seq, d, proof); err != nil {
		return err
	}
	return r.verifyEnvelopes(proof)
}
