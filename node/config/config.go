// Package config is the node's typed configuration: a TOML file (config.toml in the node's home directory)
// with command-line flags on top. Default returns a configuration that runs a replica on one machine with
// nothing else set; Validate says exactly which field is wrong.
//
// Durations are written as Go duration strings ("10ms", "2s"); sizes as plain byte counts. Relative paths
// are taken relative to the home directory.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/multiformats/go-multiaddr"

	"github.com/p2pbft/p2pbft/node/store"
	"github.com/p2pbft/p2pbft/p2p"
)

// DefaultP2PPort is the TCP and UDP (QUIC) port a replica listens on by default. It is p2pbft's own: not
// CometBFT's 26656 nor kubo's 4001, so that they run side by side on one machine.
const DefaultP2PPort = 26690

// DefaultAPIAddr is the default listen address of the HTTP API and /metrics: loopback only.
const DefaultAPIAddr = "127.0.0.1:26680"

// File names inside a node's home directory.
const (
	ConfigFile  = "config.toml"
	KeyFile     = "node_key"
	GenesisFile = "genesis.toml"
	DataDir     = "data"
)

// Config is a node's whole configuration.
type Config struct {
	// Home is the node's home directory. It is not read from the file: the --home flag sets it.
	Home string `toml:"-"`
	// Moniker is a human-readable name that appears in logs and status.
	Moniker string `toml:"moniker"`
	// Genesis is the path of the replica set file.
	Genesis string `toml:"genesis"`
	// Key is the path of the node's private key file (mode 0600).
	Key string `toml:"key"`

	P2P        P2P        `toml:"p2p"`
	Consensus  Consensus  `toml:"consensus"`
	API        API        `toml:"api"`
	StateSync  StateSync  `toml:"state_sync"`
	Store      Store      `toml:"store"`
	Log        Log        `toml:"log"`
	Trace      Trace      `toml:"trace"`
	Experiment Experiment `toml:"experiment"`
}

// P2P configures the libp2p host.
type P2P struct {
	// Listen holds the multiaddrs to listen on (TCP and QUIC).
	Listen []string `toml:"listen"`
	// Bootstrap holds multiaddrs of peers to dial at start, each ending in /p2p/<peer-id>.
	Bootstrap []string `toml:"bootstrap"`
	// External holds multiaddrs to announce instead of the listen addresses (behind NAT or in containers).
	External []string `toml:"external"`
	// MDNS enables local-network discovery.
	MDNS bool `toml:"mdns"`
	// MaxMessageSize bounds one consensus message on the wire, in bytes.
	MaxMessageSize int `toml:"max_message_size"`
	// Broadcast is how consensus messages addressed to every replica travel: "gossip" (the default: the
	// chain's authenticated gossipsub topic, which also relays around a broken link) or "direct" (one
	// direct stream to each replica). Messages to one replica always take a direct stream.
	Broadcast string `toml:"broadcast"`
	// GossipKinds are consensus message kinds broadcast over gossip whatever Broadcast says: rare
	// messages whose delivery matters more than their cost, which gossip relays through other replicas
	// when two replicas cannot reach each other directly.
	GossipKinds []string `toml:"gossip_kinds"`
	// PingInterval is how often a replica pings the others: who answered within three intervals counts
	// as reachable (status, /v1/peers, metrics), and the round trips size the retransmission timeout.
	PingInterval time.Duration `toml:"ping_interval"`
	// ConnsPerIP bounds the inbound connections open at once from one IP address (IPv6: one /56) that is
	// neither loopback, nor a replica's address in the genesis, nor in AllowNetworks.
	ConnsPerIP int `toml:"conns_per_ip"`
	// ConnRatePerIP and ConnBurstPerIP bound how fast one such address opens inbound connections: a
	// token bucket of ConnBurstPerIP refilled at ConnRatePerIP per second.
	ConnRatePerIP  float64 `toml:"conn_rate_per_ip"`
	ConnBurstPerIP int     `toml:"conn_burst_per_ip"`
	// AllowNetworks are trusted networks (CIDRs, addresses or /ip4/.../ipcidr/N multiaddrs) exempt from
	// the per-IP limits, as the replicas' genesis addresses are.
	AllowNetworks []string `toml:"allow_networks"`
}

