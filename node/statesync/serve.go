package statesync

import (
	"errors"
	"fmt"
	"iter"

	"github.com/p2pbft/p2pbft/node/app"
	"github.com/p2pbft/p2pbft/node/store"
	"github.com/p2pbft/p2pbft/pbft"
)

// Source is what a replica serves state transfers from: the engine's part of its snapshots at stable
// checkpoints (the client table), its blocks, and its application's kept snapshots. The node implements it
// over its store and application; every method may be called from several goroutines at once, beside the
// replica's loop.
type Source interface {
	// CoreSnapshot returns the engine's snapshot at checkpoint seq, or an error saying which ones it keeps.
	CoreSnapshot(seq uint64) (*pbft.Snapshot, error)
	// Block returns the block at height h; Blocks the blocks from..to it holds, in order (it may lack some
	// below a state-transfer jump of its own).
	Block(h uint64) (*store.Block, error)
	Blocks(from, to uint64) iter.Seq2[*store.Block, error]
	// OpenSnapshot opens the application's snapshot at height (app.SnapshotSource).
	OpenSnapshot(height uint64) (app.Snapshot, error)
}

// Serve answers a peer's state request from src, with at most limit bytes of data (a manifest's block
// and at least one block of a page are sent whatever their size). The caller signs the response
// (NewResponse).
func Serve(src Source, r *Request, limit int) (*Response, error) {
	resp := &Response{Type: r.Type, Seq: r.Seq}
	switch r.Type {
	case TypeManifest:
		core, err := src.CoreSnapshot(r.Seq)
		if err != nil {
			return nil, err
		}
		blk, err := src.Block(r.Seq)
		if err != nil {
			return nil, fmt.Errorf("statesync: snapshot %d: %w", r.Seq, err)
		}
		data, err := blk.Marshal()
		if err != nil {
			return nil, err
		}
		resp.AppDigest, resp.TableDigest = core.AppDigest, pbft.ClientTableDigest(core.ClientTable)
		resp.TableSize, resp.Block = uint64(len(core.ClientTable)), data
	case TypeTable:
		core, err := src.CoreSnapshot(r.Seq)
		if err != nil {
			return nil, err
		}
		t := core.ClientTable
		if r.Offset > uint64(len(t)) {
			return nil, fmt.Errorf("statesync: client table offset %d beyond its %d bytes", r.Offset, len(t))
		}
		end := min(uint64(len(t)), r.Offset+uint64(limit))
		resp.Data, resp.More = t[r.Offset:end], end < uint64(len(t))
	case TypeChunk:
		snap, err := src.OpenSnapshot(r.Seq)
		if err != nil {
			return nil, fmt.Errorf("statesync: snapshot %d: %w", r.Seq, err)
		}
		data, more, err := snap.ReadChunk(r.Cursor, limit)
		snap.Close()
		if err != nil {
			return nil, fmt.Errorf("statesync: snapshot %d: %w", r.Seq, err)
		}
		resp.Data, resp.More = data, more
	case TypeBlocks:
		to := min(r.To, r.Seq+MaxBlocks-1)
		size := 0
		next := r.Seq
		for blk, err := range src.Blocks(r.Seq, to) {
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
			return nil, fmt.Errorf("statesync: no block %d here", r.Seq)
		}
	default:
		return nil, errors.New("statesync: unknown state request")
	}
	return resp, nil
}
