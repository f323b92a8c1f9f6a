package node

import (
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/p2pbft/p2pbft/node/api/apitypes"
	"github.com/p2pbft/p2pbft/node/store"
)

// Status returns the replica's state as of the last event the loop handled.
func (n *Node) Status() apitypes.Status {
	ps := n.state.Load()
	s := apitypes.Status{
		ChainID:          n.chainID,
		Moniker:          n.cfg.Moniker,
		Replica:          n.self,
		N:                n.n,
		F:                n.quorum.F,
		PeerID:           n.key.PeerID().String(),
		View:             ps.soft.View,
		Primary:          ps.soft.Primary,
		Mode:             ps.soft.Status.String(),
		Height:           ps.height,
		AppDigest:        hex.EncodeToString(ps.appDigest[:]),
		StableCheckpoint: ps.soft.Stable,
		HighWatermark:    ps.soft.High,
		Head:             n.store.Head().Height,
		Pending:          ps.stats.Pending,
		Peers:            []apitypes.Peer{},
		Sync:             ps.sync,
	}
	s.Reachable = []int{}
	s.RetransmitTimeout = time.Duration(n.retransmitTicks.Load()) * n.cfg.Consensus.Tick
	if n.host != nil {
		now := time.Now()
		for _, h := range n.host.Health() {
			reachable := h.Reachable(now, n.reachableWithin())
			if reachable {
				s.Reachable = append(s.Reachable, h.Replica)
			}
			if !h.Connected {
				continue
			}
			p := apitypes.Peer{Replica: h.Replica, PeerID: n.genesis.PeerID(h.Replica).String(), Reachable: reachable, LastPongMs: -1,
				RTTMs: float64(h.RTT.Microseconds()) / 1000}
			if !h.LastPong.IsZero() {
				p.LastPongMs = now.Sub(h.LastPong).Milliseconds()
			}
			s.Peers = append(s.Peers, p)
		}
		for _, a := range n.host.Addrs() {
			s.ListenAddrs = append(s.ListenAddrs, a.String())
		}
		s.Partitioned = n.Partitioned()
	}
	if n.byz != nil {
		s.Byzantine = string(n.byz.x.Mode)
	}
	return s
}

// ErrNoQuerier is returned by Query when the application does not answer local queries (app.Querier).
var ErrNoQuerier = errors.New("node: the application does not answer local queries")

// Query answers a read-only query from this replica's committed state, without consensus (for the kv
// application, an encoded get). The answer is as of the returned height; it may be stale, and a faulty
// replica may lie: reads that must be linearizable go through Submit.
func (n *Node) Query(q []byte) ([]byte, uint64, error) {
	if n.querier == nil {
		return nil, 0, ErrNoQuerier
	}
	n.readMu.RLock()
	defer n.readMu.RUnlock()
	if n.closed {
		return nil, 0, ErrStopped
	}
	return n.querier.Query(q)
}

// Block returns the block at height with its commit certificate. A replica that copied a snapshot past a
// height does not hold the blocks below it (the error wraps store.ErrNotFound).
func (n *Node) Block(height uint64) (*store.Block, error) {
	if height == 0 {
		return nil, fmt.Errorf("node: block 0: %w (blocks start at 1)", store.ErrNotFound)
	}
	n.readMu.RLock()
	defer n.readMu.RUnlock()
	if n.closed {
		return nil, ErrStopped
	}
	// A damaged table is found by the read that touches it (pebble opens tables lazily), possibly long
	// after the start: the caller (the HTTP API) shows the operator the fix as a failed start would.
	b, err := n.store.Block(height)
	return b, withStoreAdvice(err, n.cfg.Home)
}

// Head returns the height of the chain's last block.
func (n *Node) Head() uint64 { return n.store.Head().Height }
