package client

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the client's counters, kept as atomics (Stats) and, with a Registerer, exported to
// Prometheus.
type metrics struct {
	accepted, abandoned, sent, broadcasts, retransmissions, failedAttempts, badReplies atomic.Uint64

	reg     prometheus.Registerer
	latency prometheus.Histogram
	coll    prometheus.Collector
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{reg: reg}
	m.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "p2pbft", Subsystem: "client", Name: "request_latency_seconds",
		Help:    "Time from signing a request to accepting f+1 matching replies.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	})
	if reg == nil {
		return m, nil
	}
	m.coll = &statsCollector{m: m}
	for _, c := range []prometheus.Collector{m.latency, m.coll} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("client: metrics already registered (one client per registry): %w", err)
			}
			return nil, fmt.Errorf("client: register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) unregister() {
	if m.reg != nil {
		m.reg.Unregister(m.latency)
		m.reg.Unregister(m.coll)
	}
}

func (m *metrics) accept(d time.Duration) {
	m.accepted.Add(1)
	m.latency.Observe(d.Seconds())
}

func (m *metrics) snapshot() Stats {
	return Stats{
		Accepted: m.accepted.Load(), Abandoned: m.abandoned.Load(), Sent: m.sent.Load(),
		Broadcasts: m.broadcasts.Load(), Retransmissions: m.retransmissions.Load(),
		FailedAttempts: m.failedAttempts.Load(), BadReplies: m.badReplies.Load(),
	}
}

// statsCollector exports the atomic counters as Prometheus counters.
type statsCollector struct{ m *metrics }

var statDescs = []struct {
	desc *prometheus.Desc
	get  func(Stats) uint64
}{
	{prometheus.NewDesc("p2pbft_client_requests_accepted_total", "Requests answered by f+1 matching replies.", nil, nil), func(s Stats) uint64 { return s.Accepted }},
	{prometheus.NewDesc("p2pbft_client_requests_abandoned_total", "Requests whose context ended before a quorum (outcome unknown).", nil, nil), func(s Stats) uint64 { return s.Abandoned }},
	{prometheus.NewDesc("p2pbft_client_transmissions_total", "Request transmissions to single replicas.", nil, nil), func(s Stats) uint64 { return s.Sent }},
	{prometheus.NewDesc("p2pbft_client_broadcasts_total", "Requests that had to be sent to every replica.", nil, nil), func(s Stats) uint64 { return s.Broadcasts }},
	{prometheus.NewDesc("p2pbft_client_retransmissions_total", "Transmission rounds after the first.", nil, nil), func(s Stats) uint64 { return s.Retransmissions }},
	{prometheus.NewDesc("p2pbft_client_failed_attempts_total", "Transmissions that ended without a reply.", nil, nil), func(s Stats) uint64 { return s.FailedAttempts }},
	{prometheus.NewDesc("p2pbft_client_bad_replies_total", "Replies rejected: bad signature or proof, or not for the awaited request.", nil, nil), func(s Stats) uint64 { return s.BadReplies }},
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range statDescs {
		ch <- d.desc
	}
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.m.snapshot()
	for _, d := range statDescs {
		ch <- prometheus.MustNewConstMetric(d.desc, prometheus.CounterValue, float64(d.get(s)))
	}
}

// Stats are the client's counters since it started.
type Stats struct {
	// Accepted counts requests answered by f+1 matching replies.
	Accepted uint64
	// Abandoned counts requests whose context ended first (outcome unknown).
	Abandoned uint64
	// Sent counts request transmissions to single replicas.
	Sent uint64
	// Broadcasts counts requests that had to be sent to every replica.
	Broadcasts uint64
	// Retransmissions counts rounds after the first broadcast.
	Retransmissions uint64
	// FailedAttempts counts transmissions that could not be queued (link down or queue full).
	FailedAttempts uint64
	// BadReplies counts replies and bundles rejected (bad signature or proof, malformed).
	BadReplies uint64
}
