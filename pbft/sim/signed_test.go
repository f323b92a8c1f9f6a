package sim

import (
	"bytes"
	"strings"
	"testing"

	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

func sealed(t *testing.T, c *Cluster, i int, kind wire.Kind, payload any) *wire.Envelope {
	t.Helper()
	p, err := wire.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	e, err := wire.Seal(c.keys[i], chainID, kind, p)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func digest(b byte) wire.Digest { return wire.Digest{b, 1, 2, 3} }

// The non-equivocation invariant: resends and duplicates of one vote are fine, a second vote for the same
// slot with another digest is not, across restarts and wipes; Byzantine replicas are exempt.
func TestNonEquivocationInvariant(t *testing.T) {
	c := NewCluster(scenario(1, 4, nil, map[int]Fault{3: FaultEquivocate}), nil)
	r1, byz := c.nodes[1], c.nodes[3]
	prep := sealed(t, c, 1, wire.KindPrepare, &pbft.Prepare{View: 3, Seq: 17, Digest: digest(0xab)})
	c.obs.onSent(r1, prep)
	resent := *prep
	resent.Resend = 7
	c.obs.onSent(r1, &resent)
	// The same vote again after a restart, and a vote of another kind or view for the same digest slot.
	r1.restarts++
	c.obs.onSent(r1, sealed(t, c, 1, wire.KindPrepare, &pbft.Prepare{View: 3, Seq: 17, Digest: digest(0xab)}))
	c.obs.onSent(r1, sealed(t, c, 1, wire.KindCommit, &pbft.Commit{View: 3, Seq: 17, Digest: digest(0xab)}))
	c.obs.onSent(r1, sealed(t, c, 1, wire.KindPrepare, &pbft.Prepare{View: 4, Seq: 17, Digest: digest(0xcd)}))
	// A Byzantine replica may say anything.
	c.obs.onSent(byz, sealed(t, c, 3, wire.KindPrepare, &pbft.Prepare{View: 3, Seq: 17, Digest: digest(0xab)}))
	c.obs.onSent(byz, sealed(t, c, 3, wire.KindPrepare, &pbft.Prepare{View: 3, Seq: 17, Digest: digest(0xcd)}))
	if len(c.obs.violations) != 0 {
		t.Fatalf("false alarms: %v", c.obs.violations)
	}
	if r1.mark != (pbft.Mark{View: 4, Seq: 17}) {
		t.Fatalf("signed mark %+v, want view 4 seq 17", r1.mark)
	}

	// After a wipe, the record still holds: a different PREPARE for (3, 17) is equivocation.
	r1.wipeNext = true
	r1.crash()
	r1.restart()
	if r1.armed != (pbft.Mark{View: 4, Seq: 17}) || r1.wipes != 1 {
		t.Fatalf("wiped replica armed with %+v (%d wipes)", r1.armed, r1.wipes)
	}
	c.stopped = false
	c.obs.onSent(r1, sealed(t, c, 1, wire.KindPrepare, &pbft.Prepare{View: 3, Seq: 17, Digest: digest(0xcd)}))
	if len(c.obs.violations) != 1 || !strings.Contains(c.obs.violations[0], "r1 signed two PREPAREs for view 3 seq 17: ab010203") {
		t.Fatalf("violations: %v", c.obs.violations)
	}

	// A pre-prepare inside a NEW-VIEW counts as signed, and contradicts one sent alone.
	c.obs.violations = nil
	r0 := c.nodes[0]
	c.obs.onSent(r0, sealed(t, c, 0, wire.KindPrePrepare, &pbft.PrePrepare{View: 4, Seq: 9, Digest: digest(1)}))
	pp := sealed(t, c, 0, wire.KindPrePrepare, &pbft.PrePrepare{View: 4, Seq: 9, Digest: digest(2)})
	c.obs.onSent(r0, sealed(t, c, 0, wire.KindNewView, &pbft.NewView{View: 4, PrePrepares: []*wire.Envelope{pp}}))
	if len(c.obs.violations) != 1 || !strings.Contains(c.obs.violations[0], "r0 signed two PRE-PREPAREs for view 4 seq 9") {
		t.Fatalf("violations: %v", c.obs.violations)
	}
}

// Restarts from an empty disk, alone, with other faults, and beside a Byzantine replica at n=7: the wiped
// replica catches up and every invariant holds.
func TestWipes(t *testing.T) {
	for _, n := range []int{4, 7} {
		for seed := int64(1); seed <= scenarioSeeds; seed++ {
			for _, faults := range [][]Fault{{FaultWipe}, {FaultWipe, FaultLoss, FaultCrash, FaultPartition}} {
				o := scenario(seed, n, faults, nil)
				if r := runScenario(t, o); r.Wipes == 0 {
					t.Errorf("%s: no replica was wiped", o)
				}
			}
			if n == 7 {
				// A wiped replica counts against f until it caught up: with it, f-1 Byzantine replicas.
				o := scenario(seed, n, []Fault{FaultWipe, FaultDelay}, map[int]Fault{0: FaultEquivocate})
				if r := runScenario(t, o); r.Wipes == 0 {
					t.Errorf("%s: no replica was wiped", o)
				}
			}
		}
	}
}

// A Byzantine replica's forged reply is well formed (its signature and Merkle proof check out, so the
// client judges it by its result), carries a wrong result of the right size, and f of them do not make a
// client accept.
func TestBadReplyOpens(t *testing.T) {
	c := NewCluster(scenario(1, 7, nil, map[int]Fault{2: FaultForge, 5: FaultEquivocate}), nil)
	cl := c.clients[0]
	good := []byte("k1=\x00\x00\x00\x00\x00\x00\x00\x07")
	reply := func(i int, result []byte) *wire.Envelope {
		hdr := pbft.ReplyHeader{View: 0, Seq: 4, Replica: uint32(i), Count: 1, Root: pbft.ReplyLeafHash(cl.pub, 1, result)}
		e := sealed(t, c, i, wire.KindReply, &hdr)
		body, err := wire.Marshal(&pbft.ReplyProof{Client: cl.pub, Timestamp: 1, Result: result})
		if err != nil {
			t.Fatal(err)
		}
		e.Body = body
		return e
	}
	if r, err := pbft.OpenReply(reply(0, good)); err != nil || !bytes.Equal(r.Result, good) {
		t.Fatalf("the simulator's reply leaf differs from the engine's: %v", err)
	}
	coll := pbft.NewReplyCollector(chainID, c.pubs, c.reg, cl.pub)
	coll.Await(1)
	for _, i := range []int{2, 5} {
		bad := c.nodes[i].byz.badReply(reply(i, good))
		r, err := pbft.OpenReply(bad)
		if err != nil || c.reg.Verify(bad) != nil {
			t.Fatalf("forged reply of r%d does not open: %v", i, err)
		}
		if bytes.Equal(r.Result, good) || len(r.Result) != len(good) {
			t.Fatalf("forged result %q for %q", r.Result, good)
		}
		if acc, err := coll.Add(bad); err != nil || acc != nil {
			t.Fatalf("f forged replies: accepted %v, %v", acc, err)
		}
	}
	for _, i := range []int{0, 1} {
		if acc, _ := coll.Add(reply(i, good)); acc != nil {
			t.Fatalf("accepted after %d correct replies", i+1)
		}
	}
	if acc, _ := coll.Add(reply(3, good)); acc == nil || !bytes.Equal(acc.Result, good) {
		t.Fatalf("f+1 correct replies: accepted %v", acc)
	}
}
