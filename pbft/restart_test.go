package pbft

import (
	"errors"
	"testing"

	"github.com/p2pbft/p2pbft/wire"
)

// Row 18: a backup that accepted a pre-prepare and sent its prepare, then crashed, still holds them after a
// restart: a conflicting pre-prepare for the same (view, seq) is rejected and no second prepare leaves.
func TestRestartKeepsPromises(t *testing.T) {
	tn := newNet(t, 4, nil)
	tn.filter = func(m tmsg) bool { return m.env.Kind == wire.KindPrePrepare }
	_ = tn.propose(0, tn.request(1, 1, "a"))
	tn.run()
	d := tn.reps[2].slots[1].digest
	if !tn.reps[2].slots[1].sentPrepare {
		t.Fatal("no prepare sent")
	}
	tn.down[2] = true
	tn.restart(2)
	s := tn.reps[2].slots[1]
	if s == nil || s.digest != d || !s.sentPrepare {
		t.Fatal("restarted replica lost its pre-prepare or prepare")
	}
	other := tn.request(2, 1, "b")
	body, _ := EncodeBatch([]*wire.Envelope{other})
	pp := tn.sign(0, wire.KindPrePrepare, &PrePrepare{View: 0, Seq: 1, Digest: BatchDigest([]wire.Digest{other.ID()})})
	pp.Body = body
	tn.queue = nil
	if err := tn.step(2, pp); !errors.Is(err, ErrInvalid) {
		t.Fatalf("conflicting pre-prepare after restart: %v", err)
	}
	if len(tn.queue) != 0 {
		t.Fatal("restarted replica sent something for a conflicting pre-prepare")
	}
	// The primary does not reuse a sequence number after a restart.
	tn.down[0] = true
	tn.restart(0)
	if tn.reps[0].nextSeq != 2 {
		t.Fatalf("restarted primary would assign %d again", tn.reps[0].nextSeq)
	}
}

// Row 18 and pitfall 7: after a restart the replica does not execute again what the application applied
// (those batches come back marked AlreadyApplied, so the driver reports their stored outcome), it rebuilds its
// client table, and it goes on from there, null batches included.
func TestRestartAfterExecution(t *testing.T) {
	tn := newNet(t, 4, func(c *Config) { c.CheckpointInterval = 4 })
	for ts := uint64(1); ts <= 6; ts++ {
		_ = tn.propose(0, tn.request(1, ts, "abc"))
		tn.run()
	}
	if tn.executed(3) != 6 || tn.reps[3].stable.seq != 4 {
		t.Fatalf("executed %d stable %d", tn.executed(3), tn.reps[3].stable.seq)
	}
	tn.down[3] = true
	before := len(tn.commits[3])
	tn.restart(3)
	replayed := tn.commits[3][before:]
	if len(replayed) != 2 || !replayed[0].AlreadyApplied || replayed[0].Seq != 5 || replayed[1].Seq != 6 {
		t.Fatalf("replay after restart: %+v", replayed)
	}
	if tn.apps[3].applied != 6 {
		t.Fatal("the application executed a batch again")
	}
	if ce := tn.reps[3].clients.get(string(tn.client(1).PublicKey())); ce == nil || ce.execTS != 6 {
		t.Fatal("client table not rebuilt")
	}
	n := len(tn.replies[string(tn.client(1).PublicKey())])
	_ = tn.propose(3, tn.request(1, 6, "abc"))
	if len(tn.replies[string(tn.client(1).PublicKey())]) != n+1 {
		t.Fatal("duplicate after restart not answered from the cache")
	}
	_ = tn.propose(0, tn.request(1, 7, "abc"))
	tn.run()
	if tn.executed(3) != 7 {
		t.Fatalf("restarted replica executed %d, want 7", tn.executed(3))
	}
	tn.checkAgreement()
	// An application behind the core's checkpoint is an error the driver must see.
	p := &Persisted{HardState: tn.stores[3].hs, Entries: tn.stores[3].entries}
	if _, err := Restart(tn.config(3), p, 2); !errors.Is(err, ErrAppBehind) {
		t.Fatalf("restart with the app behind: %v", err)
	}
}

// Row 18: a replica that crashed during a view change resends its stored VIEW-CHANGE (same bytes) and
// completes the view change.
func TestRestartDuringViewChange(t *testing.T) {
	tn := newNet(t, 4, nil)
	tn.reps[3].startViewChange(1)
	tn.drain(3)
	vc := tn.reps[3].ownVC
	tn.queue = nil
	tn.down[3] = true
	tn.restart(3)
	if tn.reps[3].active || tn.reps[3].view != 1 {
		t.Fatal("restarted replica left its view change")
	}
	found := false
	for _, m := range tn.queue {
		if m.env.Kind == wire.KindViewChange && m.env.ID() == vc.ID() {
			found = true
		}
	}
	if !found {
		t.Fatal("stored VIEW-CHANGE not resent after restart")
	}
	tn.reps[2].startViewChange(1)
	tn.drain(2)
	tn.run()
	tn.tick(5)
	for i := 0; i < 4; i++ {
		if tn.reps[i].view != 1 || !tn.reps[i].active {
			t.Fatalf("replica %d: view %d active %v", i, tn.reps[i].view, tn.reps[i].active)
		}
	}
}

// Every persisted record survives encoding (the driver stores bytes).
func TestPersistedStateRoundTrip(t *testing.T) {
	tn := newNet(t, 4, nil)
	for ts := uint64(1); ts <= 6; ts++ {
		_ = tn.propose(0, tn.request(1, ts, "abc"))
		tn.run()
	}
	hb, err := tn.stores[1].hs.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	hs, err := DecodeHardState(hb)
	if err != nil {
		t.Fatal(err)
	}
	p := &Persisted{HardState: *hs}
	for _, e := range tn.stores[1].entries {
		b, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		d, err := DecodeEntry(b)
		if err != nil {
			t.Fatal(err)
		}
		p.Entries = append(p.Entries, *d)
	}
	r, err := Restart(tn.config(1), p, tn.apps[1].applied)
	if err != nil {
		t.Fatal(err)
	}
	if r.stable.seq != tn.reps[1].stable.seq || r.lastDelivered != 6 {
		t.Fatalf("restored stable %d delivered %d", r.stable.seq, r.lastDelivered)
	}
}
