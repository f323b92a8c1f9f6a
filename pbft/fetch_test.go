package pbft

import (
	"errors"
	"testing"

	"github.com/p2pbft/p2pbft/wire"
)

// A replica answers at most one fetch per peer per tick, and a fetch for something it does not hold gets
// no answer.
func TestFetchRateLimitAndEmptyAnswers(t *testing.T) {
	tn := newNet(t, 4, nil)
	_ = tn.propose(0, tn.request(1, 1, "a"))
	tn.run()
	f := func(seq uint64) *wire.Envelope {
		return tn.sign(2, wire.KindFetch, &Fetch{View: 0, Active: true, Executed: seq - 1, Items: []FetchItem{{Seq: seq, NeedBody: true}}})
	}
	tn.reps[1].now = 5 // not the initial tick
	if err := tn.step(1, f(1)); err != nil {
		t.Fatal(err)
	}
	if len(tn.queue) != 1 || tn.queue[0].env.Kind != wire.KindFetchReply || tn.queue[0].to != 2 {
		t.Fatalf("no fetch reply: %+v", tn.queue)
	}
	fr, _ := DecodeFetchReply(tn.queue[0].env.Payload)
	if len(fr.Slots) != 1 || len(fr.Slots[0].Cert) != 3 {
		t.Fatalf("reply %+v", fr)
	}
	tn.queue = nil
	if err := tn.step(1, f(1)); !errors.Is(err, ErrIgnored) {
		t.Fatalf("second fetch in the same tick: %v", err)
	}
	tn.reps[1].now++
	if err := tn.step(1, f(9)); err != nil || len(tn.queue) != 0 {
		t.Fatalf("fetch for an unknown slot: %v, %d messages", err, len(tn.queue))
	}
}

// An own checkpoint that does not become stable is retransmitted (with a new Resend counter, so that a
// content-addressed gossip layer passes it), and so is a VIEW-CHANGE while no NEW-VIEW comes.
func TestRetransmissions(t *testing.T) {
	tn := newNet(t, 4, func(c *Config) { c.CheckpointInterval = 2; c.MaxBatchRequests = 1 })
	tn.filter = func(m tmsg) bool { return m.env.Kind != wire.KindCheckpoint }
	for c := 0; c < 2; c++ {
		_ = tn.propose(0, tn.request(c, 1, "a"))
		tn.run()
	}
	if tn.reps[1].ownLatest == nil || tn.reps[1].stable.seq != 0 {
		t.Fatal("setup: checkpoint 2 should be unstable")
	}
	var resent []*wire.Envelope
	tn.filter = func(m tmsg) bool {
		if m.env.Kind == wire.KindCheckpoint {
			resent = append(resent, m.env)
		}
		return true
	}
	tn.tick(tn.reps[1].cfg.RetransmitTimeout + 1)
	if len(resent) == 0 || resent[0].Resend == 0 {
		t.Fatal("unstable checkpoint not retransmitted with a Resend counter")
	}
	if tn.reps[1].stable.seq != 2 {
		t.Fatal("retransmitted checkpoints did not make it stable")
	}
	// A VIEW-CHANGE is resent while waiting.
	tn.filter = func(m tmsg) bool { return false }
	tn.reps[2].startViewChange(1)
	tn.drain(2)
	tn.queue = nil
	before := tn.reps[2].stats.Retransmits
	tn.tick(tn.reps[2].cfg.RetransmitTimeout + 1)
	if tn.reps[2].stats.Retransmits == before {
		t.Fatal("VIEW-CHANGE not retransmitted")
	}
}

// An idle replica probes with growing intervals, so an idle cluster stays almost silent.
func TestIdleProbesBackOff(t *testing.T) {
	tn := newNet(t, 4, nil)
	tn.tick(2000)
	fetches := tn.reps[1].stats.Fetches
	if fetches == 0 || fetches > 20 {
		t.Fatalf("%d probes in 2000 idle ticks", fetches)
	}
}
