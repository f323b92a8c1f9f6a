package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble"
	"github.com/p2pbft/p2pbft/node/app"
)

// Batch collects everything one step of the replica must make durable (consensus records, hard state,
// blocks, the application's writes) and commits it atomically with one fsync. Writes are applied in call
// order. A Batch is used by one goroutine; the store accepts batches from one writer at a time.
type Batch struct {
	s       *Store
	b       *pebble.Batch
	epoch   uint64
	head    Ref    // the head after the blocks appended so far
	logNext uint64 // next log record index
	logUsed bool
	moved   bool // head changed
	pending map[uint64]Ref
	err     error // the first error; a failed batch cannot be committed
	done    bool
}

// NewBatch starts a batch on the current state of the store.
func (s *Store) NewBatch() *Batch {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &Batch{s: s, b: s.db.NewBatch(), epoch: s.epoch, head: s.head, logNext: s.logNext}
}

func (b *Batch) fail(err error) error {
	if b.err == nil {
		b.err = err
	}
	return err
}

func (b *Batch) usable() error {
	if b.done {
		return errors.New("store: batch already committed or closed")
	}
	return b.err
}

// Head returns the chain head as it will be once the batch commits.
func (b *Batch) Head() Ref { return b.head }

// SetHardState replaces the hard state blob.
func (b *Batch) SetHardState(data []byte) error {
	if err := b.usable(); err != nil {
		return err
	}
	if err := b.b.Set(keyHardState, data, nil); err != nil {
		return b.fail(fmt.Errorf("store: set hard state: %w", err))
	}
	return nil
}

// AppendRecord appends a consensus log record under sequence number seq.
func (b *Batch) AppendRecord(seq uint64, data []byte) error {
	if err := b.usable(); err != nil {
		return err
	}
	if err := b.b.Set(logKey(seq, b.logNext), data, nil); err != nil {
		return b.fail(fmt.Errorf("store: append record %d: %w", seq, err))
	}
	b.logNext++
	b.logUsed = true
	return nil
}

// TruncateLog deletes every log record with sequence number <= seq, including those appended earlier in
// this batch.
func (b *Batch) TruncateLog(seq uint64) error {
	if err := b.usable(); err != nil {
		return err
	}
	end := []byte{prefixLog + 1}
	if seq < ^uint64(0) {
		end = logKey(seq+1, 0)
	}
	if err := b.b.DeleteRange([]byte{prefixLog}, end, nil); err != nil {
		return b.fail(fmt.Errorf("store: truncate log to %d: %w", seq, err))
	}
	return nil
}

// AppendBlock appends blk to the chain: it must be at the height after the head and link to the head's
// hash. The content of a block the replica built itself is trusted; check blocks from peers with
// Block.Verify first.
func (b *Batch) AppendBlock(blk *Block) error {
	if err := b.usable(); err != nil {
		return err
	}
	if blk.Height != b.head.Height+1 || blk.Prev != b.head.Hash {
		return fmt.Errorf("store: append block %d linking to %s: head is %s: %w", blk.Height, blk.Prev, b.head, ErrBadBlock)
	}
	data, err := blk.Marshal()
	if err != nil {
		return b.fail(err)
	}
	if err := b.b.Set(blockKey(blk.Height), data, nil); err != nil {
		return b.fail(fmt.Errorf("store: append block %d: %w", blk.Height, err))
	}
	if b.pending == nil {
		b.pending = make(map[uint64]Ref)
	}
	b.head = blk.Ref()
	b.pending[blk.Height] = Ref{Height: blk.Height, Hash: blk.Prev}
	b.moved = true
	return nil
}

// JumpTo moves the head forward to anchor, a height and block hash certified by a stable checkpoint,
// without the blocks in between: the chain continues from the anchor after a state transfer. The blocks
// up to the anchor can be added later with BackfillBlock.
func (b *Batch) JumpTo(anchor Ref) error {
	if err := b.usable(); err != nil {
		return err
	}
	if anchor.Height <= b.head.Height {
		return fmt.Errorf("store: jump to %s: not above the head %s", anchor, b.head)
	}
	if err := b.b.Set(anchorKey(anchor.Height), anchor.Hash[:], nil); err != nil {
		return b.fail(fmt.Errorf("store: jump to %s: %w", anchor, err))
	}
	b.head = anchor
	b.moved = true
	return nil
}

