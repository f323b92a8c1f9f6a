package node

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/p2pbft/p2pbft/internal/buildinfo"
	"github.com/p2pbft/p2pbft/node/trace"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// metrics are the node's Prometheus collectors, all registered on Options.Registry (the p2p host adds its
// own: p2pbft_p2p_*). docs/metrics.md lists them; TestMetricsDocumented keeps that list and this file in
// step.
//
// Names follow Prometheus' conventions: p2pbft_<subsystem>_<name>_<unit>, _total for counters, base
// units (seconds, bytes). The subsystems are the node's jobs: chain (executed blocks), requests (client
// requests at this replica), consensus (the PBFT engine), statesync, signatures, store, links (client
// links), p2p. Labels take bounded values only (kinds, reasons, results, replica indexes), never a peer ID
// or a client key, so the number of series does not grow with the clients. Counters whose labels are
// known in advance are created at zero, so that rate() and alerts see them before their first event.
//
// Counters the loop updates are plain client_golang metrics; the engine's gauges and counters are read
// at scrape time from the state the loop publishes (engineCollector). The Go runtime and process
// collectors (go_*, process_*: CPU seconds, resident memory, open file descriptors) and p2pbft_build_info
// are registered too, unless the registry has them already.
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
	phaseSeconds   *prometheus.HistogramVec
	phases         map[trace.Phase]prometheus.Observer // phaseSeconds by label, resolved once; read-only
}

