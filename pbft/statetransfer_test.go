package pbft

import (
	"errors"
	"testing"

	"github.com/p2pbft/p2pbft/wire"
)

// runLoad commits `batches` single-request batches while replica `out` is cut off.
func runLoad(tn *tnet, out int, batches int) {
	tn.filter = silence(out)
	for c := 0; c < batches; c++ {
		_ = tn.propose(0, tn.request(100+c, 1, "x"))
		tn.run()
	}
	tn.filter = nil
}

// Row 11 and pitfall 5: a replica far behind a stable checkpoint asks for a state transfer; a snapshot that
// does not match the certified digest is refused; the right one is installed and the replica catches up.
func TestStateTransferBySnapshot(t *testing.T) {
	tn := newNet(t, 4, func(c *Config) { c.MaxBatchRequests = 1 })
	runLoad(tn, 3, 14)
	// Replica 3 learns the stable checkpoint from the next checkpoint messages.
	_ = tn.propose(0, tn.request(1, 1, "x"))
	tn.run()
	for k := 0; k < 60 && tn.xfers[3] == nil; k++ {
		tn.tick(1)
	}
	st := tn.xfers[3]
	if st == nil || tn.reps[3].Status().Status != StatusSyncing {
		t.Fatalf("no state transfer asked: %+v", tn.reps[3].Status())
	}
	if st.Seq <= tn.reps[3].lastExecuted || len(st.Proof) < 3 {
		t.Fatalf("state transfer %+v", st)
	}
	src := tn.stores[1].hs.Snapshot
	if src.Seq != st.Seq {
		// replica 1 moved on: take its state from the checkpoint the transfer names
		t.Fatalf("source snapshot at %d, transfer at %d", src.Seq, st.Seq)
	}
	bad := append(append([]byte(nil), src.ClientTable...), 0)
	if err := tn.reps[3].InstallSnapshot(st.Seq, src.AppDigest, bad); !errors.Is(err, ErrSnapshotMismatch) {
		t.Fatalf("tampered snapshot: %v", err)
	}
	if err := tn.reps[3].InstallSnapshot(st.Seq, wire.Digest{1}, src.ClientTable); !errors.Is(err, ErrSnapshotMismatch) {
		t.Fatalf("wrong app digest: %v", err)
	}
	tn.apps[3].applied, tn.apps[3].digest = st.Seq, src.AppDigest
	if err := tn.reps[3].InstallSnapshot(st.Seq, src.AppDigest, src.ClientTable); err != nil {
		t.Fatal(err)
	}
	tn.drain(3)
	tn.tick(20)
	if tn.reps[3].Status().Status != StatusNormal || tn.executed(3) != tn.executed(1) {
		t.Fatalf("after the transfer: %+v, executed %d vs %d", tn.reps[3].Status(), tn.executed(3), tn.executed(1))
	}
	if err := tn.reps[3].InstallSnapshot(st.Seq, src.AppDigest, src.ClientTable); !errors.Is(err, ErrNotSyncing) {
		t.Fatalf("install when not syncing: %v", err)
	}
	tn.checkAgreement()
}

