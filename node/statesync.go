package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/p2pbft/p2pbft/node/api/apitypes"
	"github.com/p2pbft/p2pbft/node/app"
	"github.com/p2pbft/p2pbft/node/statesync"
	"github.com/p2pbft/p2pbft/node/store"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// State transfer: package statesync fetches and checks the state (statesync.Syncer); this file wires it to
// the node. The loop calls the Syncer (Start from the Ready driver, through startSync; Tick on every tick, Settled when the engine
// stops syncing, Stop when the loop ends, Progress for Status); syncAdapter gives the Syncer the node's
// network, certificate check, engine and application; and what changes the replica's state (applying
// blocks, installing a snapshot) comes back to the loop as a syncEvent, handled by onSyncEvent.
//
// While a snapshot restore is in progress the application cannot execute, so batches the engine delivers
// meanwhile are held back and executed after an aborted restore, or dropped after an installed one (the
// engine forgets them then).

// newSyncer returns the node's Syncer (which reaches the p2p host and the metrics only once a transfer runs).
func (n *Node) newSyncer() *statesync.Syncer {
	a := &syncAdapter{n: n}
	c := n.cfg.StateSync
	return statesync.New(statesync.Options{Quorums: n.quorum, BlockSyncMax: c.BlockSyncMax,
		RequestTimeout: c.RequestTimeout, ChunkBytes: c.ChunkBytes,
		Fetcher: a, CertCheck: n.CertCheck, Installer: a, Replica: a, Metrics: a, Log: n.log})
}

// startSync starts the state transfer the engine asks for (readyDriver.handle, on the loop).
func (n *Node) startSync(t pbft.StateTransfer) { n.sync.Start(n.runCtx, t) }

// syncStatus is the running transfer, for Status.
func (n *Node) syncStatus() *apitypes.SyncStatus {
	p := n.sync.Progress()
	if p == nil {
		return nil
	}
	return &apitypes.SyncStatus{Target: p.Target, Method: p.Method, Started: p.Started, Bytes: p.Bytes,
		Blocks: p.Blocks, Peer: p.Peer}
}

// syncAdapter is the node as the Syncer sees it (statesync.Fetcher, Installer, Replica and Metrics).
type syncAdapter struct{ n *Node }

func (a *syncAdapter) Replicas() []int { return a.n.host.ConnectedReplicas() }

func (a *syncAdapter) Fetch(ctx context.Context, p int, req *statesync.Request) (*wire.Envelope, error) {
	n := a.n
	env, err := statesync.NewRequest(n.key, n.chainID, req)
	if err != nil {
		return nil, err
	}
	return n.host.Request(ctx, n.genesis.PeerID(p), env)
}

// View and Needs are called from the loop.
func (a *syncAdapter) View() uint64 { return a.n.soft.View }

func (a *syncAdapter) Needs(seq uint64) bool {
	return a.n.rep.Status().LastExecuted < seq && a.n.soft.Status == pbft.StatusSyncing
}

func (a *syncAdapter) Transfer(method, result string) {
	a.n.metrics.syncs.WithLabelValues(method, result).Inc()
}
func (a *syncAdapter) Bytes(k int)  { a.n.metrics.syncBytes.Add(float64(k)) }
func (a *syncAdapter) Blocks(k int) { a.n.metrics.syncBlocks.Add(float64(k)) }

func (a *syncAdapter) ApplyBlocks(ctx context.Context, blocks []*statesync.Block) error {
	res := make(chan error, 1)
	return a.toLoop(ctx, &blocksEvent{blocks: blocks, res: res}, res)
}

func (a *syncAdapter) Install(ctx context.Context, s *statesync.Snapshot) error {
	res := make(chan error, 1)
	return a.toLoop(ctx, &snapshotEvent{Snapshot: s, res: res}, res)
}

// Restore starts the application's restore; from here until it is finished or aborted the node does not
// execute (n.restoring).
func (a *syncAdapter) Restore(seq uint64, appDigest wire.Digest) (app.SnapshotRestore, error) {
	n := a.n
	n.appMu.Lock()
	defer n.appMu.Unlock()
	r, err := n.app.Restore(seq, appDigest)
	if err != nil {
		return nil, err
	}
	n.restoring.Store(true)
	return &lockedRestore{n: n, r: r}, nil
}

// lockedRestore serializes a restore's calls with the application's execution (appMu) and clears
// n.restoring when the restore ends.
type lockedRestore struct {
	n *Node
	r app.SnapshotRestore
}

