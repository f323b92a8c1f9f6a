package node

import (
	"fmt"
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Partitions for experiments (issue 5: partition and heal on loopback, without a firewall). Partition cuts
// this replica off from the given replicas in both directions through its p2p host's connection gater
// (p2p.Host.BlockPeers): connections to them close, and neither side can connect again until Heal. One
// node partitioning is enough to separate the pair; isolating a replica from all others takes one call on
// it. Clients and other non-replica peers are not affected. The node's admin HTTP endpoint drives these.

// Partition cuts this replica off from the given replicas (indexes in the genesis), in addition to those
// already cut off. Its own index is ignored.
func (n *Node) Partition(replicas []int) error {
	var ids []peer.ID
	for _, i := range replicas {
		if i < 0 || i >= n.n {
			return fmt.Errorf("node: partition: no replica %d (n = %d)", i, n.n)
		}
		if i != n.self {
			ids = append(ids, n.genesis.PeerID(i))
		}
	}
	if len(ids) == 0 {
		return nil
	}
	n.host.BlockPeers(ids...)
	n.log.Warn("EXPERIMENT: partitioned from replicas", "view", n.state.Load().soft.View, "replicas", n.Partitioned())
	return nil
}

// Heal lifts every partition Partition made and reconnects to those replicas at once.
func (n *Node) Heal() {
	was := n.Partitioned()
	n.host.UnblockPeers()
	if len(was) > 0 {
		n.log.Warn("EXPERIMENT: partition healed", "replicas", was)
	}
}

// Partitioned returns the replicas this node is cut off from, in increasing order.
func (n *Node) Partitioned() []int {
	var out []int
	for _, p := range n.host.BlockedPeers() {
		if i, ok := n.genesis.IndexOfPeer(p); ok {
			out = append(out, i)
		}
	}
	slices.Sort(out)
	return out
}
