package pbft

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/p2pbft/p2pbft/wire"
)

// Row 1, 5, 6: a request goes in, commits, executes in order on every replica, and the client accepts f+1
// matching replies.
func TestNormalCaseCommitsAndReplies(t *testing.T) {
	for _, n := range []int{1, 4, 7} {
		tn := newNet(t, n, nil)
		for ts := uint64(1); ts <= 5; ts++ {
			if err := tn.propose(0, tn.request(1, ts, "abc")); err != nil {
				t.Fatal(err)
			}
			tn.run()
			if got := tn.accepted(1, ts); !bytes.Equal(got, []byte("cba")) {
				t.Fatalf("n=%d ts=%d: accepted %q", n, ts, got)
			}
		}
		for i := 0; i < n; i++ {
			if tn.executed(i) != 5 {
				t.Fatalf("n=%d: replica %d executed %d, want 5", n, i, tn.executed(i))
			}
		}
		tn.checkAgreement()
	}
}

// Row 1: a backup that gets a request from its client forwards it to the primary and starts its timer; a
// client retransmission is forwarded again.
func TestBackupForwardsRequest(t *testing.T) {
	tn := newNet(t, 4, nil)
	req := tn.request(1, 1, "x")
	if err := tn.propose(2, req); err != nil {
		t.Fatal(err)
	}
	if len(tn.queue) != 1 || tn.queue[0].to != 0 || tn.queue[0].env.ID() != req.ID() {
		t.Fatalf("backup did not forward the request to the primary: %+v", tn.queue)
	}
	if !tn.reps[2].reqTimer.running {
		t.Fatal("backup did not start its request timer")
	}
	if err := tn.propose(2, req); !errors.Is(err, ErrIgnored) {
		t.Fatalf("retransmission: %v", err)
	}
	if len(tn.queue) != 2 || tn.queue[1].to != 0 {
		t.Fatal("retransmitted request not forwarded again")
	}
	tn.run()
	if tn.executed(2) != 1 || tn.reps[2].reqTimer.running {
		t.Fatalf("executed %d, timer running %v", tn.executed(2), tn.reps[2].reqTimer.running)
	}
}

// Row 2: a backup accepts a pre-prepare only from the primary of its view, for the current view, inside the
// window, matching its batch, with valid request signatures, and not conflicting with another for (v, n).
func TestPrePrepareAcceptance(t *testing.T) {
	tn := newNet(t, 4, nil)
	req := tn.request(1, 1, "x")
	body, _ := EncodeBatch([]*wire.Envelope{req})
	good := BatchDigest([]wire.Digest{req.ID()})
	pp := func(from int, view, seq uint64, d wire.Digest, body []byte) *wire.Envelope {
		e := tn.sign(from, wire.KindPrePrepare, &PrePrepare{View: view, Seq: seq, Digest: d})
		e.Body = body
		return e
	}
	forged := *req
	forged.Sig = append([]byte(nil), req.Sig...)
	forged.Sig[0] ^= 1
	badBody, _ := EncodeBatch([]*wire.Envelope{&forged})
	cases := []struct {
		name   string
		env    *wire.Envelope
		reason Reason
	}{
		{"not primary", pp(3, 0, 1, good, body), ReasonNotPrimary},
		{"digest mismatch", pp(0, 0, 1, wire.Digest{1}, body), ReasonBadBatch},
		{"missing body", pp(0, 0, 1, good, nil), ReasonBadBatch},
		{"stale view", nil, ReasonStaleView},
		{"beyond window", pp(0, 0, tn.reps[1].high()+1, good, body), ReasonOutOfWindow},
		{"bad request signature", pp(0, 0, 1, BatchDigest([]wire.Digest{forged.ID()}), badBody), ReasonBadBatch},
		{"wrong chain", func() *wire.Envelope {
			e := pp(0, 0, 1, good, body)
			e.ChainID = "other"
			return e
		}(), ReasonWrongChain},
	}
	for _, c := range cases {
		if c.env == nil {
			continue
		}
		err := tn.step(1, c.env)
		var se *StepError
		if !errors.As(err, &se) || se.Reason != c.reason {
			t.Errorf("%s: got %v, want %s", c.name, err, c.reason)
		}
		if len(tn.queue) != 0 || tn.reps[1].slots[1] != nil && tn.reps[1].slots[1].pp != nil {
			t.Fatalf("%s: rejected pre-prepare changed state", c.name)
		}
	}
	if err := tn.step(1, pp(0, 0, 1, good, body)); err != nil {
		t.Fatalf("valid pre-prepare: %v", err)
	}
	if len(tn.queue) != 3 || tn.queue[0].env.Kind != wire.KindPrepare {
		t.Fatalf("backup did not multicast its prepare: %d messages", len(tn.queue))
	}
	other := tn.request(2, 1, "y")
	body2, _ := EncodeBatch([]*wire.Envelope{other})
	err := tn.step(1, pp(0, 0, 1, BatchDigest([]wire.Digest{other.ID()}), body2))
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("conflicting pre-prepare for the same (v, n): %v", err)
	}
	if tn.reps[1].stats.Rejected[ReasonEquivocation] != 1 {
		t.Fatal("equivocation not counted")
	}
	// A view we left.
	tn.reps[2].view, tn.reps[2].active = 1, true
	if err := tn.step(2, pp(0, 0, 1, good, body)); !errors.Is(err, ErrIgnored) {
		t.Fatalf("stale view: %v", err)
	}
}

