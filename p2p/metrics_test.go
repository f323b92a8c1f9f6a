package p2p

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/p2pbft/p2pbft/wire"
)

// The message counters are bounded by the genesis, not by the clients: clients that come and go (real
// hosts sending real requests, then thousands of peer IDs counted directly) add no series, no label
// value names a client's peer ID, and replicas are named by their index.
func TestMetricsLabelsBounded(t *testing.T) {
	keys := testKeys(t, "bounded", 2)
	g := testGenesis(t, "bounded-chain", keys)
	reg := prometheus.NewRegistry()
	var logs syncBuffer
	hosts := startChain(t, keys, g, func(i int, c *Config) {
		if i == 0 {
			c.Registerer = reg
			c.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	})
	h := hosts[0]
	in := collect(t, h)
	// Connected as both ends see it: a direct send opens its stream on an existing connection only (no
	// dial), and the end that finishes the handshake last may not have it yet when the other already does
	// (under load, long enough for the send to be dropped, which this test then waited for in vain).
	waitFor(t, 30*time.Second, "replicas connected", func() bool {
		return len(h.ConnectedReplicas()) == 1 && slices.Contains(hosts[1].ConnectedReplicas(), 0)
	})
	if err := hosts[1].SendToReplica(0, seal(t, keys[1], g.ChainID(), wire.KindCommit, "from-replica")); err != nil {
		t.Fatal(err)
	}

	// Real clients: each its own host and key, one request each on a direct stream. (The deadlines are
	// for a machine so loaded that a loopback dial can take seconds.)
	const clients = 6
	clientIDs := map[string]bool{}
	for i := range clients {
		ck := testKeys(t, fmt.Sprint("bounded-client-", i), 1)[0]
		ccfg := baseConfig(t, ck, g)
		ccfg.Bootstrap = []string{h.Addrs()[0].String()}
		c := startHost(t, ccfg)
		clientIDs[c.ID().String()] = true
		// Connected to replica 0 (it may meet replica 1 too, through peer exchange, at once or later).
		waitFor(t, 30*time.Second, "client connected", func() bool { return slices.Contains(c.ConnectedReplicas(), 0) })
		s, err := c.LibP2P().NewStream(context.Background(), h.ID(), h.msgProto)
		if err != nil {
			t.Fatal(err)
		}
		if err := writeFrame(s, marshal(t, seal(t, ck, g.ChainID(), wire.KindRequest, fmt.Sprint("req", i)))); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 30*time.Second, "request delivered", func() bool { return in.count(payloadIs(fmt.Sprint("req", i))) == 1 })
		s.Close()
		c.Close()
	}
	waitFor(t, 30*time.Second, "replica message delivered", func() bool { return in.count(payloadIs("from-replica")) == 1 })
	before := messageSeries(t, reg)

	// Many more clients, counted directly (seeded, so a failure repeats).
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	for i := range 5000 {
		var b [32]byte
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		p := peer.ID(b[:])
		h.metrics.count(string(h.msgProto), p, Accepted, ReasonNone)
		if i%100 == 0 { // a few rejections too (each is logged at debug)
			h.metrics.count(string(h.msgProto), p, Rejected, ReasonSignature)
		}
	}
	after := messageSeries(t, reg)
	// At most one more series per (source, result, reason) of the direct counts above.
	if len(after) > len(before)+1 {
		t.Errorf("%d series after 5,000 more clients, %d before: %v", len(after), len(before), after)
	}
	sawClient, sawReplica := false, false
	for _, m := range after {
		l := map[string]string{}
		for _, lp := range m.GetLabel() {
			l[lp.GetName()] = lp.GetValue()
			if clientIDs[lp.GetValue()] {
				t.Errorf("a label names client %s: %v", lp.GetValue(), m)
			}
		}
		switch l["peer_kind"] {
		case "client":
			sawClient = true
			if l["replica"] != "" {
				t.Errorf("client series with a replica index: %v", l)
			}
		case "replica":
			sawReplica = true
			if i, err := strconv.Atoi(l["replica"]); err != nil || i < 0 || i >= g.N() {
				t.Errorf("replica series with index %q", l["replica"])
			}
		default:
			t.Errorf("peer_kind %q", l["peer_kind"])
		}
		for _, name := range []string{"source", "result"} {
			if l[name] == "" {
				t.Errorf("series without %s: %v", name, l)
			}
		}
	}
	if !sawClient || !sawReplica {
		t.Errorf("series %v: want both clients and a replica", after)
	}
	var clientAccepted float64
	for _, m := range after {
		if labelsOf(m)["peer_kind"] == "client" && labelsOf(m)["result"] == "accepted" {
			clientAccepted += m.GetCounter().GetValue()
		}
	}
	if clientAccepted != clients+5000 {
		t.Errorf("client messages accepted: %v, want %d", clientAccepted, clients+5000)
	}

	// Each rejection is a debug line naming the peer; the first also an info summary.
	debug, info := 0, 0
	for _, line := range strings.Split(logs.String(), "\n") {
		switch {
		case strings.Contains(line, `"msg":"rejected message"`) && strings.Contains(line, `"reason":"signature"`) && strings.Contains(line, `"peer":`):
			debug++
		case strings.Contains(line, `"level":"INFO"`) && strings.Contains(line, `"msg":"rejected messages`):
			info++
		}
	}
	if debug != 50 || info != 1 {
		t.Errorf("%d debug lines for 50 rejections, %d info summaries (want 1)", debug, info)
	}

	// Drops and refused connections exist at zero before any happens.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, mf := range mfs {
		counts[mf.GetName()] = len(mf.GetMetric())
	}
	if counts["p2pbft_p2p_drops_total"] < len(dropReasons) || counts["p2pbft_p2p_refused_connections_total"] < 2*len(refusalLimits) {
		t.Errorf("zero counters missing: %v", counts)
	}
	if counts["p2pbft_p2p_replica_connected"] != g.N()-1 {
		t.Errorf("p2pbft_p2p_replica_connected: %d series, want %d", counts["p2pbft_p2p_replica_connected"], g.N()-1)
	}
}

func messageSeries(t *testing.T, reg *prometheus.Registry) []*dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "p2pbft_p2p_messages_total" {
			return mf.GetMetric()
		}
	}
	t.Fatal("p2pbft_p2p_messages_total not exported")
	return nil
}

func labelsOf(m *dto.Metric) map[string]string {
	l := map[string]string{}
	for _, lp := range m.GetLabel() {
		l[lp.GetName()] = lp.GetValue()
	}
	return l
}
