package node

import (
	"errors"
	"fmt"
	"slices"

	"github.com/p2pbft/p2pbft/node/statesync"
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

func (n *Node) serveState(r *statesync.Request) (*wire.Envelope, error) {
	resp := &statesync.Response{Type: r.Type, Seq: r.Seq}
	limit := n.serveLimit(r.MaxBytes)
	switch r.Type {
	case statesync.TypeManifest:
		core, err := n.coreSnapshot(r.Seq)
		if err != nil {
			return nil, err
		}
		blk, err := n.store.Block(r.Seq)
		if err != nil {
			return nil, fmt.Errorf("node: snapshot %d: %w", r.Seq, err)
		}
		data, err := blk.Marshal()
		if err != nil {
			return nil, err
		}
		resp.AppDigest, resp.TableDigest = core.AppDigest, pbft.ClientTableDigest(core.ClientTable)
		resp.TableSize, resp.Block = uint64(len(core.ClientTable)), data
	case statesync.TypeTable:
		core, err := n.coreSnapshot(r.Seq)
		if err != nil {
			return nil, err
		}
		t := core.ClientTable
		if r.Offset > uint64(len(t)) {
			return nil, fmt.Errorf("node: client table offset %d beyond its %d bytes", r.Offset, len(t))
		}
		end := min(uint64(len(t)), r.Offset+uint64(limit))
		resp.Data, resp.More = t[r.Offset:end], end < uint64(len(t))
	case statesync.TypeChunk:
		snap, err := n.app.OpenSnapshot(r.Seq)
		if err != nil {
			return nil, fmt.Errorf("node: snapshot %d: %w", r.Seq, err)
		}
		data, more, err := snap.ReadChunk(r.Cursor, limit)
		snap.Close()
		if err != nil {
			return nil, fmt.Errorf("node: snapshot %d: %w", r.Seq, err)
		}
		resp.Data, resp.More = data, more
	case statesync.TypeBlocks:
		to := min(r.To, r.Seq+statesync.MaxBlocks-1)
		size := 0
		next := r.Seq
		for blk, err := range n.store.Blocks(r.Seq, to) {
			if err != nil {
				return nil, err
			}
			if blk.Height != next {
				break // below a state-transfer jump this replica lacks blocks
			}
			data, err := blk.Marshal()
			if err != nil {
				return nil, err
			}
			if len(resp.Blocks) > 0 && size+len(data) > limit {
				break
			}
			resp.Blocks = append(resp.Blocks, data)
			size += len(data)
			next++
		}
		if len(resp.Blocks) == 0 {
			return nil, fmt.Errorf("node: no block %d here", r.Seq)
		}
	default:
		return nil, errors.New("node: unknown state request")
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