// Row 11: the driver may catch up with committed blocks instead: each is checked against its commit
// certificate; a forged certificate is refused.
func TestStateTransferByBlocks(t *testing.T) {
	tn := newNet(t, 4, func(c *Config) { c.MaxBatchRequests = 1 })
	runLoad(tn, 3, 14)
	_ = tn.propose(0, tn.request(1, 1, "x"))
	tn.run()
	for k := 0; k < 60 && tn.xfers[3] == nil; k++ {
		tn.tick(1)
	}
	st := tn.xfers[3]
	if st == nil {
		t.Fatal("no state transfer asked")
	}
	blocks := map[uint64]CommittedBatch{}
	for _, cb := range tn.commits[1] {
		blocks[cb.Seq] = cb
	}
	b := blocks[st.Applied+1]
	forged := append([]*wire.Envelope(nil), b.Cert...)
	e := *forged[0]
	e.Sig = append([]byte(nil), e.Sig...)
	e.Sig[0] ^= 1
	forged[0] = &e
	if err := tn.reps[3].ApplyCommitted(b.Seq, b.Batch, forged); err == nil {
		t.Fatal("forged commit certificate accepted")
	}
	if err := tn.reps[3].ApplyCommitted(b.Seq, blocks[st.Applied+2].Batch, b.Cert); err == nil {
		t.Fatal("batch that does not match its certificate accepted")
	}
	if err := tn.reps[3].ApplyCommitted(b.Seq+1, blocks[b.Seq+1].Batch, blocks[b.Seq+1].Cert); err == nil {
		t.Fatal("block out of order below the checkpoint accepted")
	}
	for seq := st.Applied + 1; seq <= st.Seq; seq++ {
		if seq <= tn.reps[3].lastDelivered {
			continue
		}
		if err := tn.reps[3].ApplyCommitted(seq, blocks[seq].Batch, blocks[seq].Cert); err != nil {
			t.Fatalf("block %d: %v", seq, err)
		}
		tn.drain(3)
	}
	if tn.reps[3].Status().Status != StatusNormal || tn.reps[3].snapshot.Seq != st.Seq {
		t.Fatalf("after the blocks: %+v snapshot %d", tn.reps[3].Status(), tn.reps[3].snapshot.Seq)
	}
	tn.tick(20)
	if tn.executed(3) != tn.executed(1) {
		t.Fatalf("executed %d vs %d", tn.executed(3), tn.executed(1))
	}
	tn.checkAgreement()
}

// Pitfall 5: a replica a little behind catches up by itself through fetched commit certificates, without a
// state transfer.
func TestCatchUpByFetch(t *testing.T) {
	tn := newNet(t, 4, func(c *Config) { c.MaxBatchRequests = 1; c.CheckpointInterval = 8 })
	runLoad(tn, 3, 5)
	_ = tn.propose(0, tn.request(1, 1, "x"))
	tn.run()
	tn.tick(30)
	if tn.xfers[3] != nil {
		t.Fatal("asked for a state transfer for a small gap")
	}
	if tn.executed(3) != tn.executed(1) || tn.reps[3].stats.CertCommits == 0 {
		t.Fatalf("executed %d vs %d, certificate commits %d", tn.executed(3), tn.executed(1), tn.reps[3].stats.CertCommits)
	}
	tn.checkAgreement()
}

// An idle replica that missed the end of the traffic still catches up: its probes find what it missed.
func TestIdleReplicaCatchesUp(t *testing.T) {
	tn := newNet(t, 4, func(c *Config) { c.CheckpointInterval = 16 })
	runLoad(tn, 3, 3)
	tn.tick(200)
	if tn.executed(3) != 3 {
		t.Fatalf("idle lagging replica executed %d of 3", tn.executed(3))
	}
}

// The driver may hand in a newer checkpoint proof it got with a snapshot; the core checks it and retargets.
func TestLearnCheckpoint(t *testing.T) {
	tn := newNet(t, 4, func(c *Config) { c.MaxBatchRequests = 1 })
	runLoad(tn, 3, 14)
	proof := tn.reps[1].stable.proof
	forged := append([]*wire.Envelope(nil), proof...)
	e := *forged[0]
	e.Sig = append([]byte(nil), e.Sig...)
	e.Sig[3] ^= 1
	forged[0] = &e
	if err := tn.reps[3].LearnCheckpoint(forged); err == nil {
		t.Fatal("forged proof accepted")
	}
	if err := tn.reps[3].LearnCheckpoint(proof[:2]); err == nil {
		t.Fatal("proof below a quorum accepted")
	}
	if err := tn.reps[3].LearnCheckpoint(proof); err != nil {
		t.Fatal(err)
	}
	tn.drain(3)
	if tn.reps[3].stable.seq != tn.reps[1].stable.seq || tn.xfers[3] == nil || tn.xfers[3].Seq != tn.reps[1].stable.seq {
		t.Fatalf("stable %d, transfer %+v", tn.reps[3].stable.seq, tn.xfers[3])
	}
	if err := tn.reps[3].LearnCheckpoint(proof); !errors.Is(err, ErrStale) {
		t.Fatalf("same proof again: %v", err)
	}
}