func newMetrics(n *Node) (*metrics, error) {
	m := &metrics{reg: n.registry}
	m.blocks = prometheus.NewCounter(prometheus.CounterOpts{Name: "p2pbft_chain_blocks_total",
		Help: "Blocks (committed batches, null batches included) this replica executed and stored."})
	m.requests = prometheus.NewCounter(prometheus.CounterOpts{Name: "p2pbft_requests_executed_total",
		Help: "Client requests this replica executed since its process started."})
	m.batchRequests = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "p2pbft_chain_block_requests",
		Help:    "Requests per executed block.",
		Buckets: []float64{0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000}})
	m.latency = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "p2pbft_requests_commit_latency_seconds",
		Help:    "Commit latency: from a client request reaching this replica to its execution here (requests submitted to this replica).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)})
	m.persistSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "p2pbft_store_persist_seconds",
		Help:    "Time to make one round of consensus state durable (one fsynced batch).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)})
	m.executeSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "p2pbft_chain_execute_seconds",
		Help:    "Time to execute and durably store the blocks of one round.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)})
	m.messages = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "p2pbft_consensus_messages_total",
		Help: "Consensus messages the engine took (accepted) or did not use (ignored: explained by timing; rejected: provably invalid), by kind and reason."},
		[]string{"kind", "result", "reason"})
	m.sends = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "p2pbft_consensus_sends_total",
		Help: "Consensus messages handed to the network, by kind, path (direct or gossip) and result."},
		[]string{"kind", "path", "result"})
	m.proposals = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "p2pbft_requests_received_total",
		Help: "Client requests received by this replica (p2p or API), by result (accepted or the engine's reason)."},
		[]string{"result"})
	m.proposals.WithLabelValues("accepted")
	m.syncs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "p2pbft_statesync_transfers_total",
		Help: "State transfers this replica ran, by method (snapshot or blocks) and result (ok or failed)."},
		[]string{"method", "result"})
	for _, method := range []string{"snapshot", "blocks"} {
		for _, result := range []string{"ok", "failed"} {
			m.syncs.WithLabelValues(method, result)
		}
	}
	m.syncBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "p2pbft_statesync_bytes_total",
		Help: "Snapshot bytes (application chunks and client table) fetched from peers."})
	m.syncBlocks = prometheus.NewCounter(prometheus.CounterOpts{Name: "p2pbft_statesync_blocks_total",
		Help: "Blocks fetched from peers during state transfers."})
	m.linkReplies = prometheus.NewCounter(prometheus.CounterOpts{Name: "p2pbft_links_replies_total",
		Help: "Replies pushed to clients over their links (one per executed request whose client has a link here)."})
	m.linkTrusted = prometheus.NewCounter(prometheus.CounterOpts{Name: "p2pbft_links_trusted_requests_total",
		Help: "First-round client requests a backup took from their author's own link: their signature is not checked again when the pre-prepare brings them."})
	m.replySeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "p2pbft_links_reply_seconds",
		Help:    "Time to bundle and queue the replies of one round for the clients' links.",
		Buckets: prometheus.ExponentialBuckets(0.00001, 2, 16)})
	m.phaseSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "p2pbft_consensus_phase_seconds",
		Help:    "Time a slot or view change spent in each phase at this replica, by phase (from the trace records; empty when trace.enabled is off).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18)}, []string{"phase"})
	m.phases = make(map[trace.Phase]prometheus.Observer, len(trace.Phases()))
	for _, p := range trace.Phases() {
		m.phases[p] = m.phaseSeconds.WithLabelValues(string(p))
	}
	m.collectors = []prometheus.Collector{m.phaseSeconds, m.blocks, m.requests, m.batchRequests, m.latency, m.persistSeconds,
		m.executeSeconds, m.messages, m.sends, m.proposals, m.syncs, m.syncBytes, m.syncBlocks, m.linkReplies,
		m.linkTrusted, m.replySeconds, newEngineCollector(n), newHealthCollector(n), newInfoCollector(n)}
	for i, c := range m.collectors {
		if err := m.reg.Register(c); err != nil {
			for _, r := range m.collectors[:i] {
				m.reg.Unregister(r)
			}
			return nil, fmt.Errorf("node: register metrics: %w", err)
		}
	}
	// The runtime's: shared by everything in the process, so a registry that has them already (an
	// embedding program's) keeps its own.
	for _, c := range []prometheus.Collector{collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		err := m.reg.Register(c)
		var are prometheus.AlreadyRegisteredError
		switch {
		case err == nil:
			m.collectors = append(m.collectors, c)
		case errors.As(err, &are):
		default:
			m.unregister()
			return nil, fmt.Errorf("node: register runtime metrics: %w", err)
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

// infoCollector exports what identifies the replica and its build, as info-style gauges (value 1, the
// facts in labels): one series each, for joins in queries and dashboards.
type infoCollector struct {
	build, node             *prometheus.Desc
	buildLabels, nodeLabels []string
	replicas, faulty        *prometheus.Desc
	nReplicas, fTolerated   float64
}

func newInfoCollector(n *Node) *infoCollector {
	bi := buildinfo.Read()
	return &infoCollector{
		build: prometheus.NewDesc("p2pbft_build_info", "The running binary: module version, VCS revision, Go version (value 1).",
			[]string{"version", "revision", "goversion"}, nil),
		buildLabels: []string{bi.Version, bi.Revision, bi.GoVersion},
		node: prometheus.NewDesc("p2pbft_node_info", "This replica: chain ID, replica index, moniker and peer ID (value 1).",
			[]string{"chain_id", "replica", "moniker", "peer_id"}, nil),
		nodeLabels: []string{n.chainID, strconv.Itoa(n.self), n.cfg.Moniker, n.key.PeerID().String()},
		replicas:   prometheus.NewDesc("p2pbft_consensus_replicas", "Replicas in the genesis (n).", nil, nil),
		faulty: prometheus.NewDesc("p2pbft_consensus_max_faulty_replicas",
			"Faulty replicas the chain tolerates (f = (n-1)/3); a quorum is 2f+1 replicas.", nil, nil),
		nReplicas:  float64(n.n),
		fTolerated: float64(n.quorum.F),
	}
}

func (c *infoCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.build
	ch <- c.node
	ch <- c.replicas
	ch <- c.faulty
}

func (c *infoCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.build, prometheus.GaugeValue, 1, c.buildLabels...)
	ch <- prometheus.MustNewConstMetric(c.node, prometheus.GaugeValue, 1, c.nodeLabels...)
	ch <- prometheus.MustNewConstMetric(c.replicas, prometheus.GaugeValue, c.nReplicas)
	ch <- prometheus.MustNewConstMetric(c.faulty, prometheus.GaugeValue, c.fTolerated)
}

// engineCollector exports, at scrape time, the replica's state and the engine's counters as the loop last
// published them, and the signature verifier's counters.
type engineCollector struct {
	n                                                        *Node
	height, view, isPrimary, stable, mode, pending, slots    *prometheus.Desc
	viewChanges, newViews, stableCkpts, transfers, installed *prometheus.Desc
	certCommits, fetches, retransmits, divergences           *prometheus.Desc
	safetyAlarms, future                                     *prometheus.Desc
	verified, cacheHits, cacheMisses, cacheSize              *prometheus.Desc
	verifyBatches, verifyFails                               *prometheus.Desc
}

func newEngineCollector(n *Node) *engineCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &engineCollector{
		n:           n,
		height:      d("p2pbft_chain_height", "Last executed (and durable) block."),
		view:        d("p2pbft_consensus_view", "Current view."),
		isPrimary:   d("p2pbft_consensus_is_primary", "1 if this replica is the primary of its current view, else 0."),
		stable:      d("p2pbft_consensus_stable_checkpoint", "Last stable checkpoint (the low watermark)."),
		mode:        d("p2pbft_consensus_mode", "1 for the replica's current mode (normal, view-change, syncing), 0 for the others.", "mode"),
		pending:     d("p2pbft_requests_pending", "Client requests known and not executed."),
		slots:       d("p2pbft_consensus_slots", "Sequence numbers the engine holds state for."),
		viewChanges: d("p2pbft_consensus_view_changes_total", "VIEW-CHANGE messages this replica sent (views it tried to move to)."),
		newViews:    d("p2pbft_consensus_new_views_total", "Views entered through a NEW-VIEW."),
		stableCkpts: d("p2pbft_consensus_stable_checkpoints_total", "Checkpoints that became stable."),
		transfers:   d("p2pbft_statesync_requested_total", "State transfers the engine asked for."),
		installed:   d("p2pbft_statesync_snapshots_installed_total", "Snapshots installed by state transfer."),
		certCommits: d("p2pbft_consensus_certificate_commits_total", "Batches committed on a fetched commit certificate (catching up)."),
		fetches:     d("p2pbft_consensus_fetches_total", "FETCH messages sent to repair missing state."),
		retransmits: d("p2pbft_consensus_retransmits_total", "Retransmissions of own messages."),
		divergences: d("p2pbft_consensus_divergences_total", "Own checkpoints that contradicted a certified one."),
		safetyAlarms: d("p2pbft_consensus_safety_alarms_total",
			"Proofs that more than f replicas are faulty (a NEW-VIEW or certificate contradicting a committed batch). Zero while at most f are."),
		future:        d("p2pbft_consensus_future_messages", "Messages held for views not entered yet."),
		verified:      d("p2pbft_signatures_verified_total", "Signatures checked with cryptography (ingress and engine)."),
		cacheHits:     d("p2pbft_signatures_cache_hits_total", "Signatures found already verified in the verified-signature cache (p2p host, verifier pool and engine share one)."),
		cacheMisses:   d("p2pbft_signatures_cache_misses_total", "Signature lookups that did not find the signature in the verified-signature cache."),
		cacheSize:     d("p2pbft_signatures_cache_entries", "Signatures held in the verified-signature cache."),
		verifyBatches: d("p2pbft_signatures_batches_total", "Batch verifications of two or more signatures."),
		verifyFails:   d("p2pbft_signatures_invalid_total", "Signatures that did not verify."),
	}
}

