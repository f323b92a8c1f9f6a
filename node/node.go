package node

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/node/api/apitypes"
	"github.com/p2pbft/p2pbft/node/app"
	"github.com/p2pbft/p2pbft/node/app/kv"
	"github.com/p2pbft/p2pbft/node/config"
	"github.com/p2pbft/p2pbft/node/signstate"
	"github.com/p2pbft/p2pbft/node/statesync"
	"github.com/p2pbft/p2pbft/node/store"
	"github.com/p2pbft/p2pbft/node/trace"
	"github.com/p2pbft/p2pbft/p2p"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// ClientKeyFile is the name, inside the home directory, of the client key the node holds for its HTTP API
// (see ClientKey).
const ClientKeyFile = "client_key"

// Options are the node's run-time dependencies; the zero value is usable.
type Options struct {
	// App is the replicated application. Nil: OpenApp, or else the built-in key-value store (package kv),
	// kept in the node's store.
	App app.Application
	// OpenApp opens the replicated application on the namespace of the node's store lent to it (used when
	// App is nil). An application that keeps durable state opens it here, so its writes share the node's
	// atomic, fsynced batches with the blocks (see package app, "Why this shape"). Nil: the built-in
	// key-value store, kv.Open.
	OpenApp func(app.Storage) (app.Application, error)
	// Logger receives the node's logs. Nil: slog.Default().
	Logger *slog.Logger
	// Registry receives every collector of the node and of its p2p host. Nil: a new registry (see
	// Gatherer).
	Registry *prometheus.Registry
	// Experiment makes the replica Byzantine on purpose, for fault-injection experiments (see
	// Experiment; ExperimentFromConfig builds it from the configuration). Nil: a correct replica.
	Experiment *Experiment
}

// ErrStopped is returned by calls that need the event loop once the node has stopped (or before Run).
var ErrStopped = errors.New("node: stopped")

// Node is one running replica. Create it with New, run it with Run; Status, Submit, Query and the other
// methods are safe for concurrent use.
//
// Its fields are grouped by concern, and each group says which goroutine owns it. What handling one of the
// engine's Readies needs (persist, execute, the outbox) is the driver's (drv, driver.go).
type Node struct {
	nodeIdentity
	components
	verification
	loopState
	loopInputs
	published
	lifecycle
	testHooks
	experiment
}

// nodeIdentity is who the replica is and how it is configured: set by New, read-only afterwards.
type nodeIdentity struct {
	cfg       config.Config
	log       *slog.Logger
	key       *identity.Key
	pub       []byte // key's public key
	clientKey *identity.Key
	genesis   *identity.Genesis
	chainID   string
	self      int
	n         int
	quorum    pbft.Quorums
	ckptK     uint64
	// gossipKinds are the kinds broadcast over gossip (the rest over direct streams).
	gossipKinds map[wire.Kind]bool
}

// components are the replica's parts, opened by New (open) and closed by release; the fields are set
// once, and each part is safe for the goroutines that use it (or says who may call it).
type components struct {
	store *store.Store
	// signed is the signed high-water mark's file (signed.go); signedMark arms the engine's guard when
	// the store holds less than it. Raised by the outbox goroutine.
	signed     *signstate.File
	signedMark pbft.Mark
	app        app.Application
	querier    app.Querier
	appMu      sync.Mutex  // serializes application calls between the loop and the state-transfer goroutine
	restoring  atomic.Bool // a snapshot restore is in progress: no execution (set and cleared under appMu)
	host       *p2p.Host
	registry   *prometheus.Registry
	metrics    *metrics
	// tracer keeps the per-slot records (tracing.go); nil when trace.enabled is off.
	tracer *trace.Recorder

	waiters waiterTable // in-process callers waiting for replies (submit.go); guards itself
	// replies sends the replies of executed requests to the clients' links, off the loop (links.go).
	replies *replier
}

// verification is the signature checking shared by the p2p host's goroutines, the ingress and the engine
// (verify.go); set by open, each part guards itself.
type verification struct {
	// sigs is the replica's one verified-signature cache, shared by the p2p host, the verifier pool and
	// the engine (verify.go).
	sigs *wire.SigCache
	// trusted are requests a backup took from their author's routed link (links.go): no signature
	// check when a pre-prepare brings them. Kept apart from sigs, which only verified signatures enter.
	trusted  *wire.SigCache
	vstats   *verifyStats
	pool     *verifyPool
	verifier *engineVerifier // the engine's
	idv      *identity.Verifier
}

