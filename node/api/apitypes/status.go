package apitypes

import "time"

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