func (c *engineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.height, c.view, c.isPrimary, c.stable, c.mode, c.pending, c.slots,
		c.viewChanges, c.newViews, c.stableCkpts, c.transfers, c.installed, c.certCommits, c.fetches,
		c.retransmits, c.divergences, c.verified, c.cacheHits, c.cacheMisses, c.cacheSize, c.verifyBatches, c.verifyFails,
		c.safetyAlarms, c.future} {
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
	primary := 0.0
	if ps.soft.Primary == c.n.self {
		primary = 1
	}
	g(c.isPrimary, primary)
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
	ct(c.fetches, s.Fetches)
	ct(c.retransmits, s.Retransmits)
	ct(c.divergences, s.Divergences)
	ct(c.safetyAlarms, s.SafetyAlarms)
	g(c.future, float64(s.Future))
	vs := c.n.vstats
	ct(c.verified, vs.verified.Load())
	if sc := c.n.sigs; sc != nil {
		ct(c.cacheHits, sc.Hits())
		ct(c.cacheMisses, sc.Misses())
		g(c.cacheSize, float64(sc.Len()))
	}
	ct(c.verifyBatches, vs.batches.Load())
	ct(c.verifyFails, vs.failed.Load())
}

// phase observes one measured phase of the trace records.
func (m *metrics) phase(p trace.Phase, d time.Duration) {
	if o := m.phases[p]; o != nil {
		o.Observe(d.Seconds())
	}
}
