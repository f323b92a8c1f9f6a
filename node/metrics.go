package node

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// metrics are the node's Prometheus collectors, all registered on Options.Registry (the p2p host adds its
// own: p2pbft_p2p_*). Counters the loop updates are plain client_golang metrics; the engine's gauges and
// counters are read at scrape time from the state the loop publishes (engineCollector).
type metrics struct {
	reg        *prometheus.Registry
	collectors []prometheus.Collector

	blocks         prometheus.Counter
	requests       prometheus.Counter
	batchRequests  prometheus.Histogram
	latency        prometheus.Histogram
	persistSeconds prometheus.Histogram
	executeSeconds prometheus.Histogram
	messages       *prometheus.CounterVec
	sends          *prometheus.CounterVec
	proposals      *prometheus.CounterVec
	syncs          *prometheus.CounterVec
	syncBytes      prometheus.Counter
	syncBlocks     prometheus.Counter
	linkReplies    prometheus.Counter
	linkTrusted    prometheus.Counter
	replySeconds   prometheus.Histogram
}

func newMetrics(n *Node) (*metrics, error) {
	m := &metrics{reg: n.registry}
	m.blocks = prometheus.NewCounter(prometheus.CounterOpts{Name: "p2pbft_blocks_committed_total",
		Help: "Blocks (committed batches, null batches included) this replica executed and stored."})
	m.requests = prometheus.NewCounter(prometheus.CounterOpts{Name: "p2pbft_requests_executed_total",
		Help: "Client requests this replica executed."})
	m.batchRequests = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "p2pbft_batch_requests",
		Help:    "Requests per executed block.",
		Buckets: []float64{0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000}})
	m.latency = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "p2pbft_request_latency_seconds",
		Help:    "Commit latency: from a client request reaching this replica to its execution here (requests submitted to this replica).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)})
	m.persistSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "p2pbft_persist_seconds",
		Help:    "Time to make one round of consensus state durable (one fsynced batch).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)})
	m.executeSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "p2pbft_execute_seconds",
		Help:    "Time to execute and durably store the blocks of one round.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)})
	m.messages = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "p2pbft_consensus_messages_total",
		Help: "Consensus messages the engine took (accepted) or did not use (ignored: explained by timing; rejected: provably invalid), by kind and reason."},
		[]string{"kind", "result", "reason"})
	m.sends = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "p2pbft_consensus_sends_total",
		Help: "Consensus messages handed to the network, by kind, path (direct or gossip) and result."},
		[]string{"kind", "path", "result"})
	m.proposals = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "p2pbft_client_requests_total",
		Help: "Client requests received by this replica (p2p or API), by result (accepted or the engine's reason)."},
		[]string{"result"})
	m.syncs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "p2pbft_state_transfers_total",
		Help: "State transfers this replica ran, by method (snapshot or blocks) and result."},
		[]string{"method", "result"})
	m.syncBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "p2pbft_state_transfer_bytes_total",
		Help: "Snapshot bytes (application chunks and client table) fetched from peers."})
	m.syncBlocks = prometheus.NewCounter(prometheus.CounterOpts{Name: "p2pbft_state_transfer_blocks_total",
		Help: "Blocks fetched from peers during state transfers."})
	m.linkReplies = prometheus.NewCounter(prometheus.CounterOpts{Name: "p2pbft_link_replies_total",
		Help: "Replies pushed to clients over their links (one per executed request whose client has a link here)."})
	m.linkTrusted = prometheus.NewCounter(prometheus.CounterOpts{Name: "p2pbft_link_trusted_requests_total",
		Help: "First-round client requests a backup took from their author's own link: their signature is not checked again when the pre-prepare brings them."})
	m.replySeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "p2pbft_reply_seconds",
		Help:    "Time to bundle and queue the replies of one round for the clients' links.",
		Buckets: prometheus.ExponentialBuckets(0.00001, 2, 16)})
	m.collectors = []prometheus.Collector{m.blocks, m.requests, m.batchRequests, m.latency, m.persistSeconds,
		m.executeSeconds, m.messages, m.sends, m.proposals, m.syncs, m.syncBytes, m.syncBlocks, m.linkReplies,
		m.linkTrusted, m.replySeconds, newEngineCollector(n), newHealthCollector(n)}
	for i, c := range m.collectors {
		if err := m.reg.Register(c); err != nil {
			for _, r := range m.collectors[:i] {
				m.reg.Unregister(r)
			}
			return nil, fmt.Errorf("node: register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) unregister() {
	for _, c := range m.collectors {
		m.reg.Unregister(c)
	}
}

// stepped counts the engine's verdict on a message.
func (m *metrics) stepped(k wire.Kind, err error) {
	result, reason := "accepted", ""
	var se *pbft.StepError
	switch {
	case err == nil:
	case errors.As(err, &se):
		reason = string(se.Reason)
		result = "ignored"
		if se.Reason.Invalid() {
			result = "rejected"
		}
	default:
		result, reason = "rejected", "error"
	}
	m.messages.WithLabelValues(k.String(), result, reason).Inc()
}

func (m *metrics) sent(k wire.Kind, path string, err error) {
	result := "ok"
	if err != nil {
		result = "failed"
	}
	m.sends.WithLabelValues(k.String(), path, result).Inc()
}

func (m *metrics) proposed(err error) {
	result := "accepted"
	var se *pbft.StepError
	if errors.As(err, &se) {
		result = string(se.Reason)
	} else if err != nil {
		result = "error"
	}
	m.proposals.WithLabelValues(result).Inc()
}

// engineCollector exports, at scrape time, the replica's state and the engine's counters as the loop last
// published them, and the signature verifier's counters.
type engineCollector struct {
	n                                                         *Node
	height, view, primary, stable, mode, pending, slots       *prometheus.Desc
	viewChanges, newViews, stableCkpts, transfers, installed  *prometheus.Desc
	certCommits, executed, fetches, retransmits, divergences  *prometheus.Desc
	safetyAlarms, buffered, future                            *prometheus.Desc
	rejected, verified, cacheHits, verifyBatches, verifyFails *prometheus.Desc
}

func newEngineCollector(n *Node) *engineCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &engineCollector{
		n:           n,
		height:      d("p2pbft_height", "Last executed (and durable) block."),
		view:        d("p2pbft_view", "Current view."),
		primary:     d("p2pbft_primary", "Primary of the current view (replica index)."),
		stable:      d("p2pbft_stable_checkpoint", "Last stable checkpoint (the low watermark)."),
		mode:        d("p2pbft_mode", "1 for the replica's current mode.", "mode"),
		pending:     d("p2pbft_pending_requests", "Client requests known and not executed."),
		slots:       d("p2pbft_slots", "Sequence numbers the engine holds state for."),
		viewChanges: d("p2pbft_view_changes_total", "VIEW-CHANGE messages this replica sent (views it tried to move to)."),
		newViews:    d("p2pbft_new_views_total", "Views entered through a NEW-VIEW."),
		stableCkpts: d("p2pbft_stable_checkpoints_total", "Checkpoints that became stable."),
		transfers:   d("p2pbft_state_transfers_requested_total", "State transfers the engine asked for."),
		installed:   d("p2pbft_snapshots_installed_total", "Snapshots installed by state transfer."),
		certCommits: d("p2pbft_certificate_commits_total", "Batches committed on a fetched commit certificate (catching up)."),
		executed:    d("p2pbft_engine_executed_requests_total", "Requests the engine saw executed (replays after restarts included)."),
		fetches:     d("p2pbft_fetches_total", "FETCH messages sent to repair missing state."),
		retransmits: d("p2pbft_retransmits_total", "Retransmissions of own messages."),
		divergences: d("p2pbft_divergences_total", "Own checkpoints that contradicted a certified one."),
		safetyAlarms: d("p2pbft_safety_alarms_total",
			"Proofs that more than f replicas are faulty (a NEW-VIEW or certificate contradicting a committed batch). Zero while at most f are."),
		buffered:      d("p2pbft_buffered_messages_total", "Messages kept for a view not entered yet."),
		future:        d("p2pbft_future_messages", "Messages held for views not entered yet."),
		rejected:      d("p2pbft_engine_rejected_total", "Messages and calls the engine did not use, by reason.", "reason"),
		verified:      d("p2pbft_signatures_verified_total", "Signatures checked with cryptography (ingress and engine)."),
		cacheHits:     d("p2pbft_signature_cache_hits_total", "Signatures found already verified."),
		verifyBatches: d("p2pbft_signature_batches_total", "Batch verifications of two or more signatures."),
		verifyFails:   d("p2pbft_signatures_invalid_total", "Signatures that did not verify."),
	}
}

func (c *engineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.height, c.view, c.primary, c.stable, c.mode, c.pending, c.slots,
		c.viewChanges, c.newViews, c.stableCkpts, c.transfers, c.installed, c.certCommits, c.executed, c.fetches,
		c.retransmits, c.divergences, c.rejected, c.verified, c.cacheHits, c.verifyBatches, c.verifyFails,
		c.safetyAlarms, c.buffered, c.future} {
		ch <- d
	}
}

