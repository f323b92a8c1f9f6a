package pbft

import (
	"errors"
	"testing"

	"github.com/p2pbft/p2pbft/wire"
	"github.com/p2pbft/p2pbft/wire/wiretest"
)

// Row 17 and pitfall 1: the sender is the key that signed, never a field it wrote. A replica message from a
// key outside the replica set is rejected; payloads carry no sender field to lie with.
func TestSenderIsTheSigningKey(t *testing.T) {
	tn := newNet(t, 4, nil)
	outsider := wiretest.NewKey("outsider")
	p, _ := wire.Marshal(&Prepare{View: 0, Seq: 1, Digest: NullDigest})
	e, _ := wire.Seal(outsider, testChain, wire.KindPrepare, p)
	var se *StepError
	if err := tn.step(1, e); !errors.As(err, &se) || se.Reason != ReasonNotReplica {
		t.Fatalf("prepare from a non-member: %v", err)
	}
	if got := tn.reps[1].Stats().Rejected[ReasonNotReplica]; got != 1 {
		t.Fatalf("rejections counted: %d", got)
	}
	// A reply that names another replica than its signer is refused by the client.
	_ = tn.propose(0, tn.request(1, 1, "abc"))
	tn.run()
	r0 := tn.replies[string(tn.client(1).PublicKey())][0]
	h, _ := DecodeReplyHeader(r0.Payload)
	h.Replica = (h.Replica + 1) % 4
	signer, _ := tn.reps[0].keys[string(r0.Author)]
	lie := tn.sign(signer, wire.KindReply, h)
	lie.Body = r0.Body
	coll := NewReplyCollector(testChain, tn.pubs, tn.reg, tn.client(1).PublicKey())
	coll.Await(1)
	if _, err := coll.Add(lie); err == nil {
		t.Fatal("reply naming another replica accepted")
	}
}

// Garbage in any field is rejected, counted, and changes nothing.
func TestMalformedMessagesChangeNothing(t *testing.T) {
	tn := newNet(t, 4, nil)
	kinds := []wire.Kind{wire.KindPrePrepare, wire.KindPrepare, wire.KindCommit, wire.KindCheckpoint,
		wire.KindViewChange, wire.KindNewView, wire.KindFetch, wire.KindFetchReply, wire.KindReply,
		wire.KindStateRequest, wire.KindRequest}
	for _, k := range kinds {
		p, _ := wire.Marshal([]any{"not", "a", "payload", k})
		e, _ := wire.Seal(tn.keys[1], testChain, k, p)
		if err := tn.reps[0].Step(e); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s with a garbage payload: %v", k, err)
		}
	}
	if tn.reps[0].HasReady() {
		rd := tn.reps[0].Ready()
		if len(rd.Entries) > 0 || len(rd.Messages) > 0 || rd.HardState != nil {
			t.Fatalf("garbage produced output: %+v", rd)
		}
	}
	if err := tn.reps[0].Step(nil); !errors.Is(err, ErrInvalid) {
		t.Fatal("nil envelope")
	}
}

// Memory is bounded: a flood of messages for later views, or of requests, is capped.
func TestFloodsAreBounded(t *testing.T) {
	tn := newNet(t, 4, func(c *Config) { c.MaxFutureMessages = 10; c.MaxPendingRequests = 20 })
	for v := uint64(1); v < 100; v++ {
		_ = tn.step(0, tn.sign(1, wire.KindPrepare, &Prepare{View: v, Seq: 1, Digest: NullDigest}))
	}
	if got := tn.reps[0].Stats().Future; got != 10 {
		t.Fatalf("%d future messages kept from one replica, cap 10", got)
	}
	// Another replica's future messages still have room.
	if err := tn.step(0, tn.sign(2, wire.KindPrepare, &Prepare{View: 1, Seq: 1, Digest: NullDigest})); err != nil {
		t.Fatalf("another sender's future message: %v", err)
	}
	tn.filter = func(m tmsg) bool { return false }
	for c := 0; c < 50; c++ {
		_ = tn.propose(1, tn.request(c, 1, "x"))
	}
	if got := tn.reps[1].Stats().Pending; got > 20 {
		t.Fatalf("%d pending requests, cap 20", got)
	}
	if tn.reps[1].Stats().Rejected[ReasonPendingFull] == 0 {
		t.Fatal("pending overflow not counted")
	}
	// Out-of-window and far-future-view votes create no slots.
	for seq := uint64(100); seq < 200; seq++ {
		_ = tn.step(2, tn.sign(1, wire.KindCommit, &Commit{View: 0, Seq: seq, Digest: NullDigest}))
	}
	if got := tn.reps[2].Stats().Slots; got != 0 {
		t.Fatalf("%d slots from out-of-window votes", got)
	}
}

// Config validation reports every problem.
func TestConfigValidation(t *testing.T) {
	k := wiretest.NewKey("a")
	good := Config{ChainID: "c", Replicas: [][]byte{k.PublicKey()}, Signer: k, Verifier: wiretest.NewRegistry(k)}
	if err := good.WithDefaults().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := []func(c *Config){
		func(c *Config) { c.ChainID = "" },
		func(c *Config) { c.Replicas = nil },
		func(c *Config) { c.Replicas = [][]byte{k.PublicKey(), k.PublicKey()} },
		func(c *Config) { c.Replicas = [][]byte{{1, 2}} },
		func(c *Config) { c.Signer = wiretest.NewKey("b") },
		func(c *Config) { c.Verifier = nil },
		func(c *Config) { c.Window = 40 },
		func(c *Config) { c.CheckpointInterval = 8; c.Window = 8 },
		func(c *Config) { c.BatchTimeout = -1 },
		func(c *Config) { c.MaxRequestBytes = c.MaxBatchBytes + 1 },
	}
	for i, m := range bad {
		c := good.WithDefaults()
		m(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("case %d: invalid config accepted", i)
		}
		if _, err := New(c); err == nil {
			t.Errorf("case %d: New accepted an invalid config", i)
		}
	}
	if Quorum(4) != 3 || Quorum(7) != 5 || Quorum(10) != 7 || Quorum(5) != 4 || Quorum(1) != 1 {
		t.Fatal("quorum sizes")
	}
}

// A request that stays pending does not let the pending set's queues grow with the traffic behind it.
func TestPendingQueuesStayBounded(t *testing.T) {
	p := newPendingSet()
	stuck := &request{id: wire.Digest{1}, client: "stuck", ts: 1}
	p.add(stuck, 0)
	for i := 0; i < 10000; i++ {
		q := &request{id: wire.Digest{2, byte(i), byte(i >> 8)}, client: "c", ts: uint64(i + 1)}
		pr := p.add(q, 0)
		p.remove(pr)
	}
	if len(p.all) > 200 || len(p.queue) > 200 || p.len() != 1 {
		t.Fatalf("queues hold %d and %d entries for %d pending", len(p.all), len(p.queue), p.len())
	}
	if p.oldest().req != stuck || p.front().req != stuck {
		t.Fatal("compaction lost the pending request")
	}
}
