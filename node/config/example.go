package config

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"text/template"
)

// exampleTemplate renders a configuration as a commented TOML file: `p2pbft init` writes it, and
// docs/config.example.toml is Commented(Default()). Every option is explained where it is set.
var exampleTemplate = template.Must(template.New("config").Funcs(template.FuncMap{
	"q":    strconv.Quote,
	"list": quoteList,
}).Parse(`# p2pbft node configuration. Flags given on the command line override these values.
# Durations are Go duration strings ("10ms", "2s"); sizes are bytes; relative paths are inside the home dir.

# A human-readable name for this node, shown in logs and status.
moniker = {{q .Moniker}}
# The replica set (genesis) file: chain ID and the replicas in order. Build it with ` + "`p2pbft genesis`" + `.
genesis = {{q .Genesis}}
# The node's ed25519 private key (mode 0600). Its peer ID must be listed in the genesis.
key = {{q .Key}}

[p2p]
# Multiaddrs to listen on: TCP and QUIC. Port 0 picks a free port.
listen = {{list .P2P.Listen}}
# Peers to dial at start (each /ip4/.../tcp/.../p2p/<peer-id>, /dns4/... or QUIC). One reachable replica is
# enough: the node finds every other replica of the genesis through it.
bootstrap = {{list .P2P.Bootstrap}}
# Multiaddrs to announce to peers instead of the listen addresses (behind NAT, in containers).
external = {{list .P2P.External}}
# Discover peers on the local network with mDNS.
mdns = {{.P2P.MDNS}}
# Largest consensus message accepted on the wire, in bytes (64 KiB to 64 MiB).
max_message_size = {{.P2P.MaxMessageSize}}
# How consensus messages for every replica travel: "gossip" (the chain's authenticated gossipsub topic,
# which also relays through other replicas when two cannot reach each other) or "direct" (a direct stream to
# each replica, without relaying). Their costs are close (BENCHMARKS.md). Messages to one replica always use
# a direct stream.
broadcast = {{q .P2P.Broadcast}}
# Message kinds broadcast over gossip whatever "broadcast" says: rare ones whose delivery matters more than
# their cost, since gossip relays them through other replicas when two replicas cannot reach each other.
# Kinds: pre-prepare, prepare, commit, checkpoint, view-change, new-view.
gossip_kinds = {{list .P2P.GossipKinds}}
# How often a replica pings the others: those that answered within three intervals count as reachable
# (status, /v1/peers, metrics), and the round trips size the retransmission timeout.
ping_interval = {{q .P2P.PingInterval.String}}
# Connection limits per remote IP address, for inbound connections from addresses that are neither loopback,
# nor a replica's IP address in the genesis, nor in allow_networks (libp2p's own, 8 connections and 0.2 new
# ones per second, are replaced by these). A client machine holds one connection per replica for each libp2p
# host it runs: ` + "`p2pbft bench`" + ` and a Go client one for all their sessions, ` + "`p2pbft tx`" + ` one per process. A refused connection is
# logged with the limit's name and counted in /metrics (p2pbft_p2p_refused_connections_total{limit=...}).
# Connections open at once from one IPv4 address (IPv6: one /56).
conns_per_ip = {{.P2P.ConnsPerIP}}
# New connections per second from one address, after a burst of conn_burst_per_ip.
conn_rate_per_ip = {{.P2P.ConnRatePerIP}}
conn_burst_per_ip = {{.P2P.ConnBurstPerIP}}
# Trusted networks exempt from the limits above, as the genesis addresses are; their connections may also
# use the room the resource manager keeps for allowlisted peers. CIDRs, addresses or multiaddrs:
# ["10.0.0.0/8", "192.0.2.7", "/ip4/198.51.100.0/ipcidr/24"]. List replicas whose genesis address is a /dns
# name here, and client machines you trust.
allow_networks = {{list .P2P.AllowNetworks}}

[consensus]
# The engine's unit of time; every timer is rounded up to whole ticks.
tick = {{q .Consensus.Tick.String}}
# A checkpoint every this many sequence numbers (K).
checkpoint_interval = {{.Consensus.CheckpointInterval}}
# Watermark window: sequence numbers accepted above the last stable checkpoint (a multiple of K; 2K is usual).
window = {{.Consensus.Window}}
# The primary cuts a batch at this many requests ...
batch_max_requests = {{.Consensus.BatchMaxRequests}}
# ... or this many bytes of requests ...
batch_max_bytes = {{.Consensus.BatchMaxBytes}}
# ... or this long after the batch's first request arrived.
batch_timeout = {{q .Consensus.BatchTimeout.String}}
# Batches the primary keeps in flight at once (pipelining depth), at most the window.
max_in_flight = {{.Consensus.MaxInFlight}}
# While a batch is in flight, the next one is cut only once this many requests wait (otherwise when the
# pipeline empties): every batch costs each replica a fixed amount of signing, verifying and syncing, so at
# moderate load fewer, larger batches leave more CPU to the requests. 0 cuts as soon as there is room.
pipeline_min_requests = {{.Consensus.PipelineMinRequests}}
# How long a known request may wait to execute before replicas suspect the primary and change view.
request_timeout = {{q .Consensus.RequestTimeout.String}}
# How long to wait for the NEW-VIEW once a quorum asked for a view change; doubles at every further
# view change without progress.
view_change_timeout = {{q .Consensus.ViewChangeTimeout.String}}
# A replica that makes no progress for this long resends its own messages and asks a peer for what it lacks.
# A floor: the node raises it to 4 round trips to the farthest reachable replica (measured by pings), so the
# default suits a LAN and a WAN alike.
retransmit_timeout = {{q .Consensus.RetransmitTimeout.String}}
# How often a replica tells the others where it is, so that one that fell behind (or comes back to an idle
# network) catches up without waiting for client traffic.
status_interval = {{q .Consensus.StatusInterval.String}}

[state_sync]
# A replica that fell behind a stable checkpoint copies the state from its peers: a snapshot of the
# application and the client table, in parts of this many bytes, checked against the certified checkpoint.
chunk_bytes = {{.StateSync.ChunkBytes}}
# Up to this many blocks behind, it replays the blocks instead (each checked against its commit certificate).
block_sync_max = {{.StateSync.BlockSyncMax}}
# How long to wait for one answer from a peer before asking another.
request_timeout = {{q .StateSync.RequestTimeout.String}}
# Snapshots of this many latest stable checkpoints are kept for peers that copy them (a copy takes longer
# than a checkpoint interval under load).
keep_snapshots = {{.StateSync.KeepSnapshots}}

[api]
# HTTP/JSON API and Prometheus /metrics. Loopback by default; empty disables it.
http = {{q .API.HTTP}}
# Serve Go runtime profiles (CPU, heap, goroutines) under /debug/pprof/ on that address, to loopback
# clients only: go tool pprof http://127.0.0.1:26680/debug/pprof/profile?seconds=20
pprof = {{.API.Pprof}}

[store]
# Data directory (the embedded database).
dir = {{q .Store.Dir}}
# fsync before any consensus message leaves. Off breaks crash safety: for experiments only.
sync = {{.Store.Sync}}
# The database's write buffer, in bytes. It also sets the disk its write-ahead logs take: each is
# preallocated to 110% of it and a few are kept for reuse. The default keeps a replica small on disk;
# 67108864 (64 MiB) is the large setting, for fewer, larger flushes under sustained heavy write load, at
# about 0.5 GB of write-ahead logs.
memtable_size = {{.Store.MemTableSize}}

[log]
# debug, info, warn or error.
level = {{q .Log.Level}}
# text or json.
format = {{q .Log.Format}}

[trace]
# Keep per-slot records of consensus (served at /v1/trace, merged by p2pbft trace) and the phase
# histograms of /metrics. Cheap enough to stay on.
enabled = {{.Trace.Enabled}}
# How many of the latest slots (sequence number in a view) are kept ...
slots = {{.Trace.Slots}}
# ... and how many of the latest view changes.
view_changes = {{.Trace.ViewChanges}}

[experiment]
# Byzantine behaviour for fault-injection experiments. Ignored unless the node is also started with
# --experiment-byzantine; leave empty on real nodes.
# Modes: silent (sends nothing), equivocate (as primary, conflicting pre-prepares to different backups),
# delay (holds every outgoing message and reply for byzantine_delay), drop (drops a byzantine_drop_rate
# fraction of them), garbage (malformed, wrongly signed and bogus messages, wrong replies).
byzantine_mode = {{q .Experiment.ByzantineMode}}
# How long the delay mode holds each message.
byzantine_delay = {{q .Experiment.ByzantineDelay.String}}
# Fraction of messages the drop mode drops, in (0, 1].
byzantine_drop_rate = {{.Experiment.ByzantineDropRate}}
# Seed of the drop and garbage modes' random choices (a run can be repeated).
byzantine_seed = {{.Experiment.ByzantineSeed}}
# Enable the experiment endpoints (partition, heal) on the HTTP API.
admin_api = {{.Experiment.AdminAPI}}
`))

func quoteList(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = strconv.Quote(x)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// Commented renders cfg as a commented TOML file.
func Commented(cfg Config) ([]byte, error) {
	var buf bytes.Buffer
	if err := exampleTemplate.Execute(&buf, cfg); err != nil {
		return nil, fmt.Errorf("config: render: %w", err)
	}
	return buf.Bytes(), nil
}