// Row 3 and pitfalls 1 and 4: prepared needs the pre-prepare and quorum-1 prepares from distinct backups; a
// replica's second prepare does not count twice, and a prepare from the primary does not count at all.
func TestPreparedQuorum(t *testing.T) {
	tn := newNet(t, 4, nil) // f=1, quorum 3: pre-prepare + 2 prepares
	tn.filter = func(m tmsg) bool { return false }
	if err := tn.propose(0, tn.request(1, 1, "x")); err != nil {
		t.Fatal(err)
	}
	var pp *wire.Envelope
	for _, m := range tn.queue {
		if m.env.Kind == wire.KindPrePrepare {
			pp = m.env
		}
	}
	tn.queue, tn.filter = nil, nil
	if err := tn.step(3, pp); err != nil {
		t.Fatal(err)
	}
	tn.queue = nil
	s := tn.reps[3].slots[1]
	prep := func(from int) *wire.Envelope {
		return tn.sign(from, wire.KindPrepare, &Prepare{View: 0, Seq: 1, Digest: s.digest})
	}
	if err := tn.step(3, prep(0)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("prepare from the primary: %v", err)
	}
	if s.prepared {
		t.Fatal("prepared with only its own prepare")
	}
	if err := tn.step(3, prep(1)); err != nil {
		t.Fatal(err)
	}
	if !s.prepared {
		t.Fatal("not prepared with pre-prepare and 2 prepares")
	}
	if s.pcert == nil || len(s.pcert.prepares) != 2 {
		t.Fatal("prepared certificate missing")
	}
	if err := tn.step(3, prep(1)); !errors.Is(err, ErrIgnored) {
		t.Fatalf("repeated prepare: %v", err)
	}
	// Counting by replica: n=7 needs 4 distinct prepares.
	tn7 := newNet(t, 7, nil)
	tn7.filter = func(m tmsg) bool { return false }
	_ = tn7.propose(0, tn7.request(1, 1, "x"))
	pp = tn7.queue[0].env
	tn7.queue, tn7.filter = nil, nil
	_ = tn7.step(6, pp)
	tn7.queue = nil
	s = tn7.reps[6].slots[1]
	for _, from := range []int{1, 1, 2, 2} {
		_ = tn7.step(6, tn7.sign(from, wire.KindPrepare, &Prepare{View: 0, Seq: 1, Digest: s.digest}))
	}
	if s.prepared {
		t.Fatal("n=7: prepared with 3 distinct prepares (own, 1, 2)")
	}
	_ = tn7.step(6, tn7.sign(3, wire.KindPrepare, &Prepare{View: 0, Seq: 1, Digest: s.digest}))
	if !s.prepared {
		t.Fatal("n=7: not prepared with 4 distinct prepares")
	}
}

