package p2p

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p-pubsub/timecache"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/multiformats/go-multiaddr"

	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/internal/logs"
	"github.com/p2pbft/p2pbft/wire"
)

// Host is a libp2p host serving one chain: gossip multicast, direct streams and discovery. Create it
// with New and stop it with Close; its methods are safe for concurrent use.
type Host struct {
	cfg      Config
	log      *slog.Logger
	genesis  *identity.Genesis
	chainID  string
	id       peer.ID
	self     int // our replica index, -1 if we are not a replica
	verifier wire.Verifier

	lh    host.Host
	cm    *connmgr.BasicConnMgr
	ps    *pubsub.PubSub
	topic *pubsub.Topic
	sub   *pubsub.Subscription
	mdns  mdns.Service
	disc  *discovery
	val   *validator
	gater *gater     // experiment partitions (gater.go)
	guard *connGuard // per-IP connection limits (limits.go)

	topicName                    string
	msgProto, reqProto, pexProto protocol.ID
	linkProto                    protocol.ID // client links (link.go)

	seen       timecache.TimeCache // content hashes delivered recently, across gossip and direct streams
	metrics    *metrics
	collector  *collector
	deliveries chan Delivery
	events     chan PeerEvent
	reqHandler atomic.Pointer[RequestHandler]

	health healthState // replica pings (health.go)

	linkHandler atomic.Pointer[LinkHandler]
	linksMu     sync.Mutex
	linkByKey   map[string]*ClientLink // client key -> the link its answers go to

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	closeMu   sync.Mutex
	closing   bool
	closeOnce sync.Once
	closeErr  error

	sendMu  sync.Mutex
	senders map[peer.ID]*sender

	streamsMu        sync.Mutex
	clientStreams    int
	clientStreamsPer map[peer.ID]int
}

// TopicName returns the gossip topic of a chain.
func TopicName(chainID string) string { return "p2pbft/" + chainID + "/consensus/1" }

// New starts a host: it listens, joins the chain's gossip topic, and starts connecting to the replicas.
// It returns once listening; connections form in the background (see WaitForReplicas).
func New(cfg Config) (*Host, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var bootstrap []*peer.AddrInfo
	for _, s := range cfg.Bootstrap {
		ai, _ := parseBootstrap(s) // validated above
		bootstrap = append(bootstrap, ai)
	}
	listen := make([]multiaddr.Multiaddr, len(cfg.ListenAddrs))
	for i, s := range cfg.ListenAddrs {
		listen[i] = multiaddr.StringCast(s) // validated above
	}
	g := cfg.Genesis
	h := &Host{
		cfg:              cfg,
		log:              cfg.Logger.With("component", "p2p"),
		genesis:          g,
		chainID:          g.ChainID(),
		id:               cfg.Key.PeerID(),
		self:             -1,
		verifier:         cfg.Verifier,
		topicName:        TopicName(g.ChainID()),
		msgProto:         protocol.ID("/p2pbft/" + g.ChainID() + "/msg/1.0.0"),
		reqProto:         protocol.ID("/p2pbft/" + g.ChainID() + "/req/1.0.0"),
		pexProto:         protocol.ID("/p2pbft/" + g.ChainID() + "/pex/1.0.0"),
		linkProto:        protocol.ID("/p2pbft/" + g.ChainID() + "/link/1.0.0"),
		linkByKey:        make(map[string]*ClientLink),
		health:           healthState{lastPong: map[peer.ID]time.Time{}, rtt: map[peer.ID]time.Duration{}},
		deliveries:       make(chan Delivery, cfg.QueueSize),
		events:           make(chan PeerEvent, eventBuffer),
		senders:          make(map[peer.ID]*sender),
		clientStreamsPer: make(map[peer.ID]int),
	}
	if i, ok := g.IndexOfPeer(h.id); ok {
		h.self = i
	}
	if h.verifier == nil {
		v, err := g.NewVerifier()
		if err != nil {
			return nil, fmt.Errorf("p2p: verifier: %w", err)
		}
		h.verifier = v
	}
	h.metrics = newMetrics(func(p peer.ID) bool { return h.replicaIndex(p) >= 0 },
		logs.NewRejections(h.log, "message", logs.DefaultSummaryInterval))
	h.val = newValidator(h)
	h.disc = newDiscovery(h)
	h.gater = newGater()
	h.seen = timecache.NewTimeCacheWithStrategy(timecache.Strategy_FirstSeen, cfg.SeenTTL)
	h.ctx, h.cancel = context.WithCancel(context.Background())

	if err := h.startLibp2p(listen); err != nil {
		h.cancel()
		h.seen.Done()
		return nil, err
	}
	// From here on, Close cleans up.
	fail := func(err error) (*Host, error) {
		h.Close()
		return nil, err
	}
	h.lh.SetStreamHandler(h.msgProto, h.handleMsgStream)
	h.lh.SetStreamHandler(h.reqProto, h.handleReqStream)
	h.lh.SetStreamHandler(h.pexProto, h.handlePEX)
	h.lh.SetStreamHandler(h.linkProto, h.handleLinkStream)
	if err := h.watchConnectedness(); err != nil {
		return fail(fmt.Errorf("p2p: event bus: %w", err))
	}
	if h.self >= 0 || cfg.AllowNonReplicaGossip {
		if err := h.startGossip(); err != nil {
			return fail(err)
		}
	}
	h.disc.start(bootstrap)
	if h.self >= 0 && h.enter() {
		go h.runPingers()
	}
	if cfg.MDNS {
		if err := h.startMDNS(); err != nil {
			return fail(err)
		}
	}
	if cfg.Registerer != nil {
		h.collector = newCollector(h)
		if err := cfg.Registerer.Register(h.collector); err != nil {
			h.collector = nil
			return fail(fmt.Errorf("p2p: register metrics: %w", err))
		}
	}
	role := "client"
	if h.self >= 0 {
		role = fmt.Sprintf("replica %d of %d", h.self, g.N())
	}
	h.log.Info("p2p host started", "peer", h.id, "role", role, "chain", h.chainID,
		"addrs", h.lh.Addrs(), "mode", cfg.Dissemination.Mode, "pubsub_signing", cfg.Dissemination.PubsubSigning)
	return h, nil
}

