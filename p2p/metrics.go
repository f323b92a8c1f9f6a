package p2p

import (
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2pbft/p2pbft/internal/logs"
)

// Result is what the host did with an inbound message.
type Result string

// Results.
const (
	Accepted Result = "accepted" // valid: delivered (and, on gossip, forwarded)
	Rejected Result = "rejected" // provably invalid: dropped, and the gossip forwarder is penalised
	Ignored  Result = "ignored"  // not wanted now (the driver's filter said so): dropped without penalty
)

// Reason says why a message was rejected or ignored.
type Reason string

// Reasons, in the order the checks run (cheapest first).
const (
	ReasonNone      Reason = ""
	ReasonOversized Reason = "oversized"  // larger than the size limit for its sender
	ReasonMalformed Reason = "malformed"  // does not decode as an envelope, or its fields have bad sizes
	ReasonChain     Reason = "chain"      // another chain's message
	ReasonKind      Reason = "kind"       // unknown kind, or a kind not allowed on this path
	ReasonNonMember Reason = "non-member" // a replica-only kind authored by a key outside the genesis
	ReasonFilter    Reason = "filter"     // the driver's Filter said Ignore or Reject
	ReasonSignature Reason = "signature"  // the signature does not verify
	ReasonLinkKeys  Reason = "link-keys"  // a hello beyond the keys one client link may route
	ReasonNoHandler Reason = "no-handler" // a client request arrived before the driver set its handler
)

// Drop reasons: messages lost to a full queue or a failed send, counted so they are never silent.
const (
	DropValidationQueue = "validation-queue-full" // gossip: too many messages awaiting validation
	DropThrottled       = "validation-throttled"  // gossip: too many concurrent validations
	DropSlowSubscriber  = "slow-subscriber"       // gossip: the delivery side did not keep up
	DropOutboundQueue   = "outbound-queue-full"   // gossip: a peer's outbound RPC queue was full
	DropSendQueue       = "send-queue-full"       // direct: the per-peer send queue was full
	DropSendFailed      = "send-failed"           // direct: no connection, or the write failed
	DropEvents          = "events-overflow"       // a peer event the application did not read in time
	DropStreamLimit     = "stream-limit"          // direct: a non-replica peer opened too many streams
	DropLinkQueue       = "link-queue-full"       // client link: the pushes queued for the client overflowed
)

// dropReasons are the Drop* reasons, exported at zero until they happen: a counter that exists from the
// start makes rate() and increase() work from the first drop on, and an alert on it can tell "no drop"
// from "not scraped".
var dropReasons = []string{DropValidationQueue, DropThrottled, DropSlowSubscriber, DropOutboundQueue,
	DropSendQueue, DropSendFailed, DropEvents, DropStreamLimit, DropLinkQueue}

// refusalLimits are the Limit* names, exported at zero (both directions) for the same reason.
var refusalLimits = []string{LimitConnsPerIP, LimitConnRate, LimitSystem, LimitTransient, LimitPeer, LimitOther}

// CounterKey identifies one message counter.
type CounterKey struct {
	// Source is the gossip topic or the direct-stream protocol ID the message came in on.
	Source string
	// Peer is the replica that handed us the message (the gossip forwarder or the stream's remote), or
	// the empty peer ID for any other peer: clients are counted together, so that the counters (and the
	// Prometheus series made from them) stay as many as the replicas, however many clients come and go.
	Peer   peer.ID
	Result Result
	Reason Reason
}

// Count is one counter's value.
type Count struct {
	CounterKey
	N uint64
}

// Stats is a snapshot of the host's counters.
type Stats struct {
	// Messages counts inbound messages by source, peer, result and reason.
	Messages []Count
	// Drops counts messages lost to full queues and failed sends, by the Drop* reasons.
	Drops map[string]uint64
	// Duplicates counts gossip copies of messages already seen (dropped before validation). Divided by
	// accepted gossip messages it gives the overlay's redundancy.
	Duplicates uint64
	// ValidationTime is the total time spent in the validator on accepted gossip and direct messages.
	ValidationTime time.Duration
	// RefusedConns counts connections refused by a resource limit, by limit (Limit* names) and direction.
	RefusedConns map[RefusalKey]uint64
}

// RefusalKey identifies a refused-connections counter.
type RefusalKey struct {
	Limit     string // LimitConnsPerIP, LimitConnRate, LimitSystem, ...
	Direction string // "inbound" or "outbound"
}

// Refused sums the refused connections of one limit ("*": all), both directions.
func (s Stats) Refused(limit string) uint64 {
	var n uint64
	for k, v := range s.RefusedConns {
		if limit == "*" || k.Limit == limit {
			n += v
		}
	}
	return n
}

