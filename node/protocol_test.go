package node

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/node/app/kv"
	"github.com/p2pbft/p2pbft/node/statesync"
	"github.com/p2pbft/p2pbft/p2p"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// clientHost starts a p2p host for a client key that knows every running replica's address.
func (c *cluster) clientHost(key *identity.Key) *p2p.Host {
	c.t.Helper()
	var boot []string
	for _, n := range c.running() {
		boot = append(boot, n.Addrs()[0].String())
	}
	h, err := p2p.New(p2p.Config{Key: key, Genesis: c.genesis, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		Bootstrap: boot, Logger: testLogger(c.t).With("node", "client")})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { h.Close() })
	return h
}

// requestAll sends req to every replica over the p2p request protocol and returns the answers by replica.
func requestAll(ctx context.Context, h *p2p.Host, g *identity.Genesis, req *wire.Envelope) ([]*wire.Envelope, []error) {
	resps := make([]*wire.Envelope, g.N())
	errs := make([]error, g.N())
	var wg sync.WaitGroup
	for i := range g.N() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resps[i], errs[i] = h.Request(ctx, g.PeerID(i), req)
		}()
	}
	wg.Wait()
	return resps, errs
}

// A client on its own libp2p host sends its signed request to every replica with p2p Host.Request and
// accepts f+1 matching replies; a retry with the same timestamp gets the cached replies; an older
// timestamp is refused.
func TestClientProtocolOverP2P(t *testing.T) {
	c := newCluster(t, 4, nil)
	c.startAll()
	key := testKey(t, "p2p-client")
	h := c.clientHost(key)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	v, _ := c.genesis.NewVerifier()
	coll := pbft.NewReplyCollector(testChain, c.genesis.PublicKeys(), v, key.PublicKey())
	ts := uint64(time.Now().UnixNano())
	req, err := pbft.NewRequest(key, testChain, ts, putOp(t, "over-p2p", "yes"))
	if err != nil {
		t.Fatal(err)
	}
	for round := range 2 { // the second round is a retry: the cached replies
		coll.Await(ts)
		resps, errs := requestAll(ctx, h, c.genesis, req)
		var accepted *pbft.Reply
		for i, r := range resps {
			if errs[i] != nil {
				t.Fatalf("round %d: replica %d: %v", round, i, errs[i])
			}
			rep, err := coll.Add(r)
			if err != nil {
				t.Fatalf("round %d: replica %d: bad reply: %v", round, i, err)
			}
			if rep != nil && accepted == nil {
				accepted = rep
			}
		}
		if accepted == nil {
			t.Fatalf("round %d: no f+1 matching replies", round)
		}
		res, err := kv.DecodeResult(accepted.Result)
		if err != nil || res.Status != kv.StatusOK {
			t.Fatalf("round %d: result %+v, %v", round, res, err)
		}
	}
	old, _ := pbft.NewRequest(key, testChain, ts-1, putOp(t, "over-p2p", "older"))
	_, errs := requestAll(ctx, h, c.genesis, old)
	for i, err := range errs {
		var re *p2p.RemoteError
		if !errors.As(err, &re) {
			t.Fatalf("replica %d accepted a request older than the last executed one: %v", i, err)
		}
	}
	for _, n := range c.running() {
		q, _ := kv.EncodeOp(kv.Get([]byte("over-p2p")))
		ans, _, err := n.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		if res, _ := kv.DecodeResult(ans); string(res.Value) != "yes" {
			t.Fatalf("replica %d: value %q", n.self, res.Value)
		}
	}
}