// Row 4: committed-local needs prepared and a quorum of matching commits, own included; row 5 (pitfall 9):
// nothing executes before that.
func TestCommittedQuorumAndNoEarlyExecution(t *testing.T) {
	tn := newNet(t, 4, nil)
	var commits []tmsg
	tn.filter = func(m tmsg) bool {
		if m.env.Kind == wire.KindCommit {
			commits = append(commits, m)
			return false
		}
		return true
	}
	_ = tn.propose(0, tn.request(1, 1, "x"))
	tn.run()
	for i := 0; i < 4; i++ {
		if !tn.reps[i].slots[1].prepared || tn.reps[i].slots[1].committed || tn.executed(i) != 0 {
			t.Fatalf("replica %d: prepared %v committed %v executed %d", i, tn.reps[i].slots[1].prepared,
				tn.reps[i].slots[1].committed, tn.executed(i))
		}
	}
	tn.filter = nil
	// Replica 3 gets commits from 0 and 1: with its own, a quorum.
	for _, m := range commits {
		if m.to == 3 && (m.from == 0) {
			_ = tn.step(3, m.env)
		}
	}
	if tn.reps[3].slots[1].committed {
		t.Fatal("committed with 2 commits")
	}
	for _, m := range commits {
		if m.to == 3 && m.from == 1 {
			_ = tn.step(3, m.env)
		}
	}
	if !tn.reps[3].slots[1].committed || tn.executed(3) != 1 {
		t.Fatal("not committed with 3 commits")
	}
	if len(tn.commits[3]) != 1 || len(tn.commits[3][0].Cert) != 3 {
		t.Fatal("committed batch without a quorum certificate")
	}
}

// Pitfall 2: a prepare or commit that arrives before its pre-prepare is kept and counted when it arrives.
func TestEarlyVotesAreKept(t *testing.T) {
	tn := newNet(t, 4, nil)
	var pps []tmsg
	tn.filter = func(m tmsg) bool {
		if m.env.Kind == wire.KindPrePrepare && m.to == 3 {
			pps = append(pps, m)
			return false
		}
		return true
	}
	_ = tn.propose(0, tn.request(1, 1, "x"))
	tn.run()
	if tn.executed(3) != 0 || tn.executed(1) != 1 {
		t.Fatalf("executed: 3:%d 1:%d", tn.executed(3), tn.executed(1))
	}
	s := tn.reps[3].slots[1]
	if s == nil || count(s.prepares, tn.reps[1].slots[1].digest) != 2 {
		t.Fatal("early prepares not kept")
	}
	tn.filter = nil
	_ = tn.step(3, pps[0].env)
	tn.run()
	if tn.executed(3) != 1 {
		t.Fatal("early votes not used once the pre-prepare arrived")
	}
}

// Row 5: execution strictly in sequence order: a later batch that commits first waits for the gap.
func TestExecutionInOrder(t *testing.T) {
	tn := newNet(t, 4, nil)
	var held []tmsg
	tn.filter = func(m tmsg) bool {
		if m.to == 3 && m.env.Kind == wire.KindPrePrepare {
			if p, _ := DecodePrePrepare(m.env.Payload); p.Seq == 1 {
				held = append(held, m)
				return false
			}
		}
		return true
	}
	_ = tn.propose(0, tn.request(1, 1, "a"))
	tn.run()
	_ = tn.propose(0, tn.request(2, 1, "b"))
	tn.run()
	if !tn.reps[3].slots[2].committed || tn.executed(3) != 0 || len(tn.commits[3]) != 0 {
		t.Fatal("batch 2 delivered before batch 1")
	}
	tn.filter = nil
	_ = tn.step(3, held[0].env)
	tn.run()
	if len(tn.commits[3]) != 2 || tn.commits[3][0].Seq != 1 || tn.commits[3][1].Seq != 2 {
		t.Fatalf("delivery order: %+v", tn.commits[3])
	}
}

