package store

import (
	"encoding/binary"
	"errors"
	"fmt"

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
	if err := b.usable(); err != nil {
		return err
	}
	defer b.Close()
	s := b.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("store: closed")
	}
	if s.epoch != b.epoch {
		return ErrConflict
	}
	if b.moved {
		if err := b.b.Set(keyHead, encodeRef(b.head), nil); err != nil {
			return fmt.Errorf("store: commit: %w", err)
		}
	}
	if b.logUsed {
		if err := b.b.Set(keyLogNext, binary.BigEndian.AppendUint64(nil, b.logNext), nil); err != nil {
			return fmt.Errorf("store: commit: %w", err)
		}
	}
	if err := b.b.Commit(s.wopts); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	s.epoch++
	s.head = b.head
	s.logNext = b.logNext
	return nil
}

// Close drops an uncommitted batch. It is safe to call after Commit.
func (b *Batch) Close() {
	if !b.done {
		b.done = true
		b.b.Close()
	}
}
