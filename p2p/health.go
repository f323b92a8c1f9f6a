package p2p

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
)

// Replica health. A connection that stays up says little about a peer (a hung process or a network that
// drops packets keeps it up for a while), so the host pings every connected replica (libp2p's ping
// protocol, PingInterval apart, on one long-lived stream per replica) and remembers when each last answered
// and its smoothed round-trip time. The node shows both (status, /v1/peers, metrics) and sizes its
// retransmission timeout from the round trips.

// ReplicaHealth is what the host knows of one replica's reachability.
type ReplicaHealth struct {
	Replica   int
	Connected bool
	// LastPong is when the replica last answered a ping (zero: never).
	LastPong time.Time
	// RTT is the smoothed round-trip time of the pings (zero: no answer yet).
	RTT time.Duration
}

// Reachable reports whether the replica answered a ping within the last `within`.
func (h ReplicaHealth) Reachable(now time.Time, within time.Duration) bool {
	return h.Connected && !h.LastPong.IsZero() && now.Sub(h.LastPong) <= within
}

type healthState struct {
	mu       sync.Mutex
	lastPong map[peer.ID]time.Time
	rtt      map[peer.ID]time.Duration
}

// Health returns the reachability of every other replica, in replica order.
func (h *Host) Health() []ReplicaHealth {
	connected := map[int]bool{}
	for _, i := range h.ConnectedReplicas() {
		connected[i] = true
	}
	h.health.mu.Lock()
	defer h.health.mu.Unlock()
	var out []ReplicaHealth
	for i := range h.genesis.N() {
		if i == h.self {
			continue
		}
		id := h.genesis.PeerID(i)
		out = append(out, ReplicaHealth{Replica: i, Connected: connected[i], LastPong: h.health.lastPong[id], RTT: h.health.rtt[id]})
	}
	return out
}

// MaxRTT returns the largest smoothed round-trip time among the replicas that answered within the last
// `within` (zero if none did).
func (h *Host) MaxRTT(within time.Duration) time.Duration {
	now := time.Now()
	var m time.Duration
	for _, r := range h.Health() {
		if r.Reachable(now, within) {
			m = max(m, r.RTT)
		}
	}
	return m
}

// runPingers keeps a pinger per replica while the host runs.
func (h *Host) runPingers() {
	defer h.wg.Done()
	var wg sync.WaitGroup
	for i := range h.genesis.N() {
		if i == h.self {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.pingReplica(h.genesis.PeerID(i))
		}()
	}
	wg.Wait()
}

// pingReplica pings one replica every PingInterval while it is connected, reopening the ping stream after
// a failure.
func (h *Host) pingReplica(id peer.ID) {
	t := time.NewTicker(h.cfg.PingInterval)
	defer t.Stop()
	var results <-chan ping.Result
	var stop context.CancelFunc
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-t.C:
		}
		if results == nil {
			if len(h.lh.Network().ConnsToPeer(id)) == 0 {
				continue // not connected: the discovery loop redials
			}
			ctx, cancel := context.WithCancel(network.WithNoDial(h.ctx, "p2pbft ping"))
			stop = cancel
			results = ping.Ping(ctx, h.lh, id)
		}
		select {
		case res, ok := <-results:
			if !ok || res.Error != nil {
				stop()
				stop, results = nil, nil
				continue
			}
			h.health.mu.Lock()
			h.health.lastPong[id] = time.Now()
			if old, ok := h.health.rtt[id]; ok {
				h.health.rtt[id] = (7*old + res.RTT) / 8
			} else {
				h.health.rtt[id] = res.RTT
			}
			h.health.mu.Unlock()
		case <-time.After(h.cfg.PingInterval):
			// No answer within an interval: the replica counts as silent until it answers again; the
			// pending ping completes or fails on its own.
		case <-h.ctx.Done():
			return
		}
	}
}