// Row 8: batches are cut by count, by bytes and by the tick deadline, and the pipeline depth bounds the batches
// in flight.
func TestBatchingAndPipelining(t *testing.T) {
	tn := newNet(t, 4, func(c *Config) { c.MaxBatchRequests = 3; c.BatchTimeout = 5; c.PipelineDepth = 2 })
	tn.filter = func(m tmsg) bool { return false } // hold everything: nothing executes
	for c := 0; c < 2; c++ {
		_ = tn.propose(0, tn.request(c, 1, "x"))
	}
	if tn.reps[0].nextSeq != 1 {
		t.Fatal("cut a batch of 2 < MaxBatchRequests before the deadline")
	}
	tn.tick(5)
	if tn.reps[0].nextSeq != 2 || len(tn.reps[0].slots[1].batch(tn.reps[0].slots[1].digest).reqs) != 2 {
		t.Fatal("deadline did not cut the batch")
	}
	for c := 2; c < 11; c++ {
		_ = tn.propose(0, tn.request(c, 1, "x"))
	}
	if tn.reps[0].nextSeq != 3 {
		t.Fatalf("pipeline depth 2 not respected: next %d", tn.reps[0].nextSeq)
	}
	if got := len(tn.reps[0].slots[2].batch(tn.reps[0].slots[2].digest).reqs); got != 3 {
		t.Fatalf("batch of %d, want MaxBatchRequests 3", got)
	}
	tn.filter = nil
	tn.run()
	tn.tick(20)
	if tn.executed(1) < 4 {
		t.Fatalf("executed %d", tn.executed(1))
	}
	// Bytes: a 100-byte limit fits one request.
	tb := newNet(t, 4, func(c *Config) { c.MaxBatchBytes = 200; c.MaxRequestBytes = 200 })
	tb.filter = func(m tmsg) bool { return false }
	for c := 0; c < 2; c++ {
		_ = tb.propose(0, tb.request(c, 1, "0123456789"))
	}
	if len(tb.reps[0].slots[1].batch(tb.reps[0].slots[1].digest).reqs) != 1 {
		t.Fatal("MaxBatchBytes not respected")
	}
}

// Row 9: the primary assigns nothing above H, backups accept nothing outside (h, H].
func TestWatermarks(t *testing.T) {
	tn := newNet(t, 4, func(c *Config) { c.CheckpointInterval = 2; c.Window = 4; c.MaxBatchRequests = 1 })
	tn.noExec[0] = true // the primary does not execute: no checkpoint, h stays 0
	tn.filter = func(m tmsg) bool { return false }
	for c := 0; c < 8; c++ {
		_ = tn.propose(0, tn.request(c, 1, "x"))
	}
	if tn.reps[0].nextSeq != 5 {
		t.Fatalf("primary assigned up to %d, window is (0, 4]", tn.reps[0].nextSeq-1)
	}
	e := tn.sign(0, wire.KindPrepare, &Prepare{View: 0, Seq: 5, Digest: NullDigest})
	if err := tn.step(2, tn.sign(1, wire.KindPrepare, &Prepare{View: 0, Seq: 5, Digest: NullDigest})); !errors.Is(err, ErrIgnored) {
		t.Fatalf("prepare above H: %v", err)
	}
	_ = e
	if tn.reps[2].slots[5] != nil {
		t.Fatal("slot created outside the window")
	}
}

