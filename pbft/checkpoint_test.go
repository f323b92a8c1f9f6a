package pbft

import (
	"errors"
	"testing"

	"github.com/p2pbft/p2pbft/wire"
)

// Row 10: a checkpoint every K sequence numbers becomes stable with a quorum of matching digests; the
// replica then garbage-collects everything at or below it, keeps the proof, and moves the window.
func TestCheckpointStableAndGarbageCollection(t *testing.T) {
	tn := newNet(t, 4, func(c *Config) { c.MaxBatchRequests = 1 })
	for c := 0; c < 5; c++ {
		_ = tn.propose(0, tn.request(c, 1, "x"))
		tn.run()
	}
	for i := 0; i < 4; i++ {
		r := tn.reps[i]
		if r.stable.seq != 4 || len(r.stable.proof) != 3 {
			t.Fatalf("replica %d: stable %d with %d proofs", i, r.stable.seq, len(r.stable.proof))
		}
		if err := r.checkCheckpointProof(4, r.stable.digest, r.stable.proof); err != nil {
			t.Fatalf("replica %d: proof: %v", i, err)
		}
		for seq := range r.slots {
			if seq <= 4 {
				t.Fatalf("replica %d kept slot %d below the stable checkpoint", i, seq)
			}
		}
		if r.snapshot.Seq != 4 || tn.stores[i].hs.StableSeq != 4 || tn.stores[i].hs.Snapshot.Seq != 4 {
			t.Fatalf("replica %d: snapshot %d persisted %d", i, r.snapshot.Seq, tn.stores[i].hs.StableSeq)
		}
		for _, e := range tn.stores[i].entries {
			if e.Seq <= 4 {
				t.Fatalf("replica %d: log not truncated at the stable checkpoint (entry %d)", i, e.Seq)
			}
		}
		if st := r.Status(); st.Low != 4 || st.High != 4+r.cfg.Window {
			t.Fatalf("window %+v", st)
		}
	}
	// The digest covers the application digest and the client table.
	hs := tn.stores[1].hs
	if hs.Snapshot.Digest() != hs.StableDigest {
		t.Fatal("snapshot does not match the stable digest")
	}
}

// Checkpoint messages off the interval are invalid; a replica's second, different checkpoint for one
// sequence number is equivocation; checkpoints below the stable one are ignored.
func TestCheckpointMessageChecks(t *testing.T) {
	tn := newNet(t, 4, nil)
	ck := func(from int, seq uint64, d byte) *wire.Envelope {
		return tn.sign(from, wire.KindCheckpoint, &Checkpoint{Seq: seq, Digest: wire.Digest{d}})
	}
	if err := tn.step(0, ck(1, 3, 1)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("off-interval checkpoint: %v", err)
	}
	if err := tn.step(0, ck(1, 4, 1)); err != nil {
		t.Fatal(err)
	}
	if err := tn.step(0, ck(1, 4, 2)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("second digest from one replica: %v", err)
	}
	_ = tn.step(0, ck(2, 4, 1))
	if tn.reps[0].stable.seq != 0 {
		t.Fatal("stable with 2 checkpoints")
	}
	_ = tn.step(0, ck(3, 4, 1))
	if tn.reps[0].stable.seq != 4 {
		t.Fatal("not stable with 3 matching checkpoints")
	}
	// Replica 0 never executed 4: it must not pretend to hold the state.
	if tn.reps[0].snapshot.Seq != 0 {
		t.Fatal("snapshot moved without the state")
	}
	if err := tn.step(0, ck(1, 4, 1)); !errors.Is(err, ErrIgnored) {
		t.Fatalf("checkpoint at the stable one: %v", err)
	}
}

// Memory stays bounded under a flood of valid-looking but useless checkpoints: a few per replica.
func TestCheckpointFloodBounded(t *testing.T) {
	tn := newNet(t, 4, nil)
	for seq := uint64(4); seq < 4000; seq += 4 {
		_ = tn.step(0, tn.sign(1, wire.KindCheckpoint, &Checkpoint{Seq: seq, Digest: wire.Digest{1}}))
	}
	if got := tn.reps[0].Stats().CheckpointVotes; got > tn.reps[0].maxCheckpointVotes() {
		t.Fatalf("%d checkpoint votes kept from one replica", got)
	}
}