func (l *lockedRestore) Cursor() []byte {
	l.n.appMu.Lock()
	defer l.n.appMu.Unlock()
	return l.r.Cursor()
}

func (l *lockedRestore) Apply(chunk []byte) error {
	l.n.appMu.Lock()
	defer l.n.appMu.Unlock()
	return l.r.Apply(chunk)
}

func (l *lockedRestore) Finish(w app.Writer) error {
	l.n.appMu.Lock()
	defer l.n.appMu.Unlock()
	err := l.r.Finish(w)
	if err == nil {
		l.n.restoring.Store(false)
	}
	return err
}

func (l *lockedRestore) Abort() error {
	l.n.appMu.Lock()
	defer l.n.appMu.Unlock()
	err := l.r.Abort()
	l.n.restoring.Store(false)
	return err
}

// syncEvent is what the syncer hands to the loop: *blocksEvent or *snapshotEvent.
type syncEvent any

type blocksEvent struct {
	blocks []*statesync.Block
	res    chan error
}

type snapshotEvent struct {
	*statesync.Snapshot
	res chan error
}

// toLoop hands an event to the loop and waits for its verdict.
func (a *syncAdapter) toLoop(ctx context.Context, ev syncEvent, res chan error) error {
	select {
	case a.n.syncCh <- ev:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		select {
		case err := <-res: // the loop answered, then stopped the transfer (it is done)
			return err
		default:
			return ctx.Err()
		}
	}
}

// onSyncEvent handles what the syncer hands to the loop. Errors returned are fatal; a bad transfer is
// reported to the syncer through the event.
func (n *Node) onSyncEvent(ev syncEvent) error {
	switch ev := ev.(type) {
	case *blocksEvent:
		for _, b := range ev.blocks {
			err := n.rep.ApplyCommitted(b.Block.Height, b.Requests, b.Cert)
			if err != nil && !errors.Is(err, pbft.ErrStale) {
				ev.res <- err
				return nil
			}
		}
		ev.res <- nil
		return nil
	case *snapshotEvent:
		return n.installSnapshot(ev)
	}
	return fmt.Errorf("node: unknown sync event %T", ev)
}

// installSnapshot finishes a restored snapshot: the application's switch, the chain's jump to the anchor
// block and the engine's new state (hard state, log truncation) commit in one atomic batch.
func (n *Node) installSnapshot(ev *snapshotEvent) error {
	fail := func(err error) error {
		ev.res <- err
		return nil
	}
	if err := n.rep.CheckSnapshot(ev.Seq, ev.AppDigest, ev.Table); err != nil {
		return fail(err)
	}
	head := n.store.Head()
	if head.Height >= ev.Seq {
		return fail(fmt.Errorf("node: the chain is at %d, past the snapshot at %d", head.Height, ev.Seq))
	}
	b := n.store.NewBatch()
	defer b.Close()
	if err := ev.Restore.Finish(b.App()); err != nil { // under appMu; clears n.restoring
		return fail(err) // the syncer aborts the restore
	}
	// The application switched in memory: from here on a failure stops the node.
	if err := b.JumpTo(store.Ref{Height: ev.Seq, Hash: ev.Block.Hash()}); err != nil {
		return fmt.Errorf("node: install snapshot %d: %w", ev.Seq, err)
	}
	if err := n.rep.InstallSnapshot(ev.Seq, ev.AppDigest, ev.Table); err != nil {
		return fmt.Errorf("node: install snapshot %d: %w", ev.Seq, err)
	}
	n.drv.installed(ev.Seq) // blocks executed before, still on their way to disk, are below the snapshot
	n.publish(ev.Seq, ev.AppDigest)
	ev.res <- nil // installed: whatever fails from here on stops the node
	rd := n.rep.Ready()
	if err := n.drv.handle(&rd, b); err != nil {
		return err
	}
	n.rep.Advance()
	// The anchor block itself, so this replica can serve manifests for this checkpoint.
	bf := n.store.NewBatch()
	defer bf.Close()
	if err := bf.BackfillBlock(ev.Block); err != nil {
		n.log.Warn("store the snapshot's anchor block", "height", ev.Seq, "err", err)
	} else if err := bf.Commit(); err != nil {
		return fmt.Errorf("node: store block %d: %w", ev.Seq, err)
	}
	n.log.Info("snapshot installed", "view", n.soft.View, "seq", ev.Seq, "app_digest", ev.AppDigest,
		"table_bytes", len(ev.Table))
	return nil
}
