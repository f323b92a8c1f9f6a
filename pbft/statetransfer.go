package pbft

import (
	"fmt"

	"github.com/p2pbft/p2pbft/wire"
)

// State transfer (docs/design/pbft.md row 11). A replica that is behind a certified checkpoint (it sees a stable
// checkpoint above what it executed, a NEW-VIEW starts above it, it restarts behind, or its own checkpoint
// contradicts the certified one) puts a StateTransfer in Ready. The driver then either
//
//   - fetches a snapshot at StateTransfer.Seq (the application state plus the client table a peer's core
//     exported in HardState.Snapshot), checks it with CheckSnapshot, installs the application part and
//     calls InstallSnapshot; or
//   - fetches the committed blocks after StateTransfer.Applied and hands each in with ApplyCommitted, in
//     order, executing them like any committed batch.
//
// Both are checked against the certified checkpoint: a snapshot by its digest, a block by its commit
// certificate. The replica keeps ordering requests meanwhile; it only cannot execute past the gap.

// CheckSnapshot checks, without changing anything, that a snapshot matches the certified checkpoint the
// replica is syncing to, or one of the few stable checkpoints before it that is still above what the
// replica executed (a transfer under load may take longer than a checkpoint interval; see
// InstallSnapshot). The driver calls it before installing the application state.
func (r *Replica) CheckSnapshot(seq uint64, appDigest wire.Digest, clientTable []byte) error {
	if r.lastExecuted >= r.stable.seq {
		return ErrNotSyncing
	}
	want, ok := r.certifiedDigest(seq)
	if !ok || seq <= r.lastExecuted {
		return fmt.Errorf("pbft: snapshot at %d: %w (the replica syncs to %d)", seq, ErrStale, r.stable.seq)
	}
	snap := Snapshot{Seq: seq, AppDigest: appDigest, ClientTable: clientTable}
	if snap.Digest() != want {
		return fmt.Errorf("pbft: snapshot at %d: %w", seq, ErrSnapshotMismatch)
	}
	if _, err := DecodeClientTable(clientTable); err != nil {
		return err
	}
	return nil
}

// InstallSnapshot installs the core's part of a snapshot the driver installed in the application: the
// replica continues from seq. It returns an error (and changes nothing) if the snapshot does not match the
// certified checkpoint; the driver should then try another peer. A snapshot of a recent stable checkpoint
// below the current one (CheckSnapshot) is installed too: the replica then catches up from it to the
// stable checkpoint, by fetching the committed batches or, if that is far, with a new StateTransfer
// (whose Applied is seq: the driver fetches blocks).
func (r *Replica) InstallSnapshot(seq uint64, appDigest wire.Digest, clientTable []byte) error {
	if err := r.CheckSnapshot(seq, appDigest, clientTable); err != nil {
		return err
	}
	ct, err := clientTableFrom(clientTable)
	if err != nil {
		return err
	}
	snap := &Snapshot{Seq: seq, AppDigest: appDigest, ClientTable: clientTable}
	r.clients = ct
	r.lastDelivered, r.lastExecuted, r.appDigest = seq, seq, appDigest
	r.delivered = nil
	if seq == r.stable.seq {
		r.holdState(snap)
	} else {
		// A recent certified checkpoint below the stable one: hold its state as a restarted replica
		// would, then catch up to the stable checkpoint (fetching, or another transfer, by blocks).
		r.snapshot = snap
		r.hsDirty = true
		r.truncate = seq
		r.syncing = false
		r.syncDeadline = 0
	}
	for k := range r.slots {
		if k <= seq {
			delete(r.slots, k)
		}
	}
	r.lastProgress = r.now
	r.stats.SnapshotsInstalled++
	for c, pr := range r.pending.byClient {
		if ce := ct.get(c); ce != nil && ClassifyRequest(pr.req.ts, ce.execTS) != RequestNew {
			r.pending.remove(pr)
			r.requestExecuted(pr.req.id)
		}
	}
	if r.lastDelivered < r.stable.seq {
		r.catchUpOrTransfer()
	}
	r.afterInput()
	return nil
}