// Row 11 under load: the checkpoint a transfer started for may stop being the stable one before the
// snapshot arrives (a transfer can take longer than a checkpoint interval). A snapshot of a recent stable
// checkpoint still above what the replica executed is installed, and the replica catches up from it; a
// snapshot of a sequence number that was never a stable checkpoint is refused as stale.
func TestStateTransferToOlderCertifiedCheckpoint(t *testing.T) {
	tn := newNet(t, 4, func(c *Config) { c.MaxBatchRequests = 1 })
	runLoad(tn, 3, 14)
	_ = tn.propose(0, tn.request(1, 1, "x"))
	tn.run()
	for k := 0; k < 60 && tn.xfers[3] == nil; k++ {
		tn.tick(1)
	}
	st := tn.xfers[3]
	if st == nil {
		t.Fatal("no state transfer asked")
	}
	src := *tn.stores[1].hs.Snapshot
	if src.Seq != st.Seq {
		t.Fatalf("source snapshot at %d, transfer at %d", src.Seq, st.Seq)
	}
	// The others go on; replica 3 sees their checkpoints while its transfer runs.
	for c := 0; c < 9; c++ {
		_ = tn.propose(0, tn.request(200+c, 1, "y"))
		tn.run()
	}
	if tn.reps[3].stable.seq <= src.Seq {
		t.Fatalf("replica 3's stable checkpoint did not move past %d: %d", src.Seq, tn.reps[3].stable.seq)
	}
	if err := tn.reps[3].InstallSnapshot(src.Seq+1, src.AppDigest, src.ClientTable); !errors.Is(err, ErrStale) {
		t.Fatalf("a snapshot at no stable checkpoint: %v", err)
	}
	if err := tn.reps[3].InstallSnapshot(src.Seq, wire.Digest{1}, src.ClientTable); !errors.Is(err, ErrSnapshotMismatch) {
		t.Fatalf("wrong app digest: %v", err)
	}
	tn.apps[3].applied, tn.apps[3].digest = src.Seq, src.AppDigest
	if err := tn.reps[3].InstallSnapshot(src.Seq, src.AppDigest, src.ClientTable); err != nil {
		t.Fatalf("snapshot of the previous stable checkpoint: %v", err)
	}
	if tn.reps[3].lastExecuted != src.Seq {
		t.Fatalf("executed %d after installing %d", tn.reps[3].lastExecuted, src.Seq)
	}
	tn.drain(3)
	// It catches up to the others, by fetching or with a transfer of blocks (served from replica 1's log).
	for k := 0; k < 200 && tn.executed(3) < tn.executed(1); k++ {
		if x := tn.xfers[3]; x != nil && x.Seq > src.Seq && x.Applied >= src.Seq {
			tn.xfers[3] = nil
			for _, cb := range tn.commits[1] {
				if cb.Seq > tn.reps[3].lastDelivered && cb.Seq <= x.Seq {
					_ = tn.reps[3].ApplyCommitted(cb.Seq, cb.Batch, cb.Cert)
					tn.drain(3)
				}
			}
		}
		tn.tick(1)
	}
	if tn.executed(3) != tn.executed(1) || tn.reps[3].Status().Status != StatusNormal {
		t.Fatalf("replica 3 did not catch up: executed %d vs %d, %+v", tn.executed(3), tn.executed(1), tn.reps[3].Status())
	}
	tn.checkAgreement()
}
