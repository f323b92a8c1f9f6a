package p2p

import (
	"slices"
	"sync"

	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

// Partitions for experiments. A host can cut itself off from chosen peers at run time, in both
// directions, without a firewall: its connection gater (libp2p's connmgr.ConnectionGater, consulted by the
// swarm on every dial and every inbound connection) refuses dials to them and inbound connections from
// them, and BlockPeers closes the connections already open. Inbound connections are refused once the
// security handshake has told who the remote is (InterceptSecured); an unauthenticated peer cannot claim
// another's identity. The blocked peer's own dials thus fail from its side too, so one host blocking is
// enough to partition the pair. UnblockPeers lifts the block and redials at once (discovery's backoff for
// those peers is reset).
//
// This is for fault-injection experiments on one machine (the node exposes it as Partition and Heal);
// nothing blocks unless asked to.

// gater is the host's connection gater: a run-time set of blocked peers.
type gater struct {
	mu      sync.RWMutex
	blocked map[peer.ID]bool
}

func newGater() *gater { return &gater{blocked: make(map[peer.ID]bool)} }

func (g *gater) isBlocked(p peer.ID) bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.blocked[p]
}

// InterceptPeerDial refuses dials to blocked peers.
func (g *gater) InterceptPeerDial(p peer.ID) bool { return !g.isBlocked(p) }

// InterceptAddrDial refuses dials to blocked peers.
func (g *gater) InterceptAddrDial(p peer.ID, _ multiaddr.Multiaddr) bool { return !g.isBlocked(p) }

// InterceptAccept lets every inbound connection reach the handshake (the remote is not known yet).
func (g *gater) InterceptAccept(network.ConnMultiaddrs) bool { return true }

// InterceptSecured refuses connections, in either direction, with blocked peers once their identity is
// authenticated.
func (g *gater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return !g.isBlocked(p)
}

// InterceptUpgraded accepts: the decision was made in InterceptSecured.
func (g *gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }

// BlockPeers cuts this host off from the given peers, in both directions, until UnblockPeers: it refuses
// dials to them and connections from them, and closes the connections open now. Blocking an already
// blocked peer changes nothing.
func (h *Host) BlockPeers(peers ...peer.ID) {
	h.gater.mu.Lock()
	for _, p := range peers {
		if p != h.id {
			h.gater.blocked[p] = true
		}
	}
	h.gater.mu.Unlock()
	for _, p := range peers {
		if p == h.id {
			continue
		}
		if err := h.lh.Network().ClosePeer(p); err != nil {
			h.log.Debug("close blocked peer", "peer", p, "err", err)
		}
	}
	h.log.Warn("p2p: blocking peers (experiment partition)", "peers", peers)
}

// UnblockPeers lifts the block on the given peers (all blocked peers if none are given) and redials the
// replicas among them at once.
func (h *Host) UnblockPeers(peers ...peer.ID) {
	h.gater.mu.Lock()
	if len(peers) == 0 {
		for p := range h.gater.blocked {
			peers = append(peers, p)
		}
	}
	for _, p := range peers {
		delete(h.gater.blocked, p)
	}
	h.gater.mu.Unlock()
	h.disc.redialNow(peers)
	h.log.Warn("p2p: unblocked peers (experiment partition healed)", "peers", peers)
}

// BlockedPeers returns the peers blocked now, sorted.
func (h *Host) BlockedPeers() []peer.ID {
	h.gater.mu.RLock()
	defer h.gater.mu.RUnlock()
	out := make([]peer.ID, 0, len(h.gater.blocked))
	for p := range h.gater.blocked {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}