// Row 7: a repeated request is answered from the client table, an older one dropped; the client table is
// part of the checkpoint digest.
func TestExactlyOnceClientTable(t *testing.T) {
	tn := newNet(t, 4, nil)
	req := tn.request(1, 5, "abc")
	_ = tn.propose(0, req)
	tn.run()
	before := len(tn.replies[string(tn.client(1).PublicKey())])
	if err := tn.propose(1, req); err != nil {
		t.Fatalf("duplicate: %v", err)
	}
	after := tn.replies[string(tn.client(1).PublicKey())]
	if len(after) != before+1 {
		t.Fatal("duplicate not answered from the cache")
	}
	if r, err := OpenReply(after[len(after)-1]); err != nil || string(r.Result) != "cba" || r.Timestamp != 5 {
		t.Fatalf("cached reply: %+v %v", r, err)
	}
	if err := tn.propose(1, tn.request(1, 4, "old")); !errors.Is(err, ErrIgnored) {
		t.Fatalf("older request: %v", err)
	}
	// A batch that carries the same request twice executes it once.
	tn2 := newNet(t, 4, nil)
	r1 := tn2.request(1, 1, "a")
	body, _ := EncodeBatch([]*wire.Envelope{r1, r1})
	pp := tn2.sign(0, wire.KindPrePrepare, &PrePrepare{View: 0, Seq: 1, Digest: BatchDigest([]wire.Digest{r1.ID(), r1.ID()})})
	pp.Body = body
	for i := 1; i < 4; i++ {
		_ = tn2.step(i, pp)
	}
	tn2.run()
	for i := 1; i < 4; i++ {
		if len(tn2.commits[i]) != 1 || len(tn2.commits[i][0].Execute) != 1 || len(tn2.commits[i][0].Batch) != 2 {
			t.Fatalf("replica %d: %+v", i, tn2.commits[i])
		}
	}
	// Same app digest, different client tables, different checkpoint digests.
	a, b := newClientTable(), newClientTable()
	a.getOrAdd(string(tn.client(1).PublicKey())).execTS = 1
	b.getOrAdd(string(tn.client(1).PublicKey())).execTS = 2
	ea, _ := a.encode()
	eb, _ := b.encode()
	if CheckpointDigest(4, wire.Digest{}, ClientTableDigest(ea)) == CheckpointDigest(4, wire.Digest{}, ClientTableDigest(eb)) {
		t.Fatal("client table not in the checkpoint digest")
	}
}

// Row 6: a client accepts a result only from f+1 distinct replicas agreeing.
func TestReplyCollector(t *testing.T) {
	tn := newNet(t, 4, nil)
	_ = tn.propose(0, tn.request(1, 1, "abc"))
	tn.run()
	replies := tn.replies[string(tn.client(1).PublicKey())]
	if len(replies) != 4 {
		t.Fatalf("%d replies", len(replies))
	}
	coll := NewReplyCollector(testChain, tn.pubs, tn.reg, tn.client(1).PublicKey())
	coll.Await(1)
	if r, err := coll.Add(replies[0]); r != nil || err != nil {
		t.Fatalf("accepted after one reply: %v %v", r, err)
	}
	if r, _ := coll.Add(replies[0]); r != nil {
		t.Fatal("accepted the same replica twice")
	}
	// A reply with a wrong result from another replica (a faulty one) does not count toward "cba".
	fake := replies[1].WithoutBody()
	proof, err := DecodeReplyProof(replies[1].Body)
	if err != nil {
		t.Fatal(err)
	}
	proof.Result = []byte("zzz")
	fake.Body, _ = wire.Marshal(proof)
	if _, err := coll.Add(fake); err == nil {
		t.Fatal("tampered proof accepted")
	}
	if r, err := coll.Add(replies[2]); err != nil || r == nil || string(r.Result) != "cba" {
		t.Fatalf("not accepted with 2 matching: %v %v", r, err)
	}
}