// ConsensusKinds are the message kinds a replica broadcasts (the names GossipKinds takes).
var ConsensusKinds = []string{"pre-prepare", "prepare", "commit", "checkpoint", "view-change", "new-view", "status"}

// Broadcast paths.
const (
	BroadcastDirect = "direct"
	BroadcastGossip = "gossip"
)

// Consensus configures the PBFT engine. Durations are converted to engine ticks of length Tick.
type Consensus struct {
	// Tick is the engine's unit of time: every timer below is rounded up to whole ticks.
	Tick time.Duration `toml:"tick"`
	// CheckpointInterval is K: a checkpoint every K sequence numbers.
	CheckpointInterval uint64 `toml:"checkpoint_interval"`
	// Window is the watermark window k (sequence numbers accepted above the stable checkpoint).
	Window uint64 `toml:"window"`
	// BatchMaxRequests cuts a batch at this many requests.
	BatchMaxRequests int `toml:"batch_max_requests"`
	// BatchMaxBytes cuts a batch at this many bytes of requests.
	BatchMaxBytes int `toml:"batch_max_bytes"`
	// BatchTimeout cuts a partial batch this long after its first request arrived.
	BatchTimeout time.Duration `toml:"batch_timeout"`
	// MaxInFlight bounds how many batches the primary keeps in flight (pipelining depth).
	MaxInFlight int `toml:"max_in_flight"`
	// PipelineMinRequests: while a batch is in flight, the next is cut only once this many requests wait
	// (else when the pipeline empties), so that moderate load makes fewer, larger batches. 0: no wait.
	PipelineMinRequests int `toml:"pipeline_min_requests"`
	// RequestTimeout is the view-change timer: how long a known request may wait to execute before the
	// replica suspects the primary.
	RequestTimeout time.Duration `toml:"request_timeout"`
	// ViewChangeTimeout is how long to wait for a NEW-VIEW after a quorum of VIEW-CHANGEs; it doubles on
	// every further view change without progress.
	ViewChangeTimeout time.Duration `toml:"view_change_timeout"`
	// RetransmitTimeout is how long a replica that makes no progress waits before it resends its own
	// messages and asks a peer for what it is missing: a floor; the node raises it to a few round trips to
	// the replicas when they are farther away.
	RetransmitTimeout time.Duration `toml:"retransmit_timeout"`
	// StatusInterval is how often a replica tells the others where it is (view, executed, stable
	// checkpoint), so that one that fell behind catches up on an idle network.
	StatusInterval time.Duration `toml:"status_interval"`
}

// StateSync configures how a replica that fell behind fetches the state from its peers.
type StateSync struct {
	// ChunkBytes is the size of the snapshot chunks (and client-table parts) asked for at a time.
	ChunkBytes int `toml:"chunk_bytes"`
	// BlockSyncMax: a replica at most this many blocks behind the checkpoint it syncs to replays the
	// blocks (each checked against its commit certificate) instead of copying the whole state.
	BlockSyncMax uint64 `toml:"block_sync_max"`
	// RequestTimeout bounds one request to a peer; a peer that does not answer in time is skipped.
	RequestTimeout time.Duration `toml:"request_timeout"`
	// KeepSnapshots is how many of its latest stable checkpoints a replica keeps snapshots of, for peers
	// that copy them. Under load a checkpoint becomes stable every fraction of a second while copying a
	// snapshot takes seconds; a copy finishes as long as its checkpoint is among these. Older versions of
	// the application state are kept that long.
	KeepSnapshots int `toml:"keep_snapshots"`
}

// API configures the HTTP/JSON API and metrics.
type API struct {
	// HTTP is the listen address of the HTTP API and /metrics. Empty disables it.
	HTTP string `toml:"http"`
	// Pprof serves Go's runtime profiles (net/http/pprof) under /debug/pprof/ on the HTTP API, to
	// loopback clients only: CPU, heap, allocation, goroutine and mutex profiles of a running replica, for
	// finding where its time goes (go tool pprof http://127.0.0.1:26680/debug/pprof/profile?seconds=20).
	Pprof bool `toml:"pprof"`
}

