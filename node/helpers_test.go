package node

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/node/app"
	"github.com/p2pbft/p2pbft/node/app/kv"
	"github.com/p2pbft/p2pbft/node/config"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// go-libp2p's log machinery and quic-go's reuse GC are per process, not per host.
		goleak.IgnoreAnyFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreTopFunction("github.com/libp2p/go-libp2p/p2p/transport/quicreuse.(*reuse).gc"),
		// pebble's per-process table cache release loop and the CBOR decoder's caches.
		goleak.IgnoreAnyFunction("github.com/cockroachdb/pebble.(*tableCacheShard).releaseLoop"),
	)
}

const testChain = "node-test"

// testLogger logs to the test log when NODE_TEST_LOG is set (NODE_TEST_LOG=debug for everything).
func testLogger(t testing.TB) *slog.Logger {
	lv := os.Getenv("NODE_TEST_LOG")
	if lv == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	level := slog.LevelInfo
	if lv == "debug" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: level}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testKey(t testing.TB, name string) *identity.Key {
	t.Helper()
	seed := sha256.Sum256([]byte(name))
	k, err := identity.NewKeyFromSeed(seed[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// cluster is n in-process replicas, each with its own home (key, genesis, config, pebble store), talking
// over real libp2p hosts on 127.0.0.1.
type cluster struct {
	t       testing.TB
	keys    []*identity.Key
	genesis *identity.Genesis
	homes   []string
	cfgs    []config.Config
	nodes   []*Node
	cancels []context.CancelFunc
	errs    []chan error
	hooks   []*hooks
	// experiments, if set, gives replica i its Options.Experiment (a Byzantine mode).
	experiments []*Experiment
	value       string // the value load puts (default "v")
	// newApp, if set, gives replica i its application at every start (nil: the built-in kv); opFor the
	// operation load submits (nil: a kv put).
	newApp func(i int) app.Application
	opFor  func(key, value string) []byte
	// logger, if set, gives replica i its logger at every start (nil: testLogger), for tests that check
	// what a replica logs.
	logger func(i int) *slog.Logger
}

// newCluster prepares n replicas; mutate adjusts every replica's configuration. Nothing runs yet.
func newCluster(t testing.TB, n int, mutate func(*config.Config)) *cluster {
	t.Helper()
	c := &cluster{t: t, nodes: make([]*Node, n), cancels: make([]context.CancelFunc, n), errs: make([]chan error, n),
		hooks: make([]*hooks, n)}
	reps := make([]identity.Replica, n)
	for i := range n {
		k := testKey(t, fmt.Sprintf("%s-replica-%d", t.Name(), i))
		c.keys = append(c.keys, k)
		reps[i] = identity.Replica{Name: fmt.Sprintf("r%d", i), PeerID: k.PeerID()}
	}
	g, err := identity.NewGenesis(testChain, reps)
	if err != nil {
		t.Fatal(err)
	}
	c.genesis = g
	base := t.TempDir()
	for i := range n {
		home := filepath.Join(base, fmt.Sprintf("r%d", i))
		if err := identity.SaveKey(filepath.Join(home, config.KeyFile), c.keys[i]); err != nil {
			t.Fatal(err)
		}
		if err := g.Save(filepath.Join(home, config.GenesisFile)); err != nil {
			t.Fatal(err)
		}
		cfg := testConfig(home, i)
		if mutate != nil {
			mutate(&cfg)
		}
		c.homes = append(c.homes, home)
		c.cfgs = append(c.cfgs, cfg)
	}
	t.Cleanup(c.stopAll)
	return c
}

// testConfig is a configuration fit for tests: loopback, small timeouts, small checkpoints.
func testConfig(home string, i int) config.Config {
	cfg := config.Default()
	cfg.Home = home
	cfg.Moniker = fmt.Sprintf("r%d", i)
	cfg.P2P.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.API.HTTP = ""
	cfg.Consensus.Tick = 10 * time.Millisecond
	cfg.Consensus.CheckpointInterval = 8
	cfg.Consensus.Window = 16
	cfg.Consensus.MaxInFlight = 8
	cfg.Consensus.RequestTimeout = 1500 * time.Millisecond
	cfg.Consensus.ViewChangeTimeout = 1500 * time.Millisecond
	cfg.StateSync.RequestTimeout = 5 * time.Second
	return cfg
}

// start starts replica i, bootstrapping from every running replica.
func (c *cluster) start(i int) *Node {
	c.t.Helper()
	cfg := c.cfgs[i]
	cfg.P2P.Bootstrap = nil
	for j, o := range c.nodes {
		if o != nil && j != i {
			cfg.P2P.Bootstrap = append(cfg.P2P.Bootstrap, o.Addrs()[0].String())
		}
	}
	logger := testLogger(c.t)
	if c.logger != nil {
		logger = c.logger(i)
	}
	opts := Options{Logger: logger.With("node", i)}
	if c.newApp != nil {
		opts.App = c.newApp(i)
	}
	if c.experiments != nil {
		opts.Experiment = c.experiments[i]
	}
	n, err := New(cfg, opts)
	if err != nil {
		c.t.Fatalf("start replica %d: %v", i, err)
	}
	n.hooks = c.hooks[i]
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- n.Run(ctx) }()
	select {
	case <-n.Started():
	case err := <-errc:
		c.t.Fatalf("replica %d stopped at once: %v", i, err)
	}
	c.nodes[i], c.cancels[i], c.errs[i] = n, cancel, errc
	return n
}

func (c *cluster) startAll() {
	for i := range c.nodes {
		c.start(i)
	}
	c.waitConnected(30 * time.Second)
}

// stop stops replica i and checks that it shut down without error.
func (c *cluster) stop(i int) {
	c.t.Helper()
	if c.nodes[i] == nil {
		return
	}
	c.cancels[i]()
	select {
	case err := <-c.errs[i]:
		if err != nil {
			c.t.Errorf("replica %d: Run: %v", i, err)
		}
	case <-time.After(30 * time.Second):
		c.t.Fatalf("replica %d did not stop", i)
	}
	c.nodes[i] = nil
}

func (c *cluster) stopAll() {
	for i := range c.nodes {
		c.stop(i)
	}
}

func (c *cluster) running() []*Node {
	var out []*Node
	for _, n := range c.nodes {
		if n != nil {
			out = append(out, n)
		}
	}
	return out
}

// waitConnected waits until every running replica is connected to every other running one.
func (c *cluster) waitConnected(d time.Duration) {
	c.t.Helper()
	// Connected is not enough when consensus messages go over gossip: a message published before the
	// publisher learned that a peer joined the topic never reaches that peer. An honest replica fetches
	// what it missed, but a Byzantine one whose fetches are garbage (TestWrongReplyOpens) never would.
	// WaitForReplicas with a context already cancelled answers from the topic's peers at once.
	done, cancel := context.WithCancel(context.Background())
	cancel()
	waitFor(c.t, d, "replicas connected and on the gossip topic", func() bool {
		live := c.running()
		for _, n := range live {
			if len(n.host.ConnectedReplicas()) < len(live)-1 || n.host.WaitForReplicas(done, len(live)-1) != nil {
				return false
			}
		}
		return true
	})
}

// waitHeight waits until every running replica executed at least h.
// waitCaughtUp waits, within d, until every running replica has reached the highest height any of them
// has now.
func (c *cluster) waitCaughtUp(d time.Duration) {
	c.t.Helper()
	h := uint64(0)
	for _, n := range c.running() {
		h = max(h, n.Status().Height)
	}
	c.waitHeight(h, d)
}

func (c *cluster) waitHeight(h uint64, d time.Duration) {
	c.t.Helper()
	waitFor(c.t, d, fmt.Sprintf("height %d everywhere", h), func() bool {
		for _, n := range c.running() {
			if n.Status().Height < h {
				return false
			}
		}
		return true
	})
}

// checkAgreement checks that the running replicas hold the same chain where they overlap and the same
// application digest at the same height.
func (c *cluster) checkAgreement() {
	c.t.Helper()
	live := c.running()
	type at struct {
		height uint64
		digest string
	}
	var ref *Node
	for _, n := range live {
		if ref == nil || n.Head() < ref.Head() {
			ref = n
		}
	}
	h := ref.Head()
	for _, n := range live {
		if a := n.state.Load().stats.SafetyAlarms; a > 0 {
			c.t.Fatalf("replica %d raised %d safety alarms", n.self, a)
		}
		for height := h; height >= 1 && height+64 > h; height-- {
			a, errA := ref.Block(height)
			b, errB := n.Block(height)
			if errA != nil || errB != nil {
				continue // below a state-transfer jump
			}
			if a.Hash() != b.Hash() {
				c.t.Fatalf("replicas %d and %d hold different blocks at %d", ref.self, n.self, height)
			}
			if a.AppDigest != b.AppDigest {
				c.t.Fatalf("replicas %d and %d have different app digests at %d", ref.self, n.self, height)
			}
		}
	}
}

// client is a test client: one key, one request at a time, submitted to every running replica; it
// accepts the result once f+1 replicas sent matching replies.
type client struct {
	c   *cluster
	key *identity.Key
	ts  uint64
}

func (c *cluster) client(name string) *client {
	return &client{c: c, key: testKey(c.t, c.t.Name()+"-client-"+name)}
}

func putOp(t testing.TB, k, v string) []byte {
	op, err := kv.EncodeOp(kv.Put([]byte(k), []byte(v)))
	if err != nil {
		t.Fatal(err)
	}
	return op
}

func (cl *client) request(op []byte) *wire.Envelope {
	// Unix nanoseconds, strictly increasing: a client key reused by a later phase still moves forward.
	cl.ts = max(cl.ts+1, uint64(time.Now().UnixNano()))
	e, err := pbft.NewRequest(cl.key, testChain, cl.ts, op)
	if err != nil {
		cl.c.t.Fatal(err)
	}
	return e
}

// do submits op and waits for f+1 matching replies.
func (cl *client) do(ctx context.Context, op []byte) (*pbft.Reply, error) {
	return cl.submit(ctx, cl.request(op))
}

func (cl *client) submit(ctx context.Context, req *wire.Envelope) (*pbft.Reply, error) {
	c := cl.c
	p, _ := pbft.DecodeRequest(req.Payload)
	v, err := c.genesis.NewVerifier()
	if err != nil {
		return nil, err
	}
	coll := pbft.NewReplyCollector(testChain, c.genesis.PublicKeys(), v, cl.key.PublicKey())
	coll.Await(p.Timestamp)
	ctx, cancel := context.WithCancel(ctx)
	replies := make(chan *wire.Envelope, len(c.nodes))
	errs := make(chan error, len(c.nodes))
	var wg sync.WaitGroup
	// Cancel first: a replica that never answers (a silent one) returns only then.
	defer func() { cancel(); wg.Wait() }()
	live := c.running()
	for _, n := range live {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := n.Submit(ctx, req)
			if err != nil {
				errs <- err
				return
			}
			replies <- r
		}()
	}
	var errList []error
	for range live {
		select {
		case r := <-replies:
			rep, err := coll.Add(r)
			if err != nil {
				return nil, err
			}
			if rep != nil {
				return rep, nil
			}
		case err := <-errs:
			errList = append(errList, err)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return nil, fmt.Errorf("no f+1 matching replies: %w", errors.Join(errList...))
}

// load runs clients concurrently, each doing `each` puts one after the other; keys are prefixed.
func (c *cluster) load(ctx context.Context, prefix string, clients, each int) error {
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := c.client(fmt.Sprintf("%s-%d", prefix, i))
			for j := range each {
				v := c.value
				if v == "" {
					v = "v"
				}
				op := putOp(c.t, fmt.Sprintf("%s-%d-%d", prefix, i, j), v)
				if c.opFor != nil {
					op = c.opFor(fmt.Sprintf("%s-%d-%d", prefix, i, j), v)
				}
				if _, err := cl.do(ctx, op); err != nil {
					errs <- fmt.Errorf("client %s-%d request %d: %w", prefix, i, j, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return errors.Join(func() (out []error) {
		for err := range errs {
			out = append(out, err)
		}
		return
	}()...)
}

// counterValue reads a counter.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

// waitFor polls cond until it holds or the deadline passes (never a fixed sleep the test relies on).
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