// A reply bundle carries the replies of one batch for several clients under one signed header; its
// multiproof rebuilds the signed root, and a tampered leaf fails it.
func TestReplyBundle(t *testing.T) {
	tn := newNet(t, 4, func(c *Config) { c.PipelineDepth = 1 })
	for c := 1; c <= 4; c++ { // the first request fills the pipeline; the other three wait and share a batch
		_ = tn.propose(0, tn.request(c, 1, fmt.Sprint("op", c)))
	}
	tn.run()
	var found bool
	for _, data := range tn.bundles {
		b, err := DecodeReplyBundle(data)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Verify(); err != nil {
			t.Fatal(err)
		}
		if len(b.Leaves) < 2 {
			continue
		}
		found = true
		for i := range b.Leaves {
			if r := b.Reply(i); r.Seq != b.Header.Seq || r.Timestamp != 1 {
				t.Fatalf("item %d: %+v", i, r)
			}
		}
		b.Leaves[0].Result = append(b.Leaves[0].Result, 'x')
		if b.Verify() == nil {
			t.Fatal("a tampered result passed the multiproof")
		}
	}
	if !found {
		t.Fatal("no bundle of several replies: the requests were not batched together")
	}
	if _, err := EncodeReplyBundle(nil); err == nil {
		t.Fatal("an empty bundle encoded")
	}
}

// The multiproof rebuilds the root of every tree size from any subset of its leaves, with exactly the nodes
// it was given; one node more or less, or a changed node, fails.
func TestMultiproof(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for count := 1; count <= 70; count++ {
		leaves := make([]wire.Digest, count)
		for i := range leaves {
			leaves[i] = ReplyLeafHash([]byte{byte(i)}, uint64(i), []byte("r"))
		}
		levels := merkleLevels(leaves)
		root := levels[len(levels)-1][0]
		for trial := 0; trial < 20; trial++ {
			var idx []int
			for i := range count {
				if rng.IntN(4) == 0 || (trial == 0 && i == 0) || trial == 1 {
					idx = append(idx, i)
				}
			}
			if len(idx) == 0 {
				idx = []int{rng.IntN(count)}
			}
			hashes := make([]wire.Digest, len(idx))
			for i, k := range idx {
				hashes[i] = leaves[k]
			}
			nodes := multiproofNodes(levels, idx)
			got, err := rebuildRoot(count, idx, hashes, nodes)
			if err != nil || got != root {
				t.Fatalf("count %d, leaves %v: root %v, err %v", count, idx, got, err)
			}
			if len(idx) == count && len(nodes) != 0 {
				t.Fatalf("count %d: all leaves given, yet %d nodes", count, len(nodes)/32)
			}
			if len(nodes) > 0 {
				if _, err := rebuildRoot(count, idx, hashes, nodes[:len(nodes)-32]); err == nil {
					t.Fatalf("count %d: a node short passed", count)
				}
				bad := append([]byte(nil), nodes...)
				bad[rng.IntN(len(bad))] ^= 1
				if got, err := rebuildRoot(count, idx, hashes, bad); err == nil && got == root {
					t.Fatalf("count %d: a changed node rebuilt the root", count)
				}
			}
			if _, err := rebuildRoot(count, idx, hashes, append(append([]byte(nil), nodes...), make([]byte, 32)...)); err == nil {
				t.Fatalf("count %d: a node too many passed", count)
			}
		}
	}
}

// countingVerifier counts the request signatures checked through it.
type countingVerifier struct {
	wire.Verifier
	requests int
}

func (c *countingVerifier) Verify(e *wire.Envelope) error {
	if e.Kind == wire.KindRequest {
		c.requests++
	}
	return c.Verifier.Verify(e)
}

func (c *countingVerifier) VerifyBatch(es []*wire.Envelope) error {
	for _, e := range es {
		if e.Kind == wire.KindRequest {
			c.requests++
		}
	}
	return c.Verifier.VerifyBatch(es)
}