// BackfillBlock stores a block below the head that the store lacks (after a jump): its hash must equal the
// Prev of the stored block above it, or the anchor at its height. Verify it first.
func (b *Batch) BackfillBlock(blk *Block) error {
	if err := b.usable(); err != nil {
		return err
	}
	if blk.Height == 0 || blk.Height > b.head.Height {
		return fmt.Errorf("store: backfill block %d: above the head %s", blk.Height, b.head)
	}
	if _, ok := b.pending[blk.Height]; ok {
		return fmt.Errorf("store: backfill block %d: already in this batch", blk.Height)
	}
	if _, ok, err := b.s.get(blockKey(blk.Height)); err != nil {
		return b.fail(err)
	} else if ok {
		return fmt.Errorf("store: backfill block %d: already stored", blk.Height)
	}
	var want Ref
	if next, ok := b.pending[blk.Height+1]; ok {
		want = next
	} else if h, ok, err := b.s.Anchor(blk.Height); err != nil {
		return b.fail(err)
	} else if ok {
		want = Ref{Height: blk.Height, Hash: h}
	} else if next, err := b.s.Block(blk.Height + 1); err == nil {
		want = Ref{Height: blk.Height, Hash: next.Prev}
	} else {
		return fmt.Errorf("store: backfill block %d: nothing above it to link to: %w", blk.Height, err)
	}
	if h := blk.Hash(); h != want.Hash {
		return fmt.Errorf("store: backfill block %d: hash %s, the chain above expects %s: %w", blk.Height, h, want.Hash, ErrBadBlock)
	}
	data, err := blk.Marshal()
	if err != nil {
		return b.fail(err)
	}
	if err := b.b.Set(blockKey(blk.Height), data, nil); err != nil {
		return b.fail(fmt.Errorf("store: backfill block %d: %w", blk.Height, err))
	}
	if b.pending == nil {
		b.pending = make(map[uint64]Ref)
	}
	b.pending[blk.Height] = Ref{Height: blk.Height, Hash: blk.Prev}
	return nil
}

// App returns a Writer into the application's namespace whose writes commit with this batch: what the node
// passes to app.Application.Commit.
func (b *Batch) App() app.Writer {
	return prefixWriter{w: (*pebbleWriter)(b.b), prefix: appPrefix, fail: b.fail}
}

// Empty reports whether the batch holds no writes.
func (b *Batch) Empty() bool { return b.b.Empty() && !b.moved }

// Commit applies the batch atomically and, unless the store was opened with UnsafeNoSync, durably (one
// fsync). It fails with ErrConflict if another batch committed since this one was created.
func (b *Batch) Commit() error {
	d, err := b.CommitAsync()
	if err != nil {
		return err
	}
	return d.Wait()
}

// CommitAsync applies the batch atomically, like Commit, but returns before it is durable: the writes are
// visible to readers and to the next batch at once, and the returned Durable's Wait returns once they are
// on disk. Batches become durable in the order they were committed (they share one write-ahead log, whose
// fsyncs the database groups: one fsync covers every batch committed while the previous one ran). So a
// writer can go on building and committing batches while the disk syncs, and hand what may only happen
// after durability (sending messages) to a goroutine that waits for each Durable in turn. Wait must be
// called for every Durable before the store is closed. It fails with ErrConflict if another batch
// committed since this one was created.
func (b *Batch) CommitAsync() (*Durable, error) {
	if err := b.usable(); err != nil {
		return nil, err
	}
	s := b.s
	s.mu.Lock()
	defer s.mu.Unlock()
	fail := func(err error) (*Durable, error) {
		b.Close()
		return nil, err
	}
	if s.closed {
		return fail(errors.New("store: closed"))
	}
	if s.epoch != b.epoch {
		return fail(ErrConflict)
	}
	if b.moved {
		if err := b.b.Set(keyHead, encodeRef(b.head), nil); err != nil {
			return fail(fmt.Errorf("store: commit: %w", err))
		}
	}
	if b.logUsed {
		if err := b.b.Set(keyLogNext, binary.BigEndian.AppendUint64(nil, b.logNext), nil); err != nil {
			return fail(fmt.Errorf("store: commit: %w", err))
		}
	}
	b.done = true
	d := &Durable{}
	switch {
	case b.b.Empty():
		b.b.Close()
	case s.wopts.Sync:
		if err := s.db.ApplyNoSyncWait(b.b, s.wopts); err != nil {
			b.b.Close()
			return nil, fmt.Errorf("store: commit: %w", err)
		}
		d.b = b.b
	default:
		err := b.b.Commit(s.wopts)
		b.b.Close()
		if err != nil {
			return nil, fmt.Errorf("store: commit: %w", err)
		}
	}
	s.epoch++
	s.head = b.head
	s.logNext = b.logNext
	return d, nil
}

// Durable is a committed batch on its way to disk (Batch.CommitAsync).
type Durable struct {
	b    *pebble.Batch // nil: nothing to wait for
	once sync.Once
	err  error
}

// Wait returns once the batch is durable, or the error that prevented it (after which the store must not
// be trusted: stop writing). It may be called more than once, from one goroutine at a time.
func (d *Durable) Wait() error {
	d.once.Do(func() {
		if d.b == nil {
			return
		}
		d.err = d.b.SyncWait()
		d.b.Close()
		d.b = nil
		if d.err != nil {
			d.err = fmt.Errorf("store: sync: %w", d.err)
		}
	})
	return d.err
}

// Close drops an uncommitted batch. It is safe to call after Commit.
func (b *Batch) Close() {
	if !b.done {
		b.done = true
		b.b.Close()
	}
}