// Malformed, forged, replayed, out-of-place and oversized input, from clients and from a replica key,
// through every door of the node, is refused with an error, counted, and changes nothing: the replicas
// keep committing and agree.
func TestBadInputDoesNotHurt(t *testing.T) {
	c := newCluster(t, 4, nil)
	c.startAll()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.load(ctx, "a", 2, 3); err != nil {
		t.Fatal(err)
	}
	key := testKey(t, "attacker")
	h := c.clientHost(key)
	n0 := c.nodes[0]
	seal := func(s wire.Signer, chain string, k wire.Kind, payload []byte) *wire.Envelope {
		e, err := wire.Seal(s, chain, k, payload)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	goodReq, _ := pbft.NewRequest(key, testChain, 7, putOp(t, "x", "y"))
	forged := *goodReq
	forged.Sig = append([]byte(nil), goodReq.Sig...)
	forged.Sig[5] ^= 1
	stateReq := func(r *statesync.Request) *wire.Envelope {
		e, err := statesync.NewRequest(key, testChain, r)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	garbage := map[string]*wire.Envelope{
		"request payload not CBOR":    seal(key, testChain, wire.KindRequest, []byte{0xff, 0x00, 0x13}),
		"request zero timestamp":      seal(key, testChain, wire.KindRequest, mustMarshal(t, &pbft.Request{Op: []byte("x")})),
		"request for another chain":   seal(key, "other-chain", wire.KindRequest, goodReq.Payload),
		"forged request signature":    &forged,
		"prepare by a non-member":     seal(key, testChain, wire.KindPrepare, mustMarshal(t, &pbft.Prepare{View: 0, Seq: 5})),
		"reply kind as a request":     seal(key, testChain, wire.KindReply, []byte{1}),
		"state request bad type":      stateReq(&statesync.Request{Type: 99, Seq: 1}),
		"state request bad range":     stateReq(&statesync.Request{Type: statesync.TypeBlocks, Seq: 10, To: 2}),
		"state request no snapshot":   stateReq(&statesync.Request{Type: statesync.TypeManifest, Seq: 1 << 40}),
		"state request table offset":  stateReq(&statesync.Request{Type: statesync.TypeTable, Seq: 8, Offset: 1 << 50}),
		"state request chunk cursor":  stateReq(&statesync.Request{Type: statesync.TypeChunk, Seq: 3, Cursor: []byte{0xff}}),
		"state request missing block": stateReq(&statesync.Request{Type: statesync.TypeBlocks, Seq: 1 << 40, To: 1<<40 + 5}),
		"state request payload junk":  seal(key, testChain, wire.KindStateRequest, []byte("junk")),
	}
	for name, e := range garbage {
		_, err := h.Request(ctx, n0.host.ID(), e)
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
		// The node's own API refuses what is not a valid request too.
		if e.Kind == wire.KindRequest || e.Kind == wire.KindReply {
			if _, err := n0.Submit(ctx, e); err == nil {
				t.Errorf("%s: Submit accepted it", name)
			}
		}
	}
	// A replica key (replica 3's, as a Byzantine replica would) signs nonsense straight into replica 0's
	// loop, past the p2p checks: the engine must refuse all of it.
	byz := c.keys[3]
	bad := []*wire.Envelope{
		seal(byz, testChain, wire.KindPrepare, []byte{0x80}),
		seal(byz, testChain, wire.KindPrePrepare, mustMarshal(t, &pbft.PrePrepare{View: 0, Seq: 1000000, Digest: wire.Digest{1}})),
		seal(byz, testChain, wire.KindCommit, mustMarshal(t, &pbft.Commit{View: 99, Seq: 3, Digest: wire.Digest{2}})),
		seal(byz, testChain, wire.KindCheckpoint, mustMarshal(t, &pbft.Checkpoint{Seq: 5, Digest: wire.Digest{3}})),
		seal(byz, testChain, wire.KindViewChange, []byte("not a view change")),
		seal(byz, testChain, wire.KindNewView, mustMarshal(t, &pbft.NewView{View: 7})),
		seal(byz, testChain, wire.KindFetch, mustMarshal(t, &pbft.Fetch{Items: make([]pbft.FetchItem, 300)})),
		seal(byz, testChain, wire.KindFetchReply, []byte{}),
	}
	pp := seal(byz, testChain, wire.KindPrePrepare, mustMarshal(t, &pbft.PrePrepare{View: 0, Seq: 20, Digest: wire.Digest{4}}))
	pp.Body = []byte("not a batch")
	bad = append(bad, pp)
	for _, e := range bad {
		select {
		case n0.inbox <- inMsg{d: p2p.Delivery{Envelope: e, Author: 3, From: peer.ID("x"), FromReplica: 3}}:
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	if err := c.load(ctx, "b", 2, 3); err != nil {
		t.Fatal(err)
	}
	c.waitHeight(c.nodes[1].Status().Height, 20*time.Second)
	c.checkAgreement()
	// Everything was counted: the engine's verdicts on the replica-signed junk, the p2p host's on the rest.
	notUsed := sumMetric(t, n0, "p2pbft_consensus_messages_total", "result", "rejected") +
		sumMetric(t, n0, "p2pbft_consensus_messages_total", "result", "ignored")
	if notUsed < float64(len(bad)-1) { // the commit for view 99 is kept for later, not refused
		t.Fatalf("the engine refused %v of %d junk messages", notUsed, len(bad))
	}
	if p2pRejected := sumMetric(t, n0, "p2pbft_p2p_messages_total", "result", "rejected"); p2pRejected < 3 {
		t.Fatalf("the p2p host counted %v rejected messages", p2pRejected)
	}
}

// sumMetric sums the samples of a metric family whose label has the given value.
func sumMetric(t testing.TB, n *Node, family, label, value string) float64 {
	t.Helper()
	mfs, err := n.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != family {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := wire.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