// Store configures the on-disk store.
type Store struct {
	// Dir is the data directory.
	Dir string `toml:"dir"`
	// Sync makes every write durable (fsync) before consensus messages leave. Turning it off breaks
	// crash safety and is for experiments only.
	Sync bool `toml:"sync"`
	// MemTableSize is the database's write buffer, in bytes. It also sets the disk its write-ahead logs
	// take (each is preallocated to 110% of it, and a few are kept for reuse): the default keeps a
	// replica's footprint small; 67108864 (64 MiB) is the large setting, for fewer, larger flushes under
	// sustained heavy write load, at ~0.5 GB of logs (store.DefaultMemTableSize explains).
	MemTableSize int `toml:"memtable_size"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `toml:"level"`
	// Format is text or json.
	Format string `toml:"format"`
}

// Trace configures the per-slot consensus records (package node/trace) served at /v1/trace and the
// phase histograms of /metrics (p2pbft_consensus_phase_seconds) derived from them.
type Trace struct {
	// Enabled keeps the records. They cost a few microseconds per slot, so they are on by default.
	Enabled bool `toml:"enabled"`
	// Slots is how many of the latest slots (sequence number and view) are kept.
	Slots int `toml:"slots"`
	// ViewChanges is how many of the latest view changes are kept.
	ViewChanges int `toml:"view_changes"`
}

// Experiment holds settings that make a replica misbehave on purpose, for fault-injection experiments.
type Experiment struct {
	// ByzantineMode makes this replica Byzantine: "" (off), or one of ByzantineModes. It only takes effect
	// together with the --experiment-byzantine flag, so it can never be on by accident.
	ByzantineMode string `toml:"byzantine_mode"`
	// ByzantineDelay is how long the "delay" mode holds each outgoing message and reply.
	ByzantineDelay time.Duration `toml:"byzantine_delay"`
	// ByzantineDropRate is the fraction of outgoing messages and replies the "drop" mode drops, in (0, 1].
	ByzantineDropRate float64 `toml:"byzantine_drop_rate"`
	// ByzantineSeed seeds the random choices of the "drop" and "garbage" modes, so a run can be repeated.
	ByzantineSeed uint64 `toml:"byzantine_seed"`
	// AdminAPI enables the experiment endpoints (partition, heal) on the HTTP API.
	AdminAPI bool `toml:"admin_api"`
}

// ByzantineModes are the experiment's misbehaviours (Experiment.ByzantineMode):
//
//   - silent: receives everything, sends nothing (no consensus message, no reply, no state transfer);
//   - equivocate: as primary, sends conflicting pre-prepares (another batch for the same sequence
//     number) to different backups; otherwise correct;
//   - delay: holds every outgoing message and reply for byzantine_delay;
//   - drop: drops each outgoing message (to each replica) and reply with probability byzantine_drop_rate;
//   - garbage: sends malformed, wrongly signed and bogus (well-signed, wrong content) messages instead of
//     its real ones, wrong replies, and garbage state-transfer chunks.
var ByzantineModes = []string{"silent", "equivocate", "delay", "drop", "garbage"}

// Default returns the configuration a new node starts from.
func Default() Config {
	return Config{
		Genesis: GenesisFile,
		Key:     KeyFile,
		P2P: P2P{
			Listen:         []string{fmt.Sprintf("/ip4/0.0.0.0/tcp/%d", DefaultP2PPort), fmt.Sprintf("/ip4/0.0.0.0/udp/%d/quic-v1", DefaultP2PPort)},
			Bootstrap:      []string{},
			External:       []string{},
			MaxMessageSize: 4 << 20,
			Broadcast:      BroadcastGossip,
			GossipKinds:    []string{"view-change", "new-view"},
			ConnsPerIP:     p2p.DefaultConnsPerIP,
			ConnRatePerIP:  p2p.DefaultConnRatePerIP,
			ConnBurstPerIP: p2p.DefaultConnBurstPerIP,
			AllowNetworks:  []string{},
			PingInterval:   time.Second,
		},
		Consensus: Consensus{
			Tick:                10 * time.Millisecond,
			CheckpointInterval:  32,
			Window:              64,
			BatchMaxRequests:    1000,
			BatchMaxBytes:       1 << 20,
			BatchTimeout:        2 * time.Millisecond,
			MaxInFlight:         2,
			PipelineMinRequests: 128,
			RequestTimeout:      2 * time.Second,
			ViewChangeTimeout:   2 * time.Second,
			RetransmitTimeout:   100 * time.Millisecond,
			StatusInterval:      time.Second,
		},
		StateSync: StateSync{
			ChunkBytes:     1 << 20,
			BlockSyncMax:   256,
			RequestTimeout: 10 * time.Second,
			KeepSnapshots:  16,
		},
		API:   API{HTTP: DefaultAPIAddr},
		Store: Store{Dir: DataDir, Sync: true, MemTableSize: store.DefaultMemTableSize},
		Log:   Log{Level: "info", Format: "text"},
		Trace: Trace{Enabled: true, Slots: 1024, ViewChanges: 64},
	}
}

// Load reads home/config.toml over the defaults. Unknown keys are an error, so a typo is not silently
// ignored.
func Load(home string) (Config, error) {
	cfg := Default()
	cfg.Home = home
	if home == "" {
		return cfg, errors.New("config: no home directory given (use --home DIR, created by `p2pbft init`)")
	}
	if st, err := os.Stat(home); err != nil {
		return cfg, fmt.Errorf("config: home directory %s: %w (create it with `p2pbft init --home %s`)", home, err, home)
	} else if !st.IsDir() {
		return cfg, fmt.Errorf("config: home %s is not a directory", home)
	}
	path := filepath.Join(home, ConfigFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("config: %w (create it with `p2pbft init --home %s`)", err, home)
	}
	if err := Decode(data, &cfg); err != nil {
		return cfg, fmt.Errorf("config: %s: %w", path, err)
	}
	return cfg, nil
}

// Decode parses TOML data over cfg, rejecting unknown keys.
func Decode(data []byte, cfg *Config) error {
	md, err := toml.Decode(string(data), cfg)
	if err != nil {
		return err
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return fmt.Errorf("unknown key(s): %s", strings.Join(keys, ", "))
	}
	return nil
}

// Encode writes cfg as TOML.
func Encode(cfg Config) ([]byte, error) {
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(cfg); err != nil {
		return nil, fmt.Errorf("config: encode: %w", err)
	}
	return buf.Bytes(), nil
}

// Path resolves p relative to the home directory (absolute paths are kept).
func (c Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.Home, p)
}

// transportAddr checks a multiaddr to listen on or to announce: an IP address or DNS name, then TCP or UDP
// with QUIC, and no peer ID (the node adds its own). External addresses may be DNS names; listen addresses
// must be IP addresses.
func transportAddr(s string, external bool) error {
	a, err := multiaddr.NewMultiaddr(s)
	if err != nil {
		return err
	}
	ps := a.Protocols()
	if len(ps) < 2 {
		return errors.New("want a network address and a transport, e.g. /ip4/203.0.113.7/tcp/26656 or .../udp/26656/quic-v1")
	}
	switch ps[0].Code {
	case multiaddr.P_IP4, multiaddr.P_IP6:
	case multiaddr.P_DNS, multiaddr.P_DNS4, multiaddr.P_DNS6:
		if !external {
			return errors.New("listen on an IP address (a DNS name is for announcing)")
		}
	default:
		return fmt.Errorf("starts with /%s: want /ip4, /ip6 or (external only) /dns, /dns4, /dns6", ps[0].Name)
	}
	switch {
	case len(ps) == 2 && ps[1].Code == multiaddr.P_TCP:
	case len(ps) == 3 && ps[1].Code == multiaddr.P_UDP && ps[2].Code == multiaddr.P_QUIC_V1:
	default:
		return errors.New("want /tcp/PORT or /udp/PORT/quic-v1 after the address (and no /p2p/ part: the node adds its own)")
	}
	return nil
}

// Validate checks every field and names the first bad one.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.Genesis == "" {
		bad("genesis", "empty")
	}
	if c.Key == "" {
		bad("key", "empty")
	}
	if len(c.P2P.Listen) == 0 {
		bad("p2p.listen", "no listen address")
	}
	for _, a := range c.P2P.Listen {
		if err := transportAddr(a, false); err != nil {
			bad("p2p.listen", "%q: %v", a, err)
		}
	}
	if c.API.HTTP != "" {
		if _, port, err := net.SplitHostPort(c.API.HTTP); err != nil || port == "" {
			bad("api.http", "%q is not host:port (e.g. 127.0.0.1:26680; empty disables the API)", c.API.HTTP)
		}
	}
	for _, a := range c.P2P.External {
		if err := transportAddr(a, true); err != nil {
			bad("p2p.external", "%q: %v", a, err)
		}
	}
	if c.P2P.MaxMessageSize < 64<<10 || c.P2P.MaxMessageSize > 64<<20 {
		bad("p2p.max_message_size", "%d not in [64 KiB, 64 MiB]", c.P2P.MaxMessageSize)
	}
	switch c.P2P.Broadcast {
	case BroadcastDirect, BroadcastGossip:
	default:
		bad("p2p.broadcast", "%q is not one of %s, %s", c.P2P.Broadcast, BroadcastDirect, BroadcastGossip)
	}
	for _, k := range c.P2P.GossipKinds {
		if !slices.Contains(ConsensusKinds, k) {
			bad("p2p.gossip_kinds", "%q is not one of %s", k, strings.Join(ConsensusKinds, ", "))
		}
	}
	if c.P2P.ConnsPerIP < 1 {
		bad("p2p.conns_per_ip", "%d must be at least 1 (list trusted networks in p2p.allow_networks instead)", c.P2P.ConnsPerIP)
	}
	if !(c.P2P.ConnRatePerIP > 0) {
		bad("p2p.conn_rate_per_ip", "%g must be positive", c.P2P.ConnRatePerIP)
	}
	if c.P2P.ConnBurstPerIP < 1 {
		bad("p2p.conn_burst_per_ip", "%d must be at least 1", c.P2P.ConnBurstPerIP)
	}
	for _, n := range c.P2P.AllowNetworks {
		if _, err := p2p.ParseNetwork(n); err != nil {
			bad("p2p.allow_networks", "%v", err)
		}
	}
	cs := c.Consensus
	if cs.Tick < time.Millisecond || cs.Tick > time.Second {
		bad("consensus.tick", "%s not in [1ms, 1s]", cs.Tick)
	}
	if cs.CheckpointInterval == 0 {
		bad("consensus.checkpoint_interval", "must be positive")
	}
	if cs.Window < 2*cs.CheckpointInterval || (cs.CheckpointInterval > 0 && cs.Window%cs.CheckpointInterval != 0) {
		bad("consensus.window", "%d must be a multiple of checkpoint_interval %d and at least twice it (2x is usual)", cs.Window, cs.CheckpointInterval)
	}
	if cs.Window > 1<<16 {
		bad("consensus.window", "%d exceeds %d", cs.Window, 1<<16)
	}
	if cs.BatchMaxRequests < 1 {
		bad("consensus.batch_max_requests", "must be at least 1")
	}
	if cs.BatchMaxBytes < 1024 || cs.BatchMaxBytes > c.P2P.MaxMessageSize {
		bad("consensus.batch_max_bytes", "%d not in [1024, p2p.max_message_size=%d]", cs.BatchMaxBytes, c.P2P.MaxMessageSize)
	}
	if cs.BatchTimeout < 0 {
		bad("consensus.batch_timeout", "negative")
	}
	if cs.PipelineMinRequests < 0 {
		bad("consensus.pipeline_min_requests", "%d is negative", cs.PipelineMinRequests)
	}
	if cs.MaxInFlight < 1 || uint64(cs.MaxInFlight) > cs.Window {
		bad("consensus.max_in_flight", "%d not in [1, window=%d]", cs.MaxInFlight, cs.Window)
	}
	if cs.RequestTimeout < 2*cs.Tick {
		bad("consensus.request_timeout", "%s must be at least two ticks (%s)", cs.RequestTimeout, 2*cs.Tick)
	}
	if cs.ViewChangeTimeout < 2*cs.Tick {
		bad("consensus.view_change_timeout", "%s must be at least two ticks (%s)", cs.ViewChangeTimeout, 2*cs.Tick)
	}
	if cs.RetransmitTimeout < cs.Tick {
		bad("consensus.retransmit_timeout", "%s must be at least one tick (%s)", cs.RetransmitTimeout, cs.Tick)
	}
	if cs.StatusInterval < cs.Tick {
		bad("consensus.status_interval", "%s must be at least one tick (%s)", cs.StatusInterval, cs.Tick)
	}
	if c.P2P.PingInterval < 10*time.Millisecond {
		bad("p2p.ping_interval", "%s is shorter than 10ms", c.P2P.PingInterval)
	}
	ss := c.StateSync
	if ss.ChunkBytes < 4<<10 || ss.ChunkBytes > c.P2P.MaxMessageSize/2 {
		bad("state_sync.chunk_bytes", "%d not in [4 KiB, p2p.max_message_size/2 = %d]", ss.ChunkBytes, c.P2P.MaxMessageSize/2)
	}
	if ss.RequestTimeout < 100*time.Millisecond {
		bad("state_sync.request_timeout", "%s is shorter than 100ms", ss.RequestTimeout)
	}
	if c.Trace.Slots < 1 || c.Trace.Slots > 1<<20 {
		bad("trace.slots", "%d not in [1, %d]", c.Trace.Slots, 1<<20)
	}
	if c.Trace.ViewChanges < 1 || c.Trace.ViewChanges > 1<<16 {
		bad("trace.view_changes", "%d not in [1, %d]", c.Trace.ViewChanges, 1<<16)
	}
	if ss.KeepSnapshots < 2 || ss.KeepSnapshots > 1024 {
		bad("state_sync.keep_snapshots", "%d not in [2, 1024]", ss.KeepSnapshots)
	}
	if c.Store.Dir == "" {
		bad("store.dir", "empty")
	}
	if c.Store.MemTableSize < 1<<20 || c.Store.MemTableSize > 1<<30 {
		bad("store.memtable_size", "%d not in [1 MiB, 1 GiB]", c.Store.MemTableSize)
	}
	if e := c.Experiment; e.ByzantineMode != "" {
		if !slices.Contains(ByzantineModes, e.ByzantineMode) {
			bad("experiment.byzantine_mode", "%q is not one of %s", e.ByzantineMode, strings.Join(ByzantineModes, ", "))
		}
		if e.ByzantineMode == "delay" && e.ByzantineDelay <= 0 {
			bad("experiment.byzantine_delay", "the delay mode needs a positive delay")
		}
		if e.ByzantineMode == "drop" && (e.ByzantineDropRate <= 0 || e.ByzantineDropRate > 1) {
			bad("experiment.byzantine_drop_rate", "%v not in (0, 1] (the drop mode needs it)", e.ByzantineDropRate)
		}
	}
	if c.Experiment.ByzantineDelay < 0 || c.Experiment.ByzantineDelay > time.Minute {
		bad("experiment.byzantine_delay", "%s not in [0, 1m]", c.Experiment.ByzantineDelay)
	}
	if r := c.Experiment.ByzantineDropRate; r < 0 || r > 1 || r != r {
		bad("experiment.byzantine_drop_rate", "%v not in [0, 1]", r)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "%q is not one of text, json", c.Log.Format)
	}
	if len(errs) > 0 {
		return fmt.Errorf("config: %w", errors.Join(errs...))
	}
	return nil
}

// Ticks converts d to a whole number of ticks, rounding up, at least 1.
func (c Consensus) Ticks(d time.Duration) int {
	if d <= 0 {
		return 1
	}
	t := int((d + c.Tick - 1) / c.Tick)
	if t < 1 {
		t = 1
	}
	return t
}