// startLibp2p builds the libp2p host: TCP and QUIC, Noise and TLS, yamux, the resource manager and the
// connection manager.
func (h *Host) startLibp2p(listen []multiaddr.Multiaddr) error {
	cfg := h.cfg
	cm, err := connmgr.NewConnManager(cfg.ConnLow, cfg.ConnHigh)
	if err != nil {
		return fmt.Errorf("p2p: connection manager: %w", err)
	}
	for _, id := range h.genesisPeers() {
		cm.Protect(id, "p2pbft-replica")
	}
	h.cm = cm
	rm, err := h.resourceManager()
	if err != nil {
		cm.Close()
		return fmt.Errorf("p2p: resource manager: %w", err)
	}
	opts := []libp2p.Option{
		libp2p.Identity(cfg.Key.LibP2P()),
		libp2p.ListenAddrs(listen...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.ConnectionGater(h.gater),
		libp2p.DisableRelay(),
		libp2p.Ping(true),
		libp2p.UserAgent("p2pbft"),
		libp2p.WithDialTimeout(cfg.DialTimeout),
	}
	if len(cfg.AnnounceAddrs) > 0 {
		announce := make([]multiaddr.Multiaddr, 0, len(cfg.AnnounceAddrs))
		for _, s := range cfg.AnnounceAddrs {
			a, err := multiaddr.NewMultiaddr(s)
			if err != nil {
				cm.Close()
				rm.Close()
				return fmt.Errorf("p2p: announce address %q: %w", s, err)
			}
			announce = append(announce, a)
		}
		opts = append(opts, libp2p.AddrsFactory(func([]multiaddr.Multiaddr) []multiaddr.Multiaddr { return announce }))
	}
	if cfg.Registerer != nil {
		opts = append(opts, libp2p.PrometheusRegisterer(cfg.Registerer))
	} else {
		opts = append(opts, libp2p.DisableMetrics())
	}
	lh, err := libp2p.New(opts...)
	if err != nil {
		rm.Close()
		cm.Close()
		return fmt.Errorf("p2p: libp2p host: %w", err)
	}
	h.lh = lh
	return nil
}

// Close stops the host: it leaves the topic, closes every connection and stream, and waits for all of
// its goroutines to end. It is safe to call more than once.
func (h *Host) Close() error {
	h.closeOnce.Do(func() {
		h.closeMu.Lock()
		h.closing = true
		h.closeMu.Unlock()
		h.cancel()
		var errs []error
		if h.mdns != nil {
			errs = append(errs, h.mdns.Close())
		}
		if h.sub != nil {
			h.sub.Cancel()
		}
		if h.topic != nil {
			if err := h.topic.Close(); err != nil && !errors.Is(err, context.Canceled) {
				h.log.Debug("close topic", "err", err)
			}
		}
		if h.lh != nil {
			h.lh.RemoveStreamHandler(h.msgProto)
			h.lh.RemoveStreamHandler(h.reqProto)
			h.lh.RemoveStreamHandler(h.pexProto)
			h.lh.RemoveStreamHandler(h.linkProto)
		}
		// Our goroutines all watch h.ctx (their streams are reset when it ends), so they finish before
		// the libp2p host closes: no dial or stream of ours races with the swarm shutting down.
		h.wg.Wait()
		if h.lh != nil {
			errs = append(errs, h.lh.Close())
		}
		h.seen.Done()
		if h.collector != nil {
			h.cfg.Registerer.Unregister(h.collector)
		}
		h.closeErr = errors.Join(errs...)
		h.log.Info("p2p host stopped", "peer", h.id)
	})
	return h.closeErr
}

// ID returns the host's peer ID.
func (h *Host) ID() peer.ID { return h.id }

// Self returns the host's replica index, or -1 if it is not a replica.
func (h *Host) Self() int { return h.self }

// Genesis returns the replica set.
func (h *Host) Genesis() *identity.Genesis { return h.genesis }

// Addrs returns the host's dialable addresses, each ending in /p2p/<peer-id> (usable as a bootstrap
// address).
func (h *Host) Addrs() []multiaddr.Multiaddr {
	addrs, _ := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: h.id, Addrs: h.lh.Addrs()})
	return addrs
}

