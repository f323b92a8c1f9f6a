package p2p

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/wire"
)

// Config configures a Host. The fields with toml tags are the operator's settings (the node embeds them
// in its configuration file); the others are run-time dependencies. Zero values take the defaults listed
// on each field (see WithDefaults).
type Config struct {
	// Key is the node's identity: the libp2p host key and the author key of its envelopes. Required.
	Key *identity.Key `toml:"-"`
	// Genesis is the replica set. Required. The host is a replica if Key is in it, otherwise a client
	// or observer of the chain (it can send, request and receive, and is not a member of the topic mesh
	// unless AllowNonReplicaGossip lets it in).
	Genesis *identity.Genesis `toml:"-"`
	// Verifier checks envelope signatures. Default: an identity.Verifier with the replicas' keys pinned. A
	// wire.CachedVerifier is used as it is, and its cache takes the host's own messages; any other is put
	// behind a verified-signature cache of the host's own (wire.CachingVerifier).
	Verifier wire.Verifier `toml:"-"`
	// Filter is the driver's cheap, optional check that runs before the signature check: see Filter.
	Filter Filter `toml:"-"`
	// Logger receives the host's logs. Default: slog.Default().
	Logger *slog.Logger `toml:"-"`
	// Registerer, if set, gets the host's Prometheus collectors (message counters, drops, peers) and
	// libp2p's own metrics. Nothing is ever registered on the global registry.
	Registerer prometheus.Registerer `toml:"-"`

	// ListenAddrs are the multiaddrs to listen on. Default: TCP and QUIC on all interfaces, port 0:
	// /ip4/0.0.0.0/tcp/0 and /ip4/0.0.0.0/udp/0/quic-v1.
	ListenAddrs []string `toml:"listen_addrs"`
	// AnnounceAddrs, if set, are the multiaddrs this host tells its peers to dial (identify, peer
	// exchange) instead of its listen addresses: the public address of a node behind NAT, port forwarding
	// or a container network. Without /p2p/ suffix, e.g. /ip4/203.0.113.7/tcp/26690.
	AnnounceAddrs []string `toml:"announce_addrs"`
	// Bootstrap are peers to connect to at start: multiaddrs ending in /p2p/<peer-id>, for example
	// /ip4/10.0.0.1/tcp/7000/p2p/12D3KooW..., /dns4/seed.example/udp/7000/quic-v1/p2p/12D3KooW....
	// One reachable replica is enough: peer exchange finds the rest.
	Bootstrap []string `toml:"bootstrap"`
	// MDNS enables local-network discovery with multicast DNS.
	MDNS bool `toml:"mdns"`

	// MaxMessageSize bounds one encoded envelope on the gossip topic and on direct streams from replicas.
	// Default 4 MiB.
	MaxMessageSize int `toml:"max_message_size"`
	// MaxClientMessageSize bounds frames from peers that are not replicas. Default 2 MiB: above the engine's
	// request limit (pbft.DefaultMaxRequestBytes, 1 MiB), so that an oversized request gets a refusal that
	// says why instead of a reset stream.
	MaxClientMessageSize int `toml:"max_client_message_size"`
	// Window is how many messages one replica may have in flight towards us; the queues are sized
	// from it (see QueueSize). Default 64.
	Window int `toml:"window"`
	// QueueSize sizes the gossip validation queue, the per-peer outbound queues, the subscription
	// buffer, the delivery channel and the direct-send queues. Default: max(256, 3 x n x Window).
	QueueSize int `toml:"queue_size"`
	// SeenTTL is how long the gossip layer remembers a message ID (a hash of the message bytes) and drops
	// copies of it. Default 2 minutes. See the package documentation for what the engine must do about
	// replays older than this.
	SeenTTL time.Duration `toml:"seen_ttl"`

	// Dissemination tunes the gossip overlay.
	Dissemination Dissemination `toml:"dissemination"`

	// AcceptClientRequests lets client-authored envelopes (wire.KindRequest from keys that are not
	// replicas) travel on the gossip topic. Off by default: clients send to replicas over direct streams.
	AcceptClientRequests bool `toml:"accept_client_requests"`
	// AllowNonReplicaGossip lets peers that are not replicas join the gossip topic (observers). Off by
	// default: only replicas exchange gossip, which keeps non-members from injecting traffic at all.
	AllowNonReplicaGossip bool `toml:"allow_non_replica_gossip"`

	// StreamTimeout bounds writing one frame and, once its length prefix has arrived, reading the rest.
	// Default 10s.
	StreamTimeout time.Duration `toml:"stream_timeout"`
	// StreamIdleTimeout closes an inbound message stream on which no frame starts for this long. Default
	// 5 minutes.
	StreamIdleTimeout time.Duration `toml:"stream_idle_timeout"`
	// RequestTimeout bounds the handling of one inbound request. Default 30s.
	RequestTimeout time.Duration `toml:"request_timeout"`
	// MaxClientStreams bounds concurrent inbound streams from peers that are not replicas, in total;
	// MaxClientStreamsPerPeer per peer. Defaults 256 and 8.
	MaxClientStreams        int `toml:"max_client_streams"`
	MaxClientStreamsPerPeer int `toml:"max_client_streams_per_peer"`

	// DialTimeout bounds one connection attempt. Default 10s.
	DialTimeout time.Duration `toml:"dial_timeout"`
	// RedialMin and RedialMax bound the exponential backoff between attempts to reach a replica that is
	// not connected. Defaults 250ms and 30s.
	RedialMin time.Duration `toml:"redial_min"`
	RedialMax time.Duration `toml:"redial_max"`
	// PingInterval is how often a replica pings every other replica it is connected to (health.go): the
	// answers say which replicas are reachable and their round-trip times. Default 1s.
	PingInterval time.Duration `toml:"ping_interval"`
	// PeerExchangeInterval is the longest wait between two peer exchanges while some replica is not
	// connected (the first waits RedialMin, each next one twice as long). Default 2s. The host also asks at
	// once on every new connection.
	PeerExchangeInterval time.Duration `toml:"peer_exchange_interval"`

	// ConnsPerIP bounds the inbound connections open at once from one remote IPv4 address (IPv6: one
	// /56) that is not exempt: loopback, the replicas' IP addresses in the genesis and AllowNetworks are.
	// A client machine holds one connection per replica for each libp2p host it runs (`p2pbft bench` and a
	// Go client one for all their sessions, `p2pbft tx` one per process). Default 128. See limits.go.
	ConnsPerIP int `toml:"conns_per_ip"`
	// ConnRatePerIP and ConnBurstPerIP bound how fast one such address may open inbound connections: a
	// token bucket of ConnBurstPerIP connections refilled at ConnRatePerIP per second. Defaults 10 and
	// 256. (libp2p's own limits, 8 connections and 0.2 per second after a burst of 16, are off.)
	ConnRatePerIP  float64 `toml:"conn_rate_per_ip"`
	ConnBurstPerIP int     `toml:"conn_burst_per_ip"`
	// AllowNetworks are networks trusted like the replicas' genesis addresses: exempt from ConnsPerIP and
	// the connection rate, and allowed the resource manager's allowlisted scopes when its ordinary ones
	// are full. Each is a CIDR (10.0.0.0/8), an address (10.1.2.3) or a multiaddr (/ip4/10.0.0.0/ipcidr/8).
	// List here a trusted client network, or replicas whose genesis addresses are /dns names.
	AllowNetworks []string `toml:"allow_networks"`

	// ConnLow and ConnHigh are the connection manager's water marks. Replicas are protected and never
	// trimmed. Defaults: max(64, 2n) and twice that.
	ConnLow  int `toml:"conn_low"`
	ConnHigh int `toml:"conn_high"`
}

