package node

import (
	"fmt"
	"iter"
	"slices"

	"github.com/p2pbft/p2pbft/node/app"
	"github.com/p2pbft/p2pbft/node/statesync"
	"github.com/p2pbft/p2pbft/node/store"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// Serving state transfers. Peers that fell behind ask this replica (over the p2p request protocol, from
// the host's handler goroutines, concurrently with the loop) for its snapshot at a stable checkpoint or for
// blocks. The snapshot is the engine's part (the client table, from the hard state it persisted) plus the
// application's kept snapshot at the same height (app.SnapshotSource, readable while execution goes on).

// serveLimit bounds the data of one response, well inside the p2p message limit.
func (n *Node) serveLimit(asked uint32) int {
	limit := min(n.cfg.P2P.MaxMessageSize/2, statesync.MaxPart)
	if asked > 0 && int(asked) < limit {
		limit = int(asked)
	}
	return max(limit, 1024)
}

// coreSnapshot returns the engine's snapshot at seq if this replica keeps it.
func (n *Node) coreSnapshot(seq uint64) (*pbft.Snapshot, error) {
	n.snapMu.Lock()
	defer n.snapMu.Unlock()
	if s := n.snaps[seq]; s != nil {
		return s, nil
	}
	have := make([]uint64, 0, len(n.snaps))
	for h := range n.snaps {
		have = append(have, h)
	}
	slices.Sort(have)
	return nil, fmt.Errorf("node: no snapshot at checkpoint %d (this replica keeps %v)", seq, have)
}

// serveSource is the node as a statesync.Source.
type serveSource struct{ n *Node }

func (s serveSource) CoreSnapshot(seq uint64) (*pbft.Snapshot, error) { return s.n.coreSnapshot(seq) }
func (s serveSource) Block(h uint64) (*store.Block, error)            { return s.n.store.Block(h) }
func (s serveSource) Blocks(from, to uint64) iter.Seq2[*store.Block, error] {
	return s.n.store.Blocks(from, to)
}
func (s serveSource) OpenSnapshot(h uint64) (app.Snapshot, error) { return s.n.app.OpenSnapshot(h) }

// serveState answers a peer's state request (statesync.Serve); the test hooks and a Byzantine experiment
// may alter the answer before it is signed.
func (n *Node) serveState(r *statesync.Request) (*wire.Envelope, error) {
	resp, err := statesync.Serve(serveSource{n}, r, n.serveLimit(r.MaxBytes))
	if err != nil {
		return nil, err
	}
	if n.hooks != nil && n.hooks.serve != nil {
		if err := n.hooks.serve(resp); err != nil {
			return nil, err
		}
	}
	if n.byz != nil {
		if err := n.byz.serve(resp); err != nil {
			return nil, err
		}
	}
	return statesync.NewResponse(n.key, n.chainID, resp)
}