// LibP2P returns the underlying libp2p host, for diagnostics and extensions. Do not close it.
func (h *Host) LibP2P() host.Host { return h.lh }

// Deliveries returns the channel of verified inbound envelopes, from gossip and direct streams. The
// application must keep reading it: while it does not, gossip deliveries back up and are dropped (and
// counted), and direct streams stall. It is never closed; stop reading when the host is closed.
func (h *Host) Deliveries() <-chan Delivery { return h.deliveries }

// Events returns the channel of peer up/down events. Events that do not fit its buffer are dropped and
// counted (DropEvents).
func (h *Host) Events() <-chan PeerEvent { return h.events }

// Stats returns a snapshot of the message and drop counters.
func (h *Host) Stats() Stats { return h.metrics.snapshot() }

// ConnectedReplicas returns the indexes of the replicas (other than this host) that are connected.
func (h *Host) ConnectedReplicas() []int {
	var out []int
	for i := 0; i < h.genesis.N(); i++ {
		if i != h.self && h.lh.Network().Connectedness(h.genesis.PeerID(i)) == network.Connected {
			out = append(out, i)
		}
	}
	return out
}

// MeshPeers returns the replicas (other than this host) that gossip delivers to directly: the peers that
// are subscribed to the chain's topic. A client host (not a replica, AllowNonReplicaGossip off) does not
// gossip and has none.
func (h *Host) MeshPeers() []int {
	var out []int
	if h.topic == nil {
		return nil
	}
	for _, p := range h.topic.ListPeers() {
		if i := h.replicaIndex(p); i >= 0 {
			out = append(out, i)
		}
	}
	return out
}

// WaitForReplicas blocks until this host is connected to, and (if it gossips) shares the topic with, at
// least want other replicas, or ctx ends.
func (h *Host) WaitForReplicas(ctx context.Context, want int) error {
	reachable := func() int {
		if h.topic == nil {
			return len(h.ConnectedReplicas())
		}
		return len(h.MeshPeers())
	}
	for {
		if reachable() >= want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("p2p: %d of %d replicas reachable: %w", reachable(), want, ctx.Err())
		case <-h.ctx.Done():
			return ErrClosed
		case <-waitTick():
		}
	}
}

// firstDelivery records a message's content hash and reports whether it is new: an envelope with the
// same bytes delivered within SeenTTL, by gossip or by a direct stream, is dropped as a duplicate.
func (h *Host) firstDelivery(id string) bool {
	if h.seen.Add(id) {
		return true
	}
	h.metrics.duplicate()
	return false
}

// replicaIndex returns p's replica index or -1.
func (h *Host) replicaIndex(p peer.ID) int {
	if i, ok := h.genesis.IndexOfPeer(p); ok {
		return i
	}
	return -1
}

// waitTick paces polling waits (WaitForReplicas): short enough to react fast, long enough to cost nothing.
func waitTick() <-chan time.Time { return time.After(20 * time.Millisecond) }