func (c *engineCollector) Collect(ch chan<- prometheus.Metric) {
	ps := c.n.state.Load()
	if ps == nil {
		return
	}
	g := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	ct := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	s := ps.stats
	g(c.height, float64(ps.height))
	g(c.view, float64(ps.soft.View))
	g(c.primary, float64(ps.soft.Primary))
	g(c.stable, float64(ps.soft.Stable))
	for _, m := range []pbft.Status{pbft.StatusNormal, pbft.StatusViewChange, pbft.StatusSyncing} {
		v := 0.0
		if ps.soft.Status == m {
			v = 1
		}
		g(c.mode, v, m.String())
	}
	g(c.pending, float64(s.Pending))
	g(c.slots, float64(s.Slots))
	ct(c.viewChanges, s.ViewChanges)
	ct(c.newViews, s.NewViews)
	ct(c.stableCkpts, s.StableCheckpoints)
	ct(c.transfers, s.StateTransfers)
	ct(c.installed, s.SnapshotsInstalled)
	ct(c.certCommits, s.CertCommits)
	ct(c.executed, s.ExecutedRequests)
	ct(c.fetches, s.Fetches)
	ct(c.retransmits, s.Retransmits)
	ct(c.divergences, s.Divergences)
	ct(c.safetyAlarms, s.SafetyAlarms)
	ct(c.buffered, s.Buffered)
	g(c.future, float64(s.Future))
	for r, v := range s.Rejected {
		ct(c.rejected, v, string(r))
	}
	vs := c.n.vstats
	ct(c.verified, vs.verified.Load())
	ct(c.cacheHits, vs.cacheHits.Load())
	ct(c.verifyBatches, vs.batches.Load())
	ct(c.verifyFails, vs.failed.Load())
}