// Dissemination tunes gossipsub.
type Dissemination struct {
	// Mode is "mesh" (the default: replicas form a gossipsub mesh of degree MeshDegree, with a high
	// application score so that they are preferred; large messages use IDONTWANT; every publisher floods
	// its own messages to all replicas) or "direct" (replicas are gossipsub direct peers of each other:
	// every valid message is forwarded to every replica, no mesh to maintain, but n-2 duplicate copies of
	// each message and no graylisting of a misbehaving replica). See the package documentation for the
	// measurements behind the default.
	Mode string `toml:"mode"`
	// PubsubSigning makes gossipsub sign every message with the host key (StrictSign) on top of the
	// envelope's own signature. Off by default (StrictNoSign): the envelope signature already
	// authenticates the author, and a second signature costs a verification per hop (measured in the
	// package benchmarks).
	PubsubSigning bool `toml:"pubsub_signing"`
	// MeshDegree is gossipsub's D in mesh mode. Default min(n-1, 6), at least 2 (gossipsub's minimum).
	// Publishers flood their own messages to every replica, so the mesh only carries the forwarded
	// copies that cover a broken link; a larger D buys redundancy with duplicate traffic.
	MeshDegree int `toml:"mesh_degree"`
	// Heartbeat is gossipsub's heartbeat interval. Default 700ms.
	Heartbeat time.Duration `toml:"heartbeat"`
}