// loopState is owned by the event loop goroutine (set up by New before it runs).
type loopState struct {
	rep          *pbft.Replica
	soft         pbft.SoftState
	sync         *statesync.Syncer // state transfer (statesync.go); called from the loop only
	lastStatsPub int64
	// drv handles the engine's Readies (driver.go); its outbox is shared with its runOutbox goroutine.
	drv *readyDriver
}

// loopInputs are the channels the event loop reads; other goroutines write them.
type loopInputs struct {
	inbox      chan inMsg
	proposals  chan *proposal
	linkReqs   chan linkBatch // verified requests from client links, a read batch at a time
	syncCh     chan syncEvent
	executedCh chan executedBlocks // durable executed blocks, from the outbox
	fatalCh    chan error          // a failed sync or a simulated crash, from the outbox
}

// published is what the loop publishes for other goroutines (Status, the API, the p2p filter, the health
// check, state-transfer serving): written by the loop, read by anyone.
type published struct {
	state           atomic.Pointer[publicState]
	retransmitTicks atomic.Int64 // the engine's current RetransmitTimeout (health.go)
	filterV         atomic.Pointer[filterView]
	snapMu          sync.Mutex
	snaps           map[uint64]*pbft.Snapshot // the engine's part of the snapshots this replica serves
}

// lifecycle is Run's and Close's state, under lifeMu (readMu for closed), shared by every goroutine.
type lifecycle struct {
	lifeMu    sync.Mutex
	runState  int                // notRun, running, finished
	cancelRun context.CancelFunc // while running
	runCtx    context.Context    // the context of Run; cancelled when the loop stops
	started   chan struct{}      // closed once the loop runs
	stopped   chan struct{}      // closed once the loop stopped (or Close was called on a node never run)
	runDone   chan struct{}      // closed when Run returns
	closeOnce sync.Once
	closeErr  error
	// readMu keeps reads from other goroutines (Query, Block) off a store that is closing.
	readMu sync.RWMutex
	closed bool
}

// testHooks are test instrumentation: set by tests before Run, then read by the loop, the outbox and the
// state-transfer server; nil in production.
type testHooks struct {
	hooks *hooks
}

// experiment is the Byzantine experiment mode; nil on a correct replica (experiment.go). Set by New.
type experiment struct {
	byz *byzantine
}

// hooks let tests watch the loop and simulate crashes at chosen points.
type hooks struct {
	// afterPersist runs after a Ready's records are durable and before its messages leave; an error stops
	// the loop there, as a crash would.
	afterPersist func(rd *pbft.Ready) error
	// sent sees every consensus message handed to the network.
	sent func(m pbft.Message)
	// executed sees every block the application executed (not the replays of already applied ones).
	executed func(seq uint64)
	// stepped sees every message handed to the engine.
	stepped func(e *wire.Envelope)
	// serve may change a state-transfer response before it is signed (a lying peer), or refuse it.
	serve func(r *statesync.Response) error
}

const (
	notRun = iota
	running
	finished
)

// publicState is the replica's state as the loop last published it.
type publicState struct {
	soft      pbft.SoftState
	height    uint64 // last executed block, durable
	appDigest wire.Digest
	stats     pbft.Stats
	sync      *apitypes.SyncStatus
}