// A pre-prepare stepped with the driver's decoded and verified requests (StepPrePrepare) is accepted
// without the engine checking a request signature again; one stepped plainly is decoded and verified by
// the engine; decoded requests of another body fail the batch digest.
func TestStepPrePrepareTakesDecodedBatch(t *testing.T) {
	var cv *countingVerifier
	tn := newNet(t, 4, nil)
	cv = &countingVerifier{Verifier: tn.reg}
	cfg := tn.config(1)
	cfg.Verifier = cv
	r1, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tn.reps[1] = r1
	tn.drain(1)
	var pps []*wire.Envelope
	tn.filter = func(m tmsg) bool {
		if m.to == 1 && m.env.Kind == wire.KindPrePrepare {
			pps = append(pps, m.env)
			return false
		}
		return true
	}
	for c := 1; c <= 3; c++ {
		_ = tn.propose(0, tn.request(c, 1, fmt.Sprint("op", c)))
	}
	tn.run()
	if len(pps) < 2 {
		t.Fatalf("%d pre-prepares held back", len(pps))
	}
	first, err := DecodeBatch(pps[0].Body)
	if err != nil {
		t.Fatal(err)
	}
	// A hint that does not match the body (a driver bug) fails the batch digest: refused, nothing changes.
	if err := r1.StepPrePrepare(pps[1], first); err == nil {
		t.Fatal("a pre-prepare with another body's requests was accepted")
	}
	if cv.requests != 0 {
		t.Fatal("requests verified for a refused pre-prepare")
	}
	if err := r1.StepPrePrepare(pps[0], first); err != nil {
		t.Fatal(err)
	}
	tn.drain(1)
	if cv.requests != 0 {
		t.Fatalf("%d request signatures checked again for a batch the driver verified", cv.requests)
	}
	// Stepped plainly, the engine decodes and verifies the body itself.
	if err := r1.Step(pps[1]); err != nil {
		t.Fatal(err)
	}
	tn.drain(1)
	if cv.requests == 0 {
		t.Fatal("a plainly stepped pre-prepare's requests were not verified")
	}
	tn.filter = nil
	tn.run()
	for i := range 4 {
		if tn.executed(i) < 2 {
			t.Fatalf("replica %d executed %d", i, tn.executed(i))
		}
	}
}

// While a batch is in flight, the primary holds the next one until PipelineMinBatch requests wait or the
// pipeline empties; without the setting it cuts at once.
func TestPipelineMinBatch(t *testing.T) {
	for _, tc := range []struct {
		min        int
		wantSecond bool
	}{{0, true}, {3, false}, {2, true}} {
		tn := newNet(t, 4, func(c *Config) { c.PipelineDepth = 2; c.PipelineMinBatch = tc.min })
		_ = tn.propose(0, tn.request(1, 1, "first")) // cut at once: nothing in flight
		_ = tn.propose(0, tn.request(2, 1, "a"))
		_ = tn.propose(0, tn.request(3, 1, "b"))
		if got := tn.reps[0].nextSeq - 1; (got == 2) != tc.wantSecond || got < 1 {
			t.Fatalf("min %d: %d batches cut with one in flight and 2 waiting", tc.min, got)
		}
		tn.run()
		for i := range 4 {
			if tn.executed(i) < 1 || tn.reps[i].pending.len() != 0 {
				t.Fatalf("min %d: replica %d executed %d, %d pending", tc.min, i, tn.executed(i), tn.reps[i].pending.len())
			}
		}
	}
}

// Ready.Quorums reports each slot's prepared and then committed quorum once at every replica, and the
// replies name their block.
func TestReadyReportsQuorums(t *testing.T) {
	tn := newNet(t, 4, nil)
	for ts := uint64(1); ts <= 2; ts++ {
		if err := tn.propose(0, tn.request(1, ts, "abc")); err != nil {
			t.Fatal(err)
		}
		tn.run()
	}
	for i := range 4 {
		want := []QuorumEvent{{View: 0, Seq: 1}, {View: 0, Seq: 1, Committed: true}, {View: 0, Seq: 2}, {View: 0, Seq: 2, Committed: true}}
		if !slices.Equal(tn.quorums[i], want) {
			t.Fatalf("replica %d: quorums %+v, want %+v", i, tn.quorums[i], want)
		}
	}
	if len(tn.replyMs) != 8 {
		t.Fatalf("%d replies, want 2 from each replica", len(tn.replyMs))
	}
	for _, rm := range tn.replyMs {
		if rm.Seq != rm.Timestamp { // request ts executed in block ts
			t.Fatalf("reply to request %d names block %d", rm.Timestamp, rm.Seq)
		}
	}
}
