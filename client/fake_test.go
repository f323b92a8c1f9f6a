package client

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/p2p"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreTopFunction("github.com/libp2p/go-libp2p/p2p/transport/quicreuse.(*reuse).gc"),
	)
}

// testLogger logs to the test log when CLIENT_TEST_LOG is set, and nowhere otherwise.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("CLIENT_TEST_LOG") == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	w := &tWriter{t: t}
	t.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// tWriter writes log lines to the test's log until the test's cleanup: goroutines that outlive a host's
// Close by a moment (pubsub's shutdown line) must not log into a finished test.
type tWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *tWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(p))
	}
	return len(p), nil
}

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

// Behaviours of a fake replica.
type mode int32

const (
	honest       mode = iota
	wrongResult       // a validly signed reply with another result
	silent            // takes requests and never answers nor orders them
	refuse            // refuses requests with a notice
	forged            // a reply signed by another replica's key
	badProof          // a signed header whose Merkle root does not match the result in the proof
	otherTS           // a validly signed reply for another timestamp
	otherReplica      // a reply whose header names another replica index
)

func (m mode) String() string {
	return [...]string{"honest", "wrong-result", "silent", "refuse", "forged", "bad-proof", "other-ts", "other-replica"}[m]
}

type arrival struct {
	client string
	ts     uint64
}

type clientRow struct {
	ts     uint64
	seq    uint64
	result []byte
}

// fakeReplica serves client links on a real p2p host the way a replica does, without consensus: the
// replica that believes itself primary (its view mod n) "orders" every request it receives by having every
// replica of the cluster execute it; a backup executes only what a client sent it directly (as a replica
// does once a broadcast request is ordered). Each replica executes a client's requests once, in timestamp
// order, answers a repeat with the cached result, and pushes its reply to the client's link. Its
// "application" answers op with "ok:"+op. Its mode makes it misbehave.
type fakeReplica struct {
	t     testing.TB
	c     *cluster
	i     int
	key   *identity.Key
	other *identity.Key // another replica's key, for forged replies
	host  *p2p.Host
	chain string
	mode  atomic.Int32
	view  atomic.Uint64
	// finalRefusal makes refuse mode's notices final.
	finalRefusal bool
	// hold, while set, holds back this replica's replies until it is closed.
	hold atomic.Pointer[chan struct{}]
	// exec, if set, is the replica's application (called under mu, once per executed request);
	// otherwise the result is "ok:"+op.
	exec func(client string, ts uint64, op []byte) []byte

	// stop ends the goroutines that wait to push a reply (wg), at the end of the test.
	stop chan struct{}
	wg   sync.WaitGroup

	mu       sync.Mutex
	arrivals []arrival
	table    map[string]*clientRow
	seq      uint64
}

func (r *fakeReplica) setMode(m mode) { r.mode.Store(int32(m)) }

func (r *fakeReplica) setExec(f func(client string, ts uint64, op []byte) []byte) {
	r.mu.Lock()
	r.exec = f
	r.mu.Unlock()
}

func (r *fakeReplica) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.arrivals)
}

func (r *fakeReplica) arrivalsCopy() []arrival {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]arrival(nil), r.arrivals...)
}

// onLink is the replica's link handler: requests a client sent to it. As a real replica does, the primary
// orders every request it receives; a backup does nothing with a first-round request (it waits for the
// primary's pre-prepare) and executes a retransmitted one itself.
func (r *fakeReplica) onLink(from *p2p.ClientLink, lrs []p2p.LinkRequest) {
	for _, lr := range lrs {
		e := lr.Envelope
		req, err := pbft.DecodeRequest(e.Payload)
		if err != nil {
			continue
		}
		r.mu.Lock()
		r.arrivals = append(r.arrivals, arrival{client: string(e.Author), ts: req.Timestamp})
		r.mu.Unlock()
		switch mode(r.mode.Load()) {
		case silent:
			continue
		case refuse:
			data, err := wire.Marshal(&pbft.Notice{Client: e.Author, Timestamp: req.Timestamp, Reason: "refused", Final: r.finalRefusal})
			if err != nil {
				r.t.Error(err)
				continue
			}
			from.Push(append([]byte{pbft.PushNotice}, data...))
			continue
		}
		switch {
		case int(r.view.Load()%uint64(len(r.c.replicas))) == r.i:
			for _, o := range r.c.replicas {
				o.execute(e, req)
			}
		case lr.Retry:
			r.execute(e, req)
		}
	}
}

