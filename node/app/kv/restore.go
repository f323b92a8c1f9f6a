package kv

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/p2pbft/p2pbft/node/app"
	"github.com/p2pbft/p2pbft/wire"
)

// restore builds the next generation from chunks; Finish switches the meta record to it.
type restore struct {
	kv     *KV
	gen    uint64
	height uint64
	want   wire.Digest
	sum    ltHash
	cursor []byte
	eh     elemHasher
	done   bool
	// items are the items of the restored state, built while the chunks come in, as long as the whole
	// state fits in the bounds (complete); Finish makes them the KV's, so that a replica that caught up
	// by state transfer executes without store reads at once, as after Open.
	items     map[string]*item
	itemBytes int
}

// Restore implements app.Restorer.
func (kv *KV) Restore(height uint64, want wire.Digest) (app.SnapshotRestore, error) {
	if kv.restoring != nil {
		return nil, errors.New("kv: a restore is already in progress")
	}
	if kv.executed != kv.committed.Height {
		return nil, errors.New("kv: restore with executed blocks not committed")
	}
	if height == 0 {
		return nil, fmt.Errorf("kv: restore to height 0: %w", app.ErrHeight)
	}
	kv.mu.Lock()
	gen := kv.gen + 1
	kv.mu.Unlock()
	r := &restore{kv: kv, gen: gen, height: height, want: want, items: make(map[string]*item)}
	// Start from an empty generation (an earlier restore in this process may have been abandoned without
	// Abort).
	if err := r.drop(); err != nil {
		return nil, err
	}
	kv.restoring = r
	return r, nil
}

func (r *restore) drop() error {
	lo, hi := genBounds(r.gen)
	b := r.kv.st.NewBatch()
	defer b.Close()
	if err := b.DeleteRange(lo, hi); err != nil {
		return fmt.Errorf("kv: restore: %w", err)
	}
	if err := b.Commit(false); err != nil {
		return fmt.Errorf("kv: restore: %w", err)
	}
	return nil
}

func (r *restore) Cursor() []byte { return r.cursor }

// Apply implements app.SnapshotRestore. The chunk's writes are not synced: they are invisible until Finish,
// whose write the node syncs (and a synced write makes the earlier ones durable too).
func (r *restore) Apply(data []byte) error {
	if r.done {
		return errors.New("kv: restore already finished or aborted")
	}
	entries, err := decodeChunk(data, r.cursor)
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		return nil
	}
	b := r.kv.st.NewBatch()
	defer b.Close()
	sum := r.sum
	var v ltHash
	var buf []byte
	for _, e := range entries {
		buf = append(append(buf[:0], tagValue), e.Value...)
		if err := b.Set(versionKey(r.gen, e.Key, r.height), buf); err != nil {
			return fmt.Errorf("kv: restore: %w", err)
		}
		r.eh.hash(&v, e.Key, e.Value)
		sum.add(&v)
	}
	if err := b.Commit(false); err != nil {
		return fmt.Errorf("kv: restore: %w", err)
	}
	r.sum = sum
	r.cursor = entries[len(entries)-1].Key
	for _, e := range entries {
		if r.items == nil {
			break
		}
		it := &item{key: string(e.Key), value: bytes.Clone(e.Value), exists: true, base: version{height: r.height, ok: true}}
		if it.value == nil {
			it.value = []byte{} // as read from the store
		}
		if len(r.items) >= r.kv.maxItems || r.itemBytes+it.size() > r.kv.maxItemBytes {
			r.items = nil // the state does not fit: Open will load what does
			break
		}
		r.items[it.key] = it
		r.itemBytes += it.size()
	}
	return nil
}

// Finish implements app.SnapshotRestore.
func (r *restore) Finish(w app.Writer) error {
	if r.done {
		return errors.New("kv: restore already finished or aborted")
	}
	if d := r.sum.digest(); d != r.want {
		return fmt.Errorf("kv: restore at %d: state digest %s, want %s: %w", r.height, d, r.want, app.ErrDigestMismatch)
	}
	kv := r.kv
	m, err := encodeMeta(r.gen, r.height, &r.sum)
	if err != nil {
		return fmt.Errorf("kv: restore: %w", err)
	}
	oldLo, oldHi := genBounds(r.gen - 1)
	if err := errors.Join(
		w.Set(keyMeta, m),
		w.Set(pinKey(r.gen, r.height), r.want[:]),
		w.DeleteRange(oldLo, oldHi),
	); err != nil {
		return fmt.Errorf("kv: restore: %w", err)
	}
	r.done = true
	kv.restoring = nil
	st := app.State{Height: r.height, Digest: r.want}
	kv.committed, kv.committedSum, kv.sum, kv.sumDigest, kv.executed = st, r.sum, r.sum, r.want, r.height
	// The items describe the old generation. The switch is durable only when the node commits w, but the
	// node stops if it cannot, so nothing executes on the old state after this.
	kv.dropItems()
	if r.items != nil {
		kv.items, kv.itemBytes, kv.complete = r.items, r.itemBytes, true
		r.items = nil
	}
	kv.mu.Lock()
	kv.gen = r.gen
	kv.pins = []app.State{st}
	kv.mu.Unlock()
	return nil
}

// Abort implements app.SnapshotRestore.
func (r *restore) Abort() error {
	if r.done {
		return nil
	}
	r.done = true
	r.kv.restoring = nil
	return r.drop()
}
