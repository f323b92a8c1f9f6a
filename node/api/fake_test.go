package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/node"
	"github.com/p2pbft/p2pbft/node/api/apitypes"
	"github.com/p2pbft/p2pbft/node/app/kv"
	"github.com/p2pbft/p2pbft/node/store"
	"github.com/p2pbft/p2pbft/node/trace"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

func seedKey(t testing.TB, name string) *identity.Key {
	t.Helper()
	seed := make([]byte, 32)
	copy(seed, name)
	k, err := identity.NewKeyFromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// fakeNode is a Backend that executes requests like a one-replica chain running the kv application:
// each (client, timestamp) once, in order per client, and a repeat answered from the cache.
type fakeNode struct {
	t        testing.TB
	g        *identity.Genesis
	keys     []*identity.Key
	ckey     *identity.Key
	reg      *prometheus.Registry
	started  chan struct{}
	stopped  chan struct{}
	blocks   map[uint64]*store.Block
	submitFn func(ctx context.Context, env *wire.Envelope) (*wire.Envelope, error) // overrides Submit
	tracer   *trace.Recorder                                                       // nil: tracing off

	mu        sync.Mutex
	kv        map[string][]byte
	height    uint64
	last      map[string]uint64 // client -> last executed timestamp
	replies   map[string]*wire.Envelope
	inFlight  map[string]int // client -> Submit calls in progress
	overlap   int            // Submit calls of one client with different timestamps at once
	inFlightT map[string]uint64
	asyncs    int
	submits   int
}

func newFakeNode(t testing.TB) *fakeNode {
	keys := make([]*identity.Key, 4)
	reps := make([]identity.Replica, 4)
	for i := range keys {
		keys[i] = seedKey(t, fmt.Sprintf("api-replica-%d", i))
		reps[i] = identity.Replica{PeerID: keys[i].PeerID()}
	}
	g, err := identity.NewGenesis("api-chain", reps)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "p2pbft_requests_executed_total", Help: "test"})
	c.Add(7)
	reg.MustRegister(c)
	f := &fakeNode{t: t, g: g, keys: keys, ckey: seedKey(t, "api-client"), reg: reg,
		started: make(chan struct{}), stopped: make(chan struct{}), blocks: map[uint64]*store.Block{},
		kv: map[string][]byte{}, last: map[string]uint64{}, replies: map[string]*wire.Envelope{},
		inFlight: map[string]int{}, inFlightT: map[string]uint64{}}
	close(f.started)
	return f
}

func (f *fakeNode) Status() apitypes.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return apitypes.Status{ChainID: "api-chain", Moniker: "fake", Replica: 1, N: 4, F: 1, PeerID: f.keys[1].PeerID().String(),
		View: 0, Primary: 0, Mode: "normal", Height: f.height, Head: f.height,
		Peers: []apitypes.Peer{{Replica: 0, PeerID: f.keys[0].PeerID().String()}, {Replica: 2, PeerID: f.keys[2].PeerID().String()}}}
}

func (f *fakeNode) Submit(ctx context.Context, env *wire.Envelope) (*wire.Envelope, error) {
	if f.submitFn != nil {
		return f.submitFn(ctx, env)
	}
	req, err := f.check(env)
	if err != nil {
		return nil, err
	}
	client := string(env.Author)
	f.mu.Lock()
	f.submits++
	if f.inFlight[client] > 0 && f.inFlightT[client] != req.Timestamp {
		f.overlap++
	}
	f.inFlight[client]++
	f.inFlightT[client] = req.Timestamp
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight[client]--
		f.mu.Unlock()
	}()
	return f.execute(env, req)
}

func (f *fakeNode) check(env *wire.Envelope) (*pbft.Request, error) {
	select {
	case <-f.stopped:
		return nil, node.ErrStopped
	default:
	}
	if env.Kind != wire.KindRequest || env.ChainID != "api-chain" {
		return nil, fmt.Errorf("node: %w: not a request of this chain", node.ErrRequestRejected)
	}
	v, _ := f.g.NewVerifier()
	if err := v.Verify(env); err != nil {
		return nil, fmt.Errorf("node: %w: %w", node.ErrRequestRejected, err)
	}
	req, err := pbft.DecodeRequest(env.Payload)
	if err != nil {
		return nil, fmt.Errorf("node: %w: %w", node.ErrRequestRejected, err)
	}
	return req, nil
}