// Dissemination modes.
const (
	ModeDirect = "direct"
	ModeMesh   = "mesh"
)

// Default values.
const (
	DefaultMaxMessageSize       = 4 << 20
	DefaultMaxClientMessageSize = 2 << 20
	DefaultWindow               = 64
	DefaultSeenTTL              = 2 * time.Minute
	minQueueSize                = 256
)

// WithDefaults returns a copy of c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	n := 1
	if c.Genesis != nil {
		n = c.Genesis.N()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if len(c.ListenAddrs) == 0 {
		c.ListenAddrs = []string{"/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"}
	}
	setDefault(&c.MaxMessageSize, DefaultMaxMessageSize)
	setDefault(&c.MaxClientMessageSize, DefaultMaxClientMessageSize)
	setDefault(&c.Window, DefaultWindow)
	setDefault(&c.QueueSize, max(minQueueSize, 3*n*c.Window))
	setDefault(&c.SeenTTL, DefaultSeenTTL)
	if c.Dissemination.Mode == "" {
		c.Dissemination.Mode = ModeMesh
	}
	setDefault(&c.Dissemination.MeshDegree, max(2, min(n-1, 6)))
	setDefault(&c.Dissemination.Heartbeat, 700*time.Millisecond)
	setDefault(&c.StreamTimeout, 10*time.Second)
	setDefault(&c.StreamIdleTimeout, 5*time.Minute)
	setDefault(&c.RequestTimeout, 30*time.Second)
	setDefault(&c.MaxClientStreams, 256)
	setDefault(&c.MaxClientStreamsPerPeer, 8)
	setDefault(&c.DialTimeout, 10*time.Second)
	setDefault(&c.RedialMin, 250*time.Millisecond)
	setDefault(&c.RedialMax, 30*time.Second)
	setDefault(&c.PeerExchangeInterval, 2*time.Second)
	setDefault(&c.PingInterval, time.Second)
	setDefault(&c.ConnsPerIP, DefaultConnsPerIP)
	setDefault(&c.ConnRatePerIP, DefaultConnRatePerIP)
	setDefault(&c.ConnBurstPerIP, DefaultConnBurstPerIP)
	setDefault(&c.ConnLow, max(64, 2*n))
	setDefault(&c.ConnHigh, 2*c.ConnLow)
	return c
}

func setDefault[T int | float64 | time.Duration](p *T, v T) {
	if *p == 0 {
		*p = v
	}
}

