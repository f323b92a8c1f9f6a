package node

import (
	"fmt"
	"time"

	"github.com/p2pbft/p2pbft/node/app"
	"github.com/p2pbft/p2pbft/node/store"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// outcome is what an executed block produced, reported to the engine (Executed) once the block is
// durable.
type outcome struct {
	view    uint64 // of the block's commit certificate
	seq     uint64
	results [][]byte
	digest  wire.Digest
	// replayed: a block executed before a restart, replayed to the engine (nothing to trace).
	replayed bool
}

// executeInto runs the committed batches waiting in d.deferred through the application and makes each one
// a block, written into *bp together with the application's writes (app.Application.Commit) and the
// block's results: a block and the state after it become durable together, in the same fsynced batch as
// the Ready's consensus records. At checkpoint heights the batch is committed at once (its Durable goes
// into *durable) and replaced, so the application can keep a snapshot of the checkpoint (TakeSnapshot
// needs the state committed). The caller commits *bp and reports the outcomes
// (readyDriver.reportExecuted) once everything is durable.
//
// While a snapshot restore is in progress the application cannot execute: the batches stay in d.deferred
// (the engine allows reporting Executed later) until the restore is installed (the engine then forgets
// them) or aborted.
func (d *readyDriver) executeInto(bp **store.Batch, durable *[]*store.Durable) ([]outcome, error) {
	if len(d.deferred) == 0 {
		return nil, nil
	}
	d.appMu.Lock()
	defer d.appMu.Unlock()
	if d.restoring.Load() {
		return nil, nil
	}
	committed := d.deferred
	d.deferred = nil
	outs := make([]outcome, 0, len(committed))
	start := time.Now()
	dirty := false // blocks executed since the application's last Commit
	requests, blocks := 0, 0
	for i := range committed {
		cb := &committed[i]
		if cb.AlreadyApplied {
			rec := d.replayed[cb.Seq]
			if rec == nil {
				return nil, fmt.Errorf("node: the engine replays block %d, but its results are not in the store", cb.Seq)
			}
			if len(rec.Results) != len(cb.Execute) {
				return nil, fmt.Errorf("node: block %d: %d stored results for %d requests", cb.Seq, len(rec.Results), len(cb.Execute))
			}
			delete(d.replayed, cb.Seq)
			outs = append(outs, outcome{seq: cb.Seq, results: rec.Results, digest: rec.Digest, replayed: true})
			continue
		}
		b := *bp
		reqs := make([]app.Request, len(cb.Execute))
		for j, r := range cb.Execute {
			reqs[j] = app.Request{Client: r.Client, Op: r.Op}
		}
		out, err := d.app.Execute(cb.Seq, reqs)
		if err != nil {
			return nil, fmt.Errorf("node: application failed on block %d: %w", cb.Seq, err)
		}
		if len(out.Results) != len(reqs) {
			return nil, fmt.Errorf("node: application returned %d results for the %d requests of block %d", len(out.Results), len(reqs), cb.Seq)
		}
		blk, err := newBlock(cb, b.Head().Hash, out.Digest)
		if err != nil {
			return nil, err
		}
		if err := b.AppendBlock(blk); err != nil {
			return nil, fmt.Errorf("node: store block %d: %w", cb.Seq, err)
		}
		rec, err := encodeResults(&resultsRecord{Seq: cb.Seq, Digest: out.Digest, Results: out.Results})
		if err != nil {
			return nil, err
		}
		if err := b.AppendRecord(cb.Seq, rec); err != nil {
			return nil, err
		}
		dirty = true
		outs = append(outs, outcome{view: cb.View, seq: cb.Seq, results: out.Results, digest: out.Digest})
		d.tracer.Executed(cb.View, cb.Seq, len(cb.Batch), time.Now().UnixNano())
		if d.test.hooks != nil && d.test.hooks.executed != nil {
			d.test.hooks.executed(cb.Seq)
		}
		requests += len(reqs)
		blocks++
		d.metrics.batchRequests.Observe(float64(len(cb.Batch)))
		if cb.Seq%d.ckptK == 0 {
			dur, err := d.commitBlocks(b)
			if err != nil {
				return nil, err
			}
			*durable = append(*durable, dur)
			dirty = false
			*bp = d.store.NewBatch()
			if err := d.app.TakeSnapshot(cb.Seq); err != nil {
				d.log.Warn("application snapshot at checkpoint", "height", cb.Seq, "err", err)
			} else {
				d.keptSnaps[cb.Seq] = true
			}
		}
	}
	if dirty {
		if err := d.app.Commit((*bp).App()); err != nil {
			return nil, fmt.Errorf("node: application commit: %w", err)
		}
	}
	if blocks > 0 {
		d.metrics.executeSeconds.Observe(time.Since(start).Seconds())
		d.metrics.blocks.Add(float64(blocks))
		d.metrics.requests.Add(float64(requests))
	}
	return outs, nil
}

// commitBlocks adds the application's writes to b and commits it (durable once the returned Durable says
// so; the state is readable at once, which is what TakeSnapshot needs).
func (d *readyDriver) commitBlocks(b *store.Batch) (*store.Durable, error) {
	if err := d.app.Commit(b.App()); err != nil {
		return nil, fmt.Errorf("node: application commit: %w", err)
	}
	dur, err := b.CommitAsync()
	if err != nil {
		return nil, fmt.Errorf("node: commit blocks: %w", err)
	}
	return dur, nil
}

// newBlock builds the block of a committed batch.
func newBlock(cb *pbft.CommittedBatch, prev, appDigest wire.Digest) (*store.Block, error) {
	blk := &store.Block{Height: cb.Seq, Prev: prev, View: cb.View, BatchDigest: cb.Digest, AppDigest: appDigest,
		Batch: make([][]byte, len(cb.Batch)), Cert: make([][]byte, len(cb.Cert))}
	for i, e := range cb.Batch {
		data, err := e.Marshal()
		if err != nil {
			return nil, fmt.Errorf("node: encode block %d: %w", cb.Seq, err)
		}
		blk.Batch[i] = data
	}
	for i, e := range cb.Cert {
		data, err := e.WithoutBody().Marshal()
		if err != nil {
			return nil, fmt.Errorf("node: encode block %d: %w", cb.Seq, err)
		}
		blk.Cert[i] = data
	}
	return blk, nil
}

// catchUpApp brings an application that is behind the chain (one that keeps its state in memory, or lost
// part of it) up to the chain's head before the engine starts: it replays the stored blocks through Execute
// and Commit, checking each digest against the block. Which requests of a block execute depends on the
// client table (a client's request executes once, in timestamp order); the replay rebuilds that filter from
// the blocks, so it needs them all from block 1. The results of the replayed blocks above the engine's
// snapshot go into d.replayed, for the engine's replay of them (executeInto). New calls it from open.
func (d *readyDriver) catchUpApp(p *pbft.Persisted) error {
	info, err := d.app.Info()
	if err != nil {
		return fmt.Errorf("node: application info: %w", err)
	}
	head := d.store.Head()
	switch {
	case info.Height == head.Height:
		return nil
	case info.Height > head.Height:
		return fmt.Errorf("node: the application is at height %d, ahead of the chain (head %d): its state was not written with the blocks; restore its data or start from an empty data directory",
			info.Height, head.Height)
	}
	d.log.Info("application behind the chain: replaying blocks", "app_height", info.Height, "head", head.Height)
	var snapSeq uint64
	if p != nil && p.HardState.Snapshot != nil {
		snapSeq = p.HardState.Snapshot.Seq
	}
	once := pbft.ExactlyOnce{} // the client table's filter, rebuilt from block 1
	next := uint64(1)
	b := d.store.NewBatch()
	defer func() { b.Close() }()
	for blk, err := range d.store.Blocks(1, head.Height) {
		if err != nil {
			return err
		}
		if blk.Height != next {
			return fmt.Errorf("node: the application is at height %d and the chain lacks block %d (this replica copied a snapshot past it); the application must keep its state durably (app.Application.Commit)",
				info.Height, next)
		}
		next++
		envs, err := store.DecodeBatch(blk.Batch)
		if err != nil {
			return fmt.Errorf("node: stored block %d: %w", blk.Height, err)
		}
		var reqs []app.Request
		for _, e := range envs {
			r, err := pbft.DecodeRequest(e.Payload)
			if err != nil {
				return fmt.Errorf("node: stored block %d: %w", blk.Height, err)
			}
			if !once.Admit(e.Author, r.Timestamp) {
				continue
			}
			reqs = append(reqs, app.Request{Client: e.Author, Op: r.Op})
		}
		if blk.Height <= info.Height {
			continue
		}
		out, err := d.app.Execute(blk.Height, reqs)
		if err != nil {
			return fmt.Errorf("node: replay block %d: %w", blk.Height, err)
		}
		if out.Digest != blk.AppDigest {
			return fmt.Errorf("node: replay block %d: application digest %s, the block says %s (the application is not deterministic, or its state was changed)",
				blk.Height, out.Digest, blk.AppDigest)
		}
		if blk.Height > snapSeq {
			d.replayed[blk.Height] = &resultsRecord{Seq: blk.Height, Digest: out.Digest, Results: out.Results}
		}
		if blk.Height%64 == 0 || blk.Height == head.Height {
			if err := d.app.Commit(b.App()); err != nil {
				return fmt.Errorf("node: replay: application commit: %w", err)
			}
			if err := b.Commit(); err != nil {
				return err
			}
			b = d.store.NewBatch()
		}
	}
	if next != head.Height+1 {
		return fmt.Errorf("node: replay: the chain ends at %d, its head says %d", next-1, head.Height)
	}
	return nil
}