// New loads the node's key and genesis from its home directory, opens its store and application, starts
// its p2p host (listening) and restores its replica from the store. Run starts the replica.
func New(cfg config.Config, opts Options) (*Node, error) {
	if cfg.Home == "" {
		return nil, errors.New("node: no home directory given (use --home DIR, created by `p2pbft init`)")
	}
	if st, err := os.Stat(cfg.Home); err != nil {
		return nil, fmt.Errorf("node: home directory %s: %w (create it with `p2pbft init --home %s`)", cfg.Home, err, cfg.Home)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("node: home %s is not a directory", cfg.Home)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := opts.Experiment.validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	keyPath := cfg.Path(cfg.Key)
	key, err := identity.LoadKey(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("node: no node key at %s (create one with `p2pbft init --home %s`)", keyPath, cfg.Home)
	}
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	genPath := cfg.Path(cfg.Genesis)
	genesis, err := identity.LoadGenesis(genPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("node: no genesis at %s (build one with `p2pbft genesis` and copy it there)", genPath)
	}
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	self, ok := genesis.IndexOfPeer(key.PeerID())
	if !ok {
		ids := make([]string, genesis.N())
		for i := range ids {
			ids[i] = genesis.PeerID(i).String()
		}
		return nil, fmt.Errorf("node: the genesis %s (chain %s) does not list this node (peer ID %s, key %s); its replicas are %s",
			genPath, genesis.ChainID(), key.PeerID(), keyPath, strings.Join(ids, ", "))
	}
	clientKey, _, err := identity.GenerateOrLoadKey(filepath.Join(cfg.Home, ClientKeyFile))
	if err != nil {
		return nil, fmt.Errorf("node: client key: %w", err)
	}
	reg := opts.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	n := &Node{}
	n.nodeIdentity = nodeIdentity{
		cfg:       cfg,
		log:       log.With("replica", self),
		key:       key,
		pub:       key.PublicKey(),
		clientKey: clientKey,
		genesis:   genesis,
		chainID:   genesis.ChainID(),
		self:      self,
		n:         genesis.N(),
		quorum:    pbft.QuorumsOf(genesis.N()),
		ckptK:     cfg.Consensus.CheckpointInterval,
	}
	n.registry = reg
	n.drv = newReadyDriver()
	n.loopInputs = loopInputs{
		inbox:      make(chan inMsg, 1024),
		proposals:  make(chan *proposal, 1024),
		linkReqs:   make(chan linkBatch, 64),
		syncCh:     make(chan syncEvent),
		executedCh: make(chan executedBlocks, 64),
		fatalCh:    make(chan error, 1),
	}
	n.snaps = make(map[uint64]*pbft.Snapshot)
	n.started = make(chan struct{})
	n.stopped = make(chan struct{})
	n.runDone = make(chan struct{})
	n.runCtx = context.Background()
	n.waiters.m = make(map[waitKey][]*waiter)
	n.sync = n.newSyncer()
	n.replies = &replier{n: n, in: make(chan []pbft.ReplyMessage, 1024)}
	d := n.drv
	d.appMu, d.restoring, d.host, d.links, d.test = &n.appMu, &n.restoring, n, n.replies.in, &n.testHooks
	d.sender, d.pub, d.executed, d.fatalCh = n, n.pub, n.executedCh, n.fatalCh
	d.ckptK, d.log = n.ckptK, n.log
	n.gossipKinds = make(map[wire.Kind]bool)
	for k := wire.Kind(1); k < 32; k++ {
		if cfg.P2P.Broadcast == config.BroadcastGossip || slices.Contains(cfg.P2P.GossipKinds, k.String()) {
			n.gossipKinds[k] = true
		}
	}
	if x := opts.Experiment; x != nil && x.Mode != "" {
		n.byz = newByzantine(n, x)
	} else if m := cfg.Experiment.ByzantineMode; m != "" {
		n.log.Warn("experiment.byzantine_mode is set in the configuration but ignored: a Byzantine mode needs the explicit opt-in (--experiment-byzantine)",
			"byzantine_mode", m)
	}
	if err := n.open(opts); err != nil {
		n.release()
		return nil, withStoreAdvice(err, cfg.Home)
	}
	return n, nil
}

// withStoreAdvice adds to an error that wraps store.ErrCorrupt what the operator can do about it. Damage
// is found when the store opens (the write-ahead log, the manifest), or by the first read of a damaged
// table (pebble opens tables lazily), which may come later, from any of the reads that restore the
// replica or from the running loop: every path that returns such an error gives the same advice.
func withStoreAdvice(err error, home string) error {
	if !errors.Is(err, store.ErrCorrupt) {
		return err
	}
	return fmt.Errorf("%w (the replica cannot use this data: run `p2pbft reset --home %s` to wipe it; "+
		"the replica keeps its key, config, genesis and signed state, and catches up from the others)", err, home)
}

// open does the part of New that acquires resources; on error the caller releases what was opened.
func (n *Node) open(opts Options) error {
	cfg := n.cfg
	st, err := store.Open(cfg.Path(cfg.Store.Dir), store.Options{Genesis: n.genesis.Digest(), Logger: n.log,
		UnsafeNoSync: !cfg.Store.Sync, MemTableSize: uint64(cfg.Store.MemTableSize)})
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.store = st
	n.app = opts.App
	if n.app == nil {
		openApp := opts.OpenApp
		if openApp == nil {
			openApp = func(s app.Storage) (app.Application, error) { return kv.Open(s) }
		}
		a, err := openApp(st.AppStorage())
		if err != nil {
			return fmt.Errorf("node: open the application: %w", err)
		}
		if a == nil {
			return errors.New("node: OpenApp returned no application")
		}
		n.app = a
	}
	n.querier, _ = n.app.(app.Querier)
	n.drv.store, n.drv.app = st, n.app

	persisted, results, err := loadPersisted(st)
	if err != nil {
		return err
	}
	n.drv.replayed = results
	if err := n.drv.catchUpApp(persisted); err != nil {
		return err
	}
	info, err := n.app.Info()
	if err != nil {
		return fmt.Errorf("node: application info: %w", err)
	}

	idv, err := n.genesis.NewVerifier()
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.idv = idv
	n.sigs = wire.NewSigCache(1 << 17)
	n.trusted = wire.NewSigCache(1 << 17)
	n.vstats = new(verifyStats)
	// Half the cores: a busy worker leaves the other half to the goroutines that queue signatures (stream
	// handlers, gossip validators), so queues build up and batches form (BenchmarkVerifyPool: with as many
	// workers as cores, each worker takes signatures one by one as they come and batching is lost).
	n.pool = newVerifyPool(idv, n.sigs, n.vstats, max(1, runtime.GOMAXPROCS(0)/2))
	n.pool.pinned = func(author []byte) bool { _, ok := n.genesis.IndexOfKey(author); return ok }
	n.verifier = &engineVerifier{v: idv, cache: n.sigs, stats: n.vstats}

	if err := n.openSignedState(persisted, info.Height); err != nil {
		return err
	}
	rep, err := pbft.Restart(n.engineConfig(), persisted, info.Height)
	if err != nil {
		return fmt.Errorf("node: restore the replica (application at height %d): %w", info.Height, err)
	}
	n.rep = rep
	n.drv.engine = rep
	n.soft = rep.Status()
	if persisted != nil {
		if s := persisted.HardState.Snapshot; s != nil && s.Seq > 0 {
			n.snaps[s.Seq] = s
		}
		n.log.Info("replica restored from the store", "view", n.soft.View, "stable", n.soft.Stable,
			"applied", info.Height, "log_entries", len(persisted.Entries), "head", st.Head().Height)
	}
	if snaps, err := n.app.Snapshots(); err == nil {
		for _, s := range snaps {
			n.drv.keptSnaps[s.Height] = true
		}
	}
	n.publish(info.Height, info.Digest)

	n.metrics, err = newMetrics(n)
	if err != nil {
		return err
	}
	n.tracer = newTracer(cfg.Trace, n.metrics)
	n.drv.metrics, n.drv.tracer = n.metrics, n.tracer
	if err := checkListenAddrs(cfg.P2P.Listen); err != nil {
		return err
	}
	host, err := p2p.New(p2p.Config{
		Key:            n.key,
		Genesis:        n.genesis,
		Verifier:       n.pool,
		Filter:         n.filter,
		Logger:         n.log,
		Registerer:     n.registry,
		ListenAddrs:    cfg.P2P.Listen,
		AnnounceAddrs:  cfg.P2P.External,
		Bootstrap:      cfg.P2P.Bootstrap,
		MDNS:           cfg.P2P.MDNS,
		MaxMessageSize: cfg.P2P.MaxMessageSize,
		ConnsPerIP:     cfg.P2P.ConnsPerIP,
		ConnRatePerIP:  cfg.P2P.ConnRatePerIP,
		ConnBurstPerIP: cfg.P2P.ConnBurstPerIP,
		AllowNetworks:  cfg.P2P.AllowNetworks,
		PingInterval:   cfg.P2P.PingInterval,
		// The queues are sized for the messages a replica may have in flight, which the window bounds.
		Window: int(cfg.Consensus.Window),
	})
	if err != nil {
		if strings.Contains(err.Error(), "address already in use") {
			return fmt.Errorf("node: cannot listen on %s: address already in use (is another node running with this configuration? change p2p.listen): %w",
				strings.Join(cfg.P2P.Listen, ", "), err)
		}
		return fmt.Errorf("node: %w", err)
	}
	n.host = host
	host.SetRequestHandler(n.handleRequest)
	host.SetLinkHandler(n.handleLinkRequests)
	return nil
}

// engineConfig maps the node configuration onto the engine's.
func (n *Node) engineConfig() pbft.Config {
	cs := n.cfg.Consensus
	batchTimeout := 0
	if cs.BatchTimeout >= cs.Tick {
		// Below one tick the engine cuts a batch as soon as its pipeline has room, which makes batches
		// grow with the load by themselves; a longer timeout waits for fuller batches.
		batchTimeout = cs.Ticks(cs.BatchTimeout)
	}
	return pbft.Config{
		ChainID:            n.chainID,
		Replicas:           n.genesis.PublicKeys(),
		Signer:             n.key,
		Verifier:           n.verifier,
		VerifiedCache:      n.sigs,
		CheckpointInterval: cs.CheckpointInterval,
		Window:             cs.Window,
		MaxBatchRequests:   cs.BatchMaxRequests,
		MaxBatchBytes:      cs.BatchMaxBytes,
		BatchTimeout:       batchTimeout,
		PipelineDepth:      cs.MaxInFlight,
		PipelineMinBatch:   cs.PipelineMinRequests,
		RequestTimeout:     cs.Ticks(cs.RequestTimeout),
		NewViewTimeout:     cs.Ticks(cs.ViewChangeTimeout),
		RetransmitTimeout:  cs.Ticks(cs.RetransmitTimeout),
		StatusInterval:     cs.Ticks(cs.StatusInterval),
		SignedMark:         n.signedMark,
	}
}

// release closes whatever New opened. It is safe on a partly opened node.
func (n *Node) release() error {
	var errs []error
	if n.host != nil {
		errs = append(errs, n.host.Close())
	}
	n.readMu.Lock()
	n.closed = true
	n.readMu.Unlock()
	if n.pool != nil {
		n.pool.close()
	}
	if n.metrics != nil {
		n.metrics.unregister()
	}
	if n.store != nil {
		head := n.store.Head().Height
		err := n.store.Close()
		errs = append(errs, err)
		if err == nil && n.signed != nil {
			// A clean stop: the next start checks that the store still reaches this height.
			errs = append(errs, n.signed.Stopped(head))
		}
	}
	if n.signed != nil {
		errs = append(errs, n.signed.Close())
	}
	return errors.Join(errs...)
}

// Close stops the node if it runs (and waits for Run to return), and releases its resources: the p2p
// host, the store and the application's storage with it. Run releases them itself when it returns, so
// Close is needed only for a node that was never run, or to stop one from outside its context. It is
// idempotent.
func (n *Node) Close() error {
	n.lifeMu.Lock()
	switch n.runState {
	case running:
		cancel := n.cancelRun
		n.lifeMu.Unlock()
		cancel()
		<-n.runDone
		return n.closeErr
	case notRun:
		n.runState = finished
		close(n.stopped)
	}
	n.lifeMu.Unlock()
	n.closeOnce.Do(func() { n.closeErr = n.release() })
	return n.closeErr
}

// Started returns a channel closed once the node listens and its event loop runs.
func (n *Node) Started() <-chan struct{} { return n.started }

// Stopped returns a channel closed once the event loop has stopped.
func (n *Node) Stopped() <-chan struct{} { return n.stopped }

// Replica returns this node's replica index in the genesis.
func (n *Node) Replica() int { return n.self }

// Genesis returns the replica set.
func (n *Node) Genesis() *identity.Genesis { return n.genesis }

// ClientKey returns the client key the node holds (home/client_key, created on first start), with which
// its HTTP API signs transactions submitted as plain JSON.
func (n *Node) ClientKey() *identity.Key { return n.clientKey }

// Addrs returns the node's dialable addresses, each ending in /p2p/<peer-id>.
func (n *Node) Addrs() []multiaddr.Multiaddr { return n.host.Addrs() }

// OtherReplicas returns the other replicas of the genesis: those SendRequest reaches (api.Relay).
func (n *Node) OtherReplicas() []int {
	out := make([]int, 0, n.n-1)
	for i := range n.n {
		if i != n.self {
			out = append(out, i)
		}
	}
	return out
}

// SendRequest sends a client request to replica i over the request protocol and returns once it answered;
// the HTTP API relays the transactions it submits this way when the local replica is slow to execute them
// (api.Relay).
func (n *Node) SendRequest(ctx context.Context, i int, req *wire.Envelope) error {
	if i < 0 || i >= n.n || i == n.self {
		return fmt.Errorf("node: relay to replica %d: not another replica of the %d", i, n.n)
	}
	if _, err := n.host.Request(ctx, n.genesis.PeerID(i), req); err != nil {
		return fmt.Errorf("node: relay to replica %d: %w", i, err)
	}
	return nil
}

// Host returns the node's p2p host (for diagnostics and tools; do not close it).
func (n *Node) Host() *p2p.Host { return n.host }

// Gatherer returns the registry the node's (and its p2p host's) collectors are registered on.
func (n *Node) Gatherer() prometheus.Gatherer { return n.registry }
