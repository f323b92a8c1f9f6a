package node

import (
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/p2pbft/p2pbft/node/store"
)

// Status is a replica's state for observers (the HTTP API's /status, `p2pbft status`). It is a copy; the
// JSON names are part of the API.
type Status struct {
	ChainID string `json:"chain_id"`
	Moniker string `json:"moniker"`
	// Replica is this node's index in the genesis; N and F the replica set's size and fault tolerance.
	Replica int    `json:"replica"`
	N       int    `json:"n"`
	F       int    `json:"f"`
	PeerID  string `json:"peer_id"`
	// View is the view the replica is in (or moving to), Primary the primary of that view.
	View    uint64 `json:"view"`
	Primary int    `json:"primary"`
	// Mode is "normal", "view-change" (waiting for a NEW-VIEW) or "syncing" (fetching state from peers).
	Mode string `json:"mode"`
	// Height is the last executed block (durable); AppDigest the application's state digest after it.
	Height    uint64 `json:"height"`
	AppDigest string `json:"app_digest"`
	// StableCheckpoint is the last stable checkpoint (the low watermark); the replica accepts sequence
	// numbers in (StableCheckpoint, HighWatermark].
	StableCheckpoint uint64 `json:"stable_checkpoint"`
	HighWatermark    uint64 `json:"high_watermark"`
	// Head is the chain's head in the store (normally Height).
	Head uint64 `json:"head"`
	// Pending is the number of client requests the replica knows that have not executed.
	Pending int `json:"pending"`
	// Peers are the replicas this node is connected to, with whether each answered recently.
	Peers []Peer `json:"peers"`
	// Reachable are the replicas that answered a ping within the last few seconds (connected is not
	// enough: a hung replica or a network that drops packets keeps a connection up for a while).
	Reachable []int `json:"reachable"`
	// RetransmitTimeout is the engine's current retransmission timeout: the configured one, or more when
	// the round trips to the replicas call for it.
	RetransmitTimeout time.Duration `json:"retransmit_timeout_ns"`
	// ListenAddrs are the node's dialable addresses, each ending in /p2p/<peer-id>.
	ListenAddrs []string `json:"listen_addrs"`
	// Sync describes a state transfer in progress (nil if none).
	Sync *SyncStatus `json:"sync,omitempty"`
	// Byzantine is the Byzantine experiment mode this replica runs (empty on a correct replica).
	Byzantine string `json:"byzantine,omitempty"`
	// Partitioned lists the replicas this node is cut off from by an experiment partition (Partition).
	Partitioned []int `json:"partitioned,omitempty"`
}

// Peer is a connected replica.
type Peer struct {
	Replica int    `json:"replica"`
	PeerID  string `json:"peer_id"`
	// Reachable: it answered a ping within the last few seconds; LastPongMs is how long ago it last did
	// (-1: never) and RTTMs the smoothed round-trip time of the pings.
	Reachable  bool    `json:"reachable"`
	LastPongMs int64   `json:"last_pong_ms"`
	RTTMs      float64 `json:"rtt_ms"`
}

// SyncStatus describes a state transfer in progress.
type SyncStatus struct {
	// Target is the checkpoint the replica syncs to; Method "snapshot" or "blocks".
	Target  uint64    `json:"target"`
	Method  string    `json:"method"`
	Started time.Time `json:"started"`
	// Bytes and Blocks fetched so far; Peer the replica it fetches from.
	Bytes  uint64 `json:"bytes"`
	Blocks uint64 `json:"blocks"`
	Peer   int    `json:"peer"`
}

// Status returns the replica's state as of the last event the loop handled.
func (n *Node) Status() Status {
	ps := n.state.Load()
	s := Status{
		ChainID:          n.chainID,
		Moniker:          n.cfg.Moniker,
		Replica:          n.self,
		N:                n.n,
		F:                n.f,
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
		Peers:            []Peer{},
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
			p := Peer{Replica: h.Replica, PeerID: n.genesis.PeerID(h.Replica).String(), Reachable: reachable, LastPongMs: -1,
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
	return n.store.Block(height)
}

// Head returns the height of the chain's last block.
func (n *Node) Head() uint64 { return n.store.Head().Height }