// Validate checks a configuration (after WithDefaults) and says what is wrong.
func (c *Config) Validate() error {
	var errs []error
	if c.Key == nil {
		errs = append(errs, errors.New("p2p: config: Key is required"))
	}
	if c.Genesis == nil {
		errs = append(errs, errors.New("p2p: config: Genesis is required"))
	}
	for _, s := range c.ListenAddrs {
		if _, err := multiaddr.NewMultiaddr(s); err != nil {
			errs = append(errs, fmt.Errorf("p2p: config: listen address %q: %w", s, err))
		}
	}
	for _, s := range c.AnnounceAddrs {
		if _, err := multiaddr.NewMultiaddr(s); err != nil {
			errs = append(errs, fmt.Errorf("p2p: config: announce address %q: %w", s, err))
		}
	}
	for _, s := range c.Bootstrap {
		if _, err := parseBootstrap(s); err != nil {
			errs = append(errs, fmt.Errorf("p2p: config: %w", err))
		}
	}
	if c.MaxMessageSize < 1024 || c.MaxMessageSize > wire.MaxMessageSize {
		errs = append(errs, fmt.Errorf("p2p: config: max_message_size %d not in [1024, %d]", c.MaxMessageSize, wire.MaxMessageSize))
	}
	if c.MaxClientMessageSize < 1024 || c.MaxClientMessageSize > c.MaxMessageSize {
		errs = append(errs, fmt.Errorf("p2p: config: max_client_message_size %d not in [1024, max_message_size]", c.MaxClientMessageSize))
	}
	if c.Window < 1 || c.QueueSize < 1 {
		errs = append(errs, errors.New("p2p: config: window and queue_size must be positive"))
	}
	if c.SeenTTL < time.Second {
		errs = append(errs, fmt.Errorf("p2p: config: seen_ttl %s is shorter than a second", c.SeenTTL))
	}
	switch c.Dissemination.Mode {
	case ModeDirect, ModeMesh:
	default:
		errs = append(errs, fmt.Errorf("p2p: config: dissemination mode %q: want %q or %q", c.Dissemination.Mode, ModeDirect, ModeMesh))
	}
	if c.Dissemination.MeshDegree < 2 {
		errs = append(errs, fmt.Errorf("p2p: config: mesh_degree %d: gossipsub needs at least 2", c.Dissemination.MeshDegree))
	}
	if c.Dissemination.Heartbeat < 50*time.Millisecond {
		errs = append(errs, fmt.Errorf("p2p: config: heartbeat %s is too short", c.Dissemination.Heartbeat))
	}
	if c.RedialMin <= 0 || c.RedialMax < c.RedialMin {
		errs = append(errs, fmt.Errorf("p2p: config: redial backoff [%s, %s] is not a range", c.RedialMin, c.RedialMax))
	}
	if c.ConnsPerIP < 1 || c.ConnBurstPerIP < 1 || !(c.ConnRatePerIP > 0) {
		errs = append(errs, fmt.Errorf("p2p: config: conns_per_ip %d, conn_rate_per_ip %g and conn_burst_per_ip %d must be positive (allow_networks exempts networks from them)",
			c.ConnsPerIP, c.ConnRatePerIP, c.ConnBurstPerIP))
	}
	for _, s := range c.AllowNetworks {
		if _, err := ParseNetwork(s); err != nil {
			errs = append(errs, fmt.Errorf("p2p: config: allow_networks: %w", err))
		}
	}
	if c.ConnHigh < c.ConnLow {
		errs = append(errs, fmt.Errorf("p2p: config: conn_high %d < conn_low %d", c.ConnHigh, c.ConnLow))
	}
	return errors.Join(errs...)
}

// parseBootstrap parses a bootstrap multiaddr, which must name its peer.
func parseBootstrap(s string) (*peer.AddrInfo, error) {
	a, err := multiaddr.NewMultiaddr(s)
	if err != nil {
		return nil, fmt.Errorf("bootstrap address %q: %w", s, err)
	}
	ai, err := peer.AddrInfoFromP2pAddr(a)
	if err != nil {
		return nil, fmt.Errorf("bootstrap address %q must end in /p2p/<peer-id>: %w", s, err)
	}
	if len(ai.Addrs) == 0 {
		return nil, fmt.Errorf("bootstrap address %q has no transport part (want e.g. /ip4/10.0.0.1/tcp/7000/p2p/<peer-id>)", s)
	}
	return ai, nil
}