// Total sums the message counters with the given result, and the given reason unless it is "*".
func (s Stats) Total(r Result, reason Reason) uint64 {
	var n uint64
	for _, c := range s.Messages {
		if c.Result == r && (reason == "*" || c.Reason == reason) {
			n += c.N
		}
	}
	return n
}

// ForPeer sums the message counters of one replica (or, for the empty peer ID, of all clients) with the
// given result (any reason).
func (s Stats) ForPeer(p peer.ID, r Result) uint64 {
	var n uint64
	for _, c := range s.Messages {
		if c.Peer == p && c.Result == r {
			n += c.N
		}
	}
	return n
}

type metrics struct {
	isReplica func(peer.ID) bool
	rejects   *logs.Rejections

	mu         sync.Mutex
	messages   map[CounterKey]uint64
	drops      map[string]uint64
	duplicates uint64
	validation time.Duration
	refused    map[RefusalKey]uint64
}

// newMetrics returns the host's counters; rejected messages also go to rejects (a log line each at
// debug, a summary at info), if it is not nil.
func newMetrics(isReplica func(peer.ID) bool, rejects *logs.Rejections) *metrics {
	return &metrics{
		isReplica: isReplica,
		rejects:   rejects,
		messages:  make(map[CounterKey]uint64),
		drops:     make(map[string]uint64),
		refused:   make(map[RefusalKey]uint64),
	}
}

func (m *metrics) refuse(limit string, dir network.Direction) {
	m.mu.Lock()
	m.refused[RefusalKey{Limit: limit, Direction: strings.ToLower(dir.String())}]++
	m.mu.Unlock()
}

func (m *metrics) count(source string, p peer.ID, r Result, reason Reason) {
	m.countN(source, p, r, reason, 1)
}

// countN counts n messages with one outcome.
func (m *metrics) countN(source string, p peer.ID, r Result, reason Reason, n uint64) {
	if r == Rejected {
		m.rejects.Reject(string(reason), n, "source", source, "peer", p)
	}
	if p != "" && !m.isReplica(p) {
		p = "" // a client: counted with the others (see CounterKey.Peer)
	}
	m.mu.Lock()
	m.messages[CounterKey{Source: source, Peer: p, Result: r, Reason: reason}] += n
	m.mu.Unlock()
}

func (m *metrics) addValidationTime(d time.Duration) {
	m.mu.Lock()
	m.validation += d
	m.mu.Unlock()
}

func (m *metrics) drop(reason string) {
	m.mu.Lock()
	m.drops[reason]++
	m.mu.Unlock()
}

func (m *metrics) duplicate() {
	m.mu.Lock()
	m.duplicates++
	m.mu.Unlock()
}

func (m *metrics) snapshot() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := Stats{
		Messages:       make([]Count, 0, len(m.messages)),
		Drops:          make(map[string]uint64, len(m.drops)),
		Duplicates:     m.duplicates,
		ValidationTime: m.validation,
		RefusedConns:   make(map[RefusalKey]uint64, len(m.refused)),
	}
	for k, n := range m.refused {
		s.RefusedConns[k] = n
	}
	for k, n := range m.messages {
		s.Messages = append(s.Messages, Count{CounterKey: k, N: n})
	}
	for k, n := range m.drops {
		s.Drops[k] = n
	}
	return s
}

// tracer feeds gossipsub's drop and duplicate events into the counters.
type tracer struct{ m *metrics }

var _ pubsub.RawTracer = tracer{}

func (t tracer) RejectMessage(_ *pubsub.Message, reason string) {
	switch reason {
	case pubsub.RejectValidationQueueFull:
		t.m.drop(DropValidationQueue)
	case pubsub.RejectValidationThrottled:
		t.m.drop(DropThrottled)
	}
}
func (t tracer) DuplicateMessage(*pubsub.Message)                   { t.m.duplicate() }
func (t tracer) UndeliverableMessage(*pubsub.Message)               { t.m.drop(DropSlowSubscriber) }
func (t tracer) DropRPC(*pubsub.RPC, peer.ID)                       { t.m.drop(DropOutboundQueue) }
func (tracer) AddPeer(peer.ID, protocol.ID)                         {}
func (tracer) RemovePeer(peer.ID)                                   {}
func (tracer) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (tracer) OnClosedOutboundStream(peer.ID)                       {}
func (tracer) Join(string)                                          {}
func (tracer) Leave(string)                                         {}
func (tracer) Graft(peer.ID, string)                                {}
func (tracer) Prune(peer.ID, string)                                {}
func (tracer) ValidateMessage(*pubsub.Message)                      {}
func (tracer) DeliverMessage(*pubsub.Message)                       {}
func (tracer) ThrottlePeer(peer.ID)                                 {}
func (tracer) RecvRPC(*pubsub.RPC)                                  {}
func (tracer) SendRPC(*pubsub.RPC, peer.ID)                         {}
func (tracer) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}

