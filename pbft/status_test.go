package pbft

import (
	"testing"

	"github.com/p2pbft/p2pbft/wire"
)

// A replica that was away while the others committed catches up on an idle network: the others' Status
// tells it that it is behind, and it fetches from them at once, whatever its idle probe interval grew to.
func TestStatusCatchUpOnIdleNetwork(t *testing.T) {
	tn := newNet(t, 4, func(c *Config) { c.CheckpointInterval = 4 })
	tn.down[3] = true
	tn.tick(3000) // replica 3's probes back off to their longest interval meanwhile
	for ts := uint64(1); ts <= 6; ts++ {
		_ = tn.propose(0, tn.request(1, ts, "op"))
		tn.run()
	}
	top := tn.executed(0)
	if top < 6 || tn.executed(3) != 0 {
		t.Fatalf("executed %d and %d", top, tn.executed(3))
	}
	tn.down[3] = false
	r3 := tn.reps[3]
	interval := uint64(tn.reps[0].cfg.StatusInterval)
	before := r3.stats.StatusFetches
	for k := uint64(0); k < 3*interval && tn.executed(3) < top; k++ {
		tn.tick(1)
	}
	if tn.executed(3) < top {
		t.Fatalf("replica 3 at %d of %d after %d ticks without traffic", tn.executed(3), top, 3*interval)
	}
	if r3.stats.StatusFetches == before {
		t.Fatal("caught up, but not because of a Status")
	}
	tn.checkAgreement()
}

// A Status from a replica in an older view gets it the NEW-VIEW; malformed ones are rejected; claims of a
// far-away sequence number are not believed beyond the window.
func TestStatusServesNewViewAndBoundsClaims(t *testing.T) {
	tn := newNet(t, 4, nil)
	for i := 0; i < 4; i++ {
		tn.reps[i].startViewChange(1)
		tn.drain(i)
	}
	tn.run()
	if tn.reps[1].view != 1 || !tn.reps[1].active {
		t.Fatalf("replica 1 in view %d, active %v", tn.reps[1].view, tn.reps[1].active)
	}
	var sent []tmsg
	tn.filter = func(m tmsg) bool { sent = append(sent, m); return false }
	if err := tn.step(1, tn.sign(2, wire.KindStatus, &StatusReport{View: 0, Active: true, Tick: 7})); err != nil {
		t.Fatal(err)
	}
	tn.run()
	found := false
	for _, m := range sent {
		if m.from == 1 && m.to == 2 && m.env.Kind == wire.KindNewView {
			found = true
		}
	}
	if !found {
		t.Fatal("a Status from a replica in an older view did not get it the NEW-VIEW")
	}
	bad := tn.sign(2, wire.KindStatus, "not a status")
	if err := tn.reps[1].Step(bad); err == nil {
		t.Fatal("a malformed Status was accepted")
	}
	r := tn.reps[1]
	if err := tn.step(1, tn.sign(3, wire.KindStatus, &StatusReport{View: 1, Active: true, Executed: 1 << 40, Tick: 8})); err != nil {
		t.Fatal(err)
	}
	if r.highestSeen > r.high()+r.cfg.Window {
		t.Fatalf("believed a claim of %d executed (window up to %d)", r.highestSeen, r.high()+r.cfg.Window)
	}
	r.SetRetransmitTimeout(0)
	if r.cfg.RetransmitTimeout != 1 {
		t.Fatalf("retransmit timeout %d after setting 0", r.cfg.RetransmitTimeout)
	}
}