// execute executes a request (once per client and timestamp) and pushes the reply to the client's link.
func (r *fakeReplica) execute(e *wire.Envelope, req *pbft.Request) {
	if mode(r.mode.Load()) == silent {
		return
	}
	client := string(e.Author)
	r.mu.Lock()
	row := r.table[client]
	var seq uint64
	var result []byte
	switch {
	case row != nil && req.Timestamp < row.ts:
		r.mu.Unlock()
		return
	case row != nil && req.Timestamp == row.ts:
		seq, result = row.seq, row.result
	default:
		r.seq++
		seq, result = r.seq, append([]byte("ok:"), req.Op...)
		if r.exec != nil {
			result = r.exec(client, req.Timestamp, req.Op)
		}
		r.table[client] = &clientRow{ts: req.Timestamp, seq: seq, result: result}
	}
	r.mu.Unlock()

	signer, idx, ts := r.key, r.i, req.Timestamp
	root := (*wire.Digest)(nil)
	switch mode(r.mode.Load()) {
	case wrongResult:
		result = append([]byte("evil:"), req.Op...)
	case forged:
		signer = r.other
	case otherTS:
		ts--
	case otherReplica:
		idx = (idx + 1) % len(r.c.replicas)
	case badProof:
		d := pbft.ReplyLeafHash(e.Author, ts, []byte("something else"))
		root = &d
	}
	env, err := makeReply(r.t, signer, r.chain, r.view.Load(), seq, idx, e.Author, ts, result, root)
	if err != nil {
		r.t.Error(err)
		return
	}
	proof, err := pbft.DecodeReplyProof(env.Body)
	if err != nil {
		r.t.Error(err)
		return
	}
	leaf := pbft.ReplyLeaf{Index: proof.Index, Client: proof.Client, Timestamp: proof.Timestamp, Result: proof.Result}
	data, err := wire.Marshal(&pbft.ReplyBundle{Header: env.WithoutBody(), Leaves: []pbft.ReplyLeaf{leaf}})
	if err != nil {
		r.t.Error(err)
		return
	}
	hold := r.hold.Load()
	if l := r.host.LinkFor(e.Author); l != nil && hold == nil {
		l.Push(append([]byte{pbft.PushReplies}, data...))
		return
	}
	// The primary executes a request at every fake replica the moment it arrives, which may be before
	// another replica has read the client's hello on its own link (a real replica executes after
	// consensus): wait for the route, as long as the client may wait.
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if hold != nil {
			select {
			case <-*hold:
			case <-r.stop:
				return
			}
		}
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			if l := r.host.LinkFor(e.Author); l != nil {
				l.Push(append([]byte{pbft.PushReplies}, data...))
				return
			}
			select {
			case <-tick.C:
			case <-r.stop:
				return
			}
		}
	}()
}

// makeReply builds a one-leaf KindReply envelope, as a replica sends for a batch of one request. root
// overrides the signed root (to forge a bad proof).
func makeReply(t testing.TB, signer *identity.Key, chain string, view, seq uint64, replica int, client []byte, ts uint64, result []byte, root *wire.Digest) (*wire.Envelope, error) {
	leaf := pbft.ReplyLeafHash(client, ts, result)
	if root == nil {
		root = &leaf
	}
	hdr, err := wire.Marshal(&pbft.ReplyHeader{View: view, Seq: seq, Replica: uint32(replica), Count: 1, Root: *root})
	if err != nil {
		return nil, err
	}
	env, err := wire.Seal(signer, chain, wire.KindReply, hdr)
	if err != nil {
		return nil, err
	}
	body, err := wire.Marshal(&pbft.ReplyProof{Index: 0, Client: client, Timestamp: ts, Result: result})
	if err != nil {
		return nil, err
	}
	env.Body = body
	return env, nil
}

type cluster struct {
	g        *identity.Genesis
	replicas []*fakeReplica
	addrs    []string
}

// startCluster starts n fake replicas on 127.0.0.1. The genesis lists no addresses: clients bootstrap
// from the replicas' multiaddrs.
func startCluster(t *testing.T, name string, n int) *cluster {
	t.Helper()
	keys := make([]*identity.Key, n)
	reps := make([]identity.Replica, n)
	for i := range keys {
		keys[i] = seedKey(t, fmt.Sprintf("%s-replica-%d", name, i))
		reps[i] = identity.Replica{Name: fmt.Sprintf("r%d", i), PeerID: keys[i].PeerID()}
	}
	g, err := identity.NewGenesis(name, reps)
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{g: g}
	for i, k := range keys {
		h, err := p2p.New(p2p.Config{
			Key: k, Genesis: g, Logger: testLogger(t).With("replica", i),
			ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
			RedialMin:   50 * time.Millisecond, RedialMax: time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		r := &fakeReplica{t: t, c: c, i: i, key: k, other: keys[(i+1)%n], host: h, chain: name,
			table: make(map[string]*clientRow), stop: make(chan struct{})}
		t.Cleanup(func() { close(r.stop); r.wg.Wait() })
		h.SetLinkHandler(r.onLink)
		c.replicas = append(c.replicas, r)
		c.addrs = append(c.addrs, h.Addrs()[0].String())
	}
	return c
}

func (c *cluster) client(t *testing.T, name string, mutate func(*Config)) *Client {
	t.Helper()
	cfg := Config{
		Key: seedKey(t, name), Genesis: c.g, Bootstrap: c.addrs, Logger: testLogger(t).With("client", name),
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, RetryTimeout: 200 * time.Millisecond,
		MaxRetryTimeout: time.Second,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	cl, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cl.WaitConnected(ctx, c.g.N()); err != nil {
		t.Fatal(err)
	}
	return cl
}

func (c *cluster) totalArrivals() int {
	n := 0
	for _, r := range c.replicas {
		n += r.count()
	}
	return n
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