// collector exports the counters to Prometheus at scrape time. Its labels are bounded by the genesis:
// a peer is named by its replica index, and every other peer (clients, however many) is "client".
type collector struct {
	h          *Host
	messages   *prometheus.Desc
	drops      *prometheus.Desc
	duplicates *prometheus.Desc
	validation *prometheus.Desc
	replicas   *prometheus.Desc
	connected  *prometheus.Desc
	peers      *prometheus.Desc
	refused    *prometheus.Desc
}

// Peer kinds, the peer_kind label of p2pbft_p2p_messages_total.
const (
	peerKindReplica = "replica"
	peerKindClient  = "client"
)

func newCollector(h *Host) *collector {
	return &collector{
		h: h,
		messages: prometheus.NewDesc("p2pbft_p2p_messages_total",
			"Inbound envelopes by source (gossip topic or stream protocol), peer kind (replica or client), replica index (empty for clients), result and reason.",
			[]string{"source", "peer_kind", "replica", "result", "reason"}, nil),
		drops: prometheus.NewDesc("p2pbft_p2p_drops_total",
			"Messages lost to full queues or failed sends, by reason.", []string{"reason"}, nil),
		duplicates: prometheus.NewDesc("p2pbft_p2p_gossip_duplicates_total",
			"Gossip copies of already-seen messages, dropped before validation.", nil, nil),
		validation: prometheus.NewDesc("p2pbft_p2p_validation_seconds_total",
			"Time spent validating accepted messages.", nil, nil),
		replicas: prometheus.NewDesc("p2pbft_p2p_connected_replicas",
			"Replicas of the genesis this host is connected to (not counting itself).", nil, nil),
		connected: prometheus.NewDesc("p2pbft_p2p_replica_connected",
			"1 if this host is connected to the replica of that index, else 0 (every replica of the genesis but this host).",
			[]string{"replica"}, nil),
		peers: prometheus.NewDesc("p2pbft_p2p_connected_peers",
			"Peers this host is connected to (replicas and clients).", nil, nil),
		refused: prometheus.NewDesc("p2pbft_p2p_refused_connections_total",
			"Connections refused by a resource limit, by limit (conns_per_ip, conn_rate_per_ip, system, transient, peer, other) and direction.",
			[]string{"limit", "direction"}, nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.messages
	ch <- c.drops
	ch <- c.duplicates
	ch <- c.validation
	ch <- c.replicas
	ch <- c.connected
	ch <- c.peers
	ch <- c.refused
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.h.Stats()
	for _, m := range s.Messages {
		kind, idx := peerKindClient, ""
		if i := c.h.replicaIndex(m.Peer); m.Peer != "" && i >= 0 {
			kind, idx = peerKindReplica, strconv.Itoa(i)
		}
		ch <- prometheus.MustNewConstMetric(c.messages, prometheus.CounterValue, float64(m.N),
			m.Source, kind, idx, string(m.Result), string(m.Reason))
	}
	for _, r := range dropReasons {
		ch <- prometheus.MustNewConstMetric(c.drops, prometheus.CounterValue, float64(s.Drops[r]), r)
	}
	for r, n := range s.Drops {
		if !slices.Contains(dropReasons, r) {
			ch <- prometheus.MustNewConstMetric(c.drops, prometheus.CounterValue, float64(n), r)
		}
	}
	for _, limit := range refusalLimits {
		for _, dir := range []string{"inbound", "outbound"} {
			k := RefusalKey{Limit: limit, Direction: dir}
			ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(s.RefusedConns[k]), k.Limit, k.Direction)
		}
	}
	for k, n := range s.RefusedConns {
		if !slices.Contains(refusalLimits, k.Limit) || (k.Direction != "inbound" && k.Direction != "outbound") {
			ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(n), k.Limit, k.Direction)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.duplicates, prometheus.CounterValue, float64(s.Duplicates))
	ch <- prometheus.MustNewConstMetric(c.validation, prometheus.CounterValue, s.ValidationTime.Seconds())
	conn := c.h.ConnectedReplicas()
	ch <- prometheus.MustNewConstMetric(c.replicas, prometheus.GaugeValue, float64(len(conn)))
	for i := range c.h.genesis.N() {
		if i == c.h.self {
			continue
		}
		v := 0.0
		if slices.Contains(conn, i) {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.connected, prometheus.GaugeValue, v, strconv.Itoa(i))
	}
	ch <- prometheus.MustNewConstMetric(c.peers, prometheus.GaugeValue, float64(len(c.h.lh.Network().Peers())))
}