// ApplyCommitted hands in a committed batch the driver fetched from a peer (a block: the batch's request
// envelopes in order and its commit certificate). The core checks the certificate and the batch digest. A
// batch above the stable checkpoint commits its slot (and is delivered in order through Ready); one at or
// below it (catching up to the checkpoint after a StateTransfer) must be the next to execute and is
// delivered at once. Either way it comes out in Ready.Committed for the driver to execute and report.
func (r *Replica) ApplyCommitted(seq uint64, reqs []*wire.Envelope, cert []*wire.Envelope) error {
	if seq <= r.lastDelivered {
		return fmt.Errorf("pbft: apply committed %d: %w (delivered up to %d)", seq, ErrStale, r.lastDelivered)
	}
	if err := checkEnvelopes(cert); err != nil {
		return fmt.Errorf("pbft: apply committed %d: certificate: %w", seq, err)
	}
	view, digest, err := r.checkCommitCert(seq, cert)
	if err != nil {
		return fmt.Errorf("pbft: apply committed %d: %w", seq, err)
	}
	if err := checkEnvelopes(reqs); err != nil {
		return fmt.Errorf("pbft: apply committed %d: batch: %w", seq, err)
	}
	body, err := EncodeBatch(reqs)
	if err != nil {
		return err
	}
	b, err := r.checkBatch(body, digest, false)
	if err != nil {
		return fmt.Errorf("pbft: apply committed %d: %w", seq, err)
	}
	if seq > r.stable.seq {
		if !r.inWindow(seq) {
			return fmt.Errorf("pbft: apply committed %d: beyond the window (%d, %d]", seq, r.stable.seq, r.high())
		}
		r.commitByCert(seq, view, digest, b, cert)
		r.afterInput()
		return nil
	}
	if seq != r.lastDelivered+1 {
		return fmt.Errorf("pbft: apply committed %d: below the stable checkpoint, batches go in order (next is %d)", seq, r.lastDelivered+1)
	}
	r.persist(Entry{Seq: seq, Batch: b.body, Cert: cert})
	r.stats.CertCommits++
	r.deliver(seq, &commitCert{view: view, digest: digest, commits: cert}, b, false)
	r.afterInput()
	return nil
}

// LearnCheckpoint hands the core a checkpoint proof the driver got from a peer (a quorum of CHECKPOINT
// envelopes for one sequence number and digest), for example with a snapshot newer than the one a
// StateTransfer asked for. The core checks it and, if it is newer than its stable checkpoint, moves to it;
// if the replica lacks that state, the next Ready carries a StateTransfer for it.
func (r *Replica) LearnCheckpoint(proof []*wire.Envelope) error {
	if len(proof) == 0 {
		return fmt.Errorf("pbft: learn checkpoint: empty proof")
	}
	if err := checkEnvelopes(proof); err != nil {
		return fmt.Errorf("pbft: learn checkpoint: %w", err)
	}
	c, err := DecodeCheckpoint(proof[0].Payload)
	if err != nil {
		return fmt.Errorf("pbft: learn checkpoint: %w", err)
	}
	if c.Seq <= r.stable.seq {
		return fmt.Errorf("pbft: learn checkpoint %d: %w (stable is %d)", c.Seq, ErrStale, r.stable.seq)
	}
	if err := r.checkCheckpointProof(c.Seq, c.Digest, proof); err != nil {
		return fmt.Errorf("pbft: learn checkpoint %d: %w", c.Seq, err)
	}
	r.onCertified(stableCheckpoint{seq: c.Seq, digest: c.Digest, proof: proof})
	if r.lastDelivered < r.stable.seq && !r.syncing {
		// The driver is transferring state: do not wait for the catch-up grace period.
		r.requestTransfer()
	}
	r.afterInput()
	return nil
}