func (f *fakeNode) execute(env *wire.Envelope, req *pbft.Request) (*wire.Envelope, error) {
	client := string(env.Author)
	f.mu.Lock()
	defer f.mu.Unlock()
	id := fmt.Sprintf("%x/%d", client, req.Timestamp)
	if r := f.replies[id]; r != nil {
		return r, nil
	}
	if pbft.ClassifyRequest(req.Timestamp, f.last[client]) != pbft.RequestNew {
		return nil, fmt.Errorf("node: %w: stale request", node.ErrRequestRejected)
	}
	f.last[client] = req.Timestamp
	f.height++
	var res kv.Result
	op, err := kv.DecodeOp(req.Op)
	switch {
	case err != nil:
		res = kv.Result{Status: kv.StatusInvalid, Error: "malformed"}
	case op.Type == kv.OpPut:
		f.kv[string(op.Key)] = op.Value
		res = kv.Result{Status: kv.StatusOK}
	case op.Type == kv.OpGet:
		res = kv.Result{Status: kv.StatusNotFound}
		if v, ok := f.kv[string(op.Key)]; ok {
			res = kv.Result{Status: kv.StatusOK, Value: v, Exists: true}
		}
	case op.Type == kv.OpDelete:
		res = kv.Result{Status: kv.StatusNotFound}
		if _, ok := f.kv[string(op.Key)]; ok {
			delete(f.kv, string(op.Key))
			res = kv.Result{Status: kv.StatusOK}
		}
	case op.Type == kv.OpCAS:
		v, ok := f.kv[string(op.Key)]
		if (op.ExpectAbsent && !ok) || (!op.ExpectAbsent && ok && bytes.Equal(v, op.Expect)) {
			f.kv[string(op.Key)] = op.Value
			res = kv.Result{Status: kv.StatusOK}
		} else {
			res = kv.Result{Status: kv.StatusConflict, Value: v, Exists: ok}
		}
	}
	out, err := kv.EncodeResult(res)
	if err != nil {
		return nil, err
	}
	r, err := makeReply(f.keys[1], "api-chain", 0, f.height, 1, env.Author, req.Timestamp, out)
	if err != nil {
		return nil, err
	}
	f.replies[id] = r
	return r, nil
}

func (f *fakeNode) SubmitAsync(env *wire.Envelope) error {
	if _, err := f.check(env); err != nil {
		return err
	}
	f.mu.Lock()
	f.asyncs++
	f.mu.Unlock()
	return nil
}

func (f *fakeNode) Query(q []byte) ([]byte, uint64, error) {
	op, err := kv.DecodeOp(q)
	if err != nil {
		return nil, 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	res := kv.Result{Status: kv.StatusNotFound}
	if v, ok := f.kv[string(op.Key)]; ok {
		res = kv.Result{Status: kv.StatusOK, Value: v, Exists: true}
	}
	b, err := kv.EncodeResult(res)
	return b, f.height, err
}

func (f *fakeNode) Block(h uint64) (*store.Block, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if b := f.blocks[h]; b != nil {
		return b, nil
	}
	return nil, fmt.Errorf("store: block %d: %w", h, store.ErrNotFound)
}

func (f *fakeNode) Head() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var h uint64
	for k := range f.blocks {
		h = max(h, k)
	}
	return h
}

func (f *fakeNode) Gatherer() prometheus.Gatherer { return f.reg }
func (f *fakeNode) ClientKey() *identity.Key      { return f.ckey }
func (f *fakeNode) Genesis() *identity.Genesis    { return f.g }
func (f *fakeNode) Started() <-chan struct{}      { return f.started }
func (f *fakeNode) Stopped() <-chan struct{}      { return f.stopped }

// OtherReplicas: the fake is a chain of one, with nobody to relay to.
func (f *fakeNode) OtherReplicas() []int { return nil }
func (f *fakeNode) SendRequest(context.Context, int, *wire.Envelope) error {
	return errors.New("fake: no other replica")
}
func (f *fakeNode) TraceEnabled() bool { return f.tracer != nil }
func (f *fakeNode) Traces(from uint64, limit int) ([]trace.Slot, []trace.ViewChange) {
	return f.tracer.Slots(from, limit), f.tracer.ViewChanges()
}

// addBlock adds a block at height h with one put request and a certificate of three commits; forge makes
// the last commit carry a bad signature.
func (f *fakeNode) addBlock(t testing.TB, h uint64, forge bool) *store.Block {
	t.Helper()
	op, _ := kv.EncodeOp(kv.Put([]byte(fmt.Sprintf("k%d", h)), []byte("v")))
	req, err := pbft.NewRequest(f.ckey, "api-chain", h, op)
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := req.Marshal()
	b := &store.Block{Height: h, View: 0, BatchDigest: pbft.BatchDigest([]wire.Digest{req.ID()}), Batch: [][]byte{rb}}
	if prev := f.blocks[h-1]; prev != nil {
		b.Prev = prev.Hash()
	}
	for i := 0; i < 3; i++ {
		p, _ := wire.Marshal(&pbft.Commit{View: 0, Seq: h, Digest: b.BatchDigest})
		e, err := wire.Seal(f.keys[i], "api-chain", wire.KindCommit, p)
		if err != nil {
			t.Fatal(err)
		}
		if forge && i == 2 {
			e.Sig = append([]byte(nil), e.Sig...)
			e.Sig[5] ^= 1
		}
		eb, _ := e.Marshal()
		b.Cert = append(b.Cert, eb)
	}
	f.mu.Lock()
	f.blocks[h] = b
	f.mu.Unlock()
	return b
}

// makeReply builds a one-leaf reply, as a replica sends for a batch of one request (checked against
// pbft.OpenReply by the handlers under test, which open every reply).
func makeReply(signer *identity.Key, chain string, view, seq uint64, replica int, client []byte, ts uint64, result []byte) (*wire.Envelope, error) {
	hdr, err := wire.Marshal(&pbft.ReplyHeader{View: view, Seq: seq, Replica: uint32(replica), Count: 1, Root: pbft.ReplyLeafHash(client, ts, result)})
	if err != nil {
		return nil, err
	}
	env, err := wire.Seal(signer, chain, wire.KindReply, hdr)
	if err != nil {
		return nil, err
	}
	body, err := wire.Marshal(&pbft.ReplyProof{Client: client, Timestamp: ts, Result: result})
	if err != nil {
		return nil, err
	}
	env.Body = body
	return env, nil
}

var errBoom = errors.New("boom")
