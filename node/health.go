package node

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Timers that follow the network, and what the node knows of its peers' health.
//
// The engine retransmits its own messages and asks peers for what it misses after RetransmitTimeout
// without progress. A fixed 100 ms suits a LAN but is below one round trip across regions: there every
// replica retransmitted about once per request, doubling the consensus traffic. The node therefore sets
// the engine's timeout (pbft.Replica.SetRetransmitTimeout) to the larger of the configured one and
// rttFactor times the largest smoothed round trip to a reachable replica (the p2p host pings every replica,
// p2p/health.go), re-evaluated as it publishes its stats. The request timeout (the view-change timer) is
// left as configured: it must exceed a commit under load, which an operator sizes (README, "Running across
// machines"); it is far above a round trip already.

// rttFactor covers a retransmission's wait for a phase: a message and its answer plus the answerer's own
// durable write.
const rttFactor = 4

// reachableWithin is how recently a replica must have answered a ping to count as reachable.
func (n *Node) reachableWithin() time.Duration { return 3 * n.cfg.P2P.PingInterval }

// adaptTimers sets the engine's retransmission timeout from the measured round trips (on the loop).
func (n *Node) adaptTimers() {
	cs := n.cfg.Consensus
	base := cs.Ticks(cs.RetransmitTimeout)
	want := base
	if rtt := n.host.MaxRTT(n.reachableWithin()); rtt > 0 {
		want = max(base, cs.Ticks(rttFactor*rtt))
	}
	if cur := int(n.retransmitTicks.Load()); want != cur {
		n.rep.SetRetransmitTimeout(want)
		n.retransmitTicks.Store(int64(want))
		if cur != 0 && (want > cur*5/4 || want < cur*4/5) {
			n.log.Info("retransmission timeout follows the round trips", "timeout", time.Duration(want)*cs.Tick,
				"max_rtt", n.host.MaxRTT(n.reachableWithin()))
		}
	}
}

// healthCollector exports, at scrape time, each peer replica's reachability and round trip, and the
// engine's current retransmission timeout.
type healthCollector struct {
	n                               *Node
	reachable, rtt, lastPong, retxT *prometheus.Desc
}

func newHealthCollector(n *Node) *healthCollector {
	return &healthCollector{
		n: n,
		reachable: prometheus.NewDesc("p2pbft_p2p_replica_reachable", "1 if the replica answered a ping within the last few seconds, else 0.",
			[]string{"replica"}, nil),
		rtt: prometheus.NewDesc("p2pbft_p2p_replica_rtt_seconds", "Smoothed round-trip time of the pings to the replica.",
			[]string{"replica"}, nil),
		lastPong: prometheus.NewDesc("p2pbft_p2p_replica_last_pong_age_seconds", "Time since the replica last answered a ping (absent if it never did).",
			[]string{"replica"}, nil),
		retxT: prometheus.NewDesc("p2pbft_consensus_retransmit_timeout_seconds", "The engine's retransmission timeout: the configured one, or more when round trips call for it.",
			nil, nil),
	}
}

func (c *healthCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.reachable
	ch <- c.rtt
	ch <- c.lastPong
	ch <- c.retxT
}

func (c *healthCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	if n.host == nil {
		return
	}
	now := time.Now()
	for _, h := range n.host.Health() {
		r := strconv.Itoa(h.Replica)
		v := 0.0
		if h.Reachable(now, n.reachableWithin()) {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.reachable, prometheus.GaugeValue, v, r)
		if h.RTT > 0 {
			ch <- prometheus.MustNewConstMetric(c.rtt, prometheus.GaugeValue, h.RTT.Seconds(), r)
		}
		if !h.LastPong.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.lastPong, prometheus.GaugeValue, now.Sub(h.LastPong).Seconds(), r)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.retxT, prometheus.GaugeValue,
		(time.Duration(n.retransmitTicks.Load()) * n.cfg.Consensus.Tick).Seconds())
}
