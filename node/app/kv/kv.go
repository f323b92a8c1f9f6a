package kv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/p2pbft/p2pbft/node/app"
	"github.com/p2pbft/p2pbft/wire"
)

// KV is the key-value store application. It implements app.Application and app.Querier.
type KV struct {
	st app.Storage

	// Event-loop state: touched only by the app.Application methods, which the node calls from one
	// goroutine.
	committed    app.State
	committedSum ltHash
	sum          ltHash // after the last executed block
	executed     uint64
	pending      []*heightWrites         // executed, not yet committed, in height order
	overlay      map[string]*overlayItem // the newest state of every key touched since the last commit
	restoring    *restore
	eh           elemHasher
	tmp          ltHash

	// mu guards gen and pins, which snapshot readers consult from other goroutines.
	mu   sync.Mutex
	gen  uint64
	pins []app.State // kept snapshots, by increasing height
}

// version names one stored version of a key: the height that wrote it, if one is stored.
type version struct {
	height uint64
	ok     bool
}

type overlayItem struct {
	value  []byte
	exists bool
	base   version // the newest stored version when the key was first touched
}

type heightWrites struct {
	height uint64
	writes map[string]pendingWrite
}

type pendingWrite struct {
	value []byte
	del   bool
}

var (
	_ app.Application = (*KV)(nil)
	_ app.Querier     = (*KV)(nil)
)

// Open opens the key-value store kept in st (a fresh, empty state if st holds none). It finishes garbage
// collection a crash interrupted and drops a restore a crash interrupted.
func Open(st app.Storage) (*KV, error) {
	kv := &KV{st: st, overlay: make(map[string]*overlayItem)}
	raw, ok, err := st.Get(keyMeta)
	if err != nil {
		return nil, fmt.Errorf("kv: open: %w", err)
	}
	kv.gen = 1
	if ok {
		kv.gen, kv.committed.Height, kv.committedSum, err = decodeMeta(raw)
		if err != nil {
			return nil, err
		}
	}
	kv.committed.Digest = kv.committedSum.digest()
	kv.sum = kv.committedSum
	kv.executed = kv.committed.Height
	if err := kv.dropOtherGenerations(); err != nil {
		return nil, err
	}
	if err := kv.loadPins(); err != nil {
		return nil, err
	}
	if err := kv.collectGarbage(); err != nil {
		return nil, err
	}
	return kv, nil
}

// dropOtherGenerations deletes what an interrupted restore left behind.
func (kv *KV) dropOtherGenerations() error {
	lo, hi := genBounds(kv.gen)
	b := kv.st.NewBatch()
	defer b.Close()
	dirty := false
	for _, r := range [][2][]byte{{[]byte{'G'}, lo}, {hi, []byte{'H'}}} {
		it, err := kv.st.NewIter(r[0], r[1])
		if err != nil {
			return fmt.Errorf("kv: open: %w", err)
		}
		some := it.First()
		err = errors.Join(it.Error(), it.Close())
		if err != nil {
			return fmt.Errorf("kv: open: %w", err)
		}
		if some {
			dirty = true
			if err := b.DeleteRange(r[0], r[1]); err != nil {
				return fmt.Errorf("kv: open: %w", err)
			}
		}
	}
	if dirty {
		if err := b.Commit(false); err != nil {
			return fmt.Errorf("kv: open: drop stale generations: %w", err)
		}
	}
	return nil
}

func (kv *KV) loadPins() error {
	it, err := kv.st.NewIter(pinsStart(kv.gen), pinsEnd(kv.gen))
	if err != nil {
		return fmt.Errorf("kv: open: %w", err)
	}
	defer it.Close()
	var pins []app.State
	for ok := it.First(); ok; ok = it.Next() {
		k, v := it.Key(), it.Value()
		if len(k) != len(pinsStart(kv.gen))+8 || len(v) != 32 {
			return fmt.Errorf("kv: open: malformed snapshot record %x", k)
		}
		pins = append(pins, app.State{Height: binary.BigEndian.Uint64(k[len(k)-8:]), Digest: wire.Digest(v)})
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("kv: open: %w", err)
	}
	kv.mu.Lock()
	kv.pins = pins
	kv.mu.Unlock()
	return nil
}

// Info implements app.Application.
func (kv *KV) Info() (app.State, error) { return kv.committed, nil }

// Execute implements app.Application.
func (kv *KV) Execute(height uint64, batch []app.Request) (app.Outcome, error) {
	if kv.restoring != nil {
		return app.Outcome{}, errors.New("kv: execute during a restore")
	}
	if height != kv.executed+1 {
		return app.Outcome{}, fmt.Errorf("kv: execute block %d after block %d: %w", height, kv.executed, app.ErrHeight)
	}
	hw := &heightWrites{height: height, writes: make(map[string]pendingWrite)}
	out := app.Outcome{Results: make([][]byte, len(batch))}
	var it app.Iterator
	defer func() {
		if it != nil {
			it.Close()
		}
	}()
	for i, req := range batch {
		var res Result
		op, err := DecodeOp(req.Op)
		if err != nil {
			res = invalid(err)
		} else {
			item := kv.overlay[string(op.Key)]
			if item == nil {
				if it == nil {
					lo, hi := genBounds(kv.gen)
					if it, err = kv.st.NewIter(lo, hi); err != nil {
						return app.Outcome{}, fmt.Errorf("kv: execute block %d: %w", height, err)
					}
				}
				if item, err = kv.readLatest(it, op.Key); err != nil {
					return app.Outcome{}, fmt.Errorf("kv: execute block %d: %w", height, err)
				}
				kv.overlay[string(op.Key)] = item
			}
			res = kv.apply(hw, item, &op)
		}
		if out.Results[i], err = EncodeResult(res); err != nil {
			return app.Outcome{}, fmt.Errorf("kv: execute block %d: %w", height, err)
		}
	}
	kv.pending = append(kv.pending, hw)
	kv.executed = height
	out.Digest = kv.sum.digest()
	return out, nil
}

func invalid(err error) Result {
	msg := err.Error()
	if len(msg) > maxErrorLen {
		msg = msg[:maxErrorLen]
	}
	return Result{Status: StatusInvalid, Error: msg}
}

// apply performs a checked operation on the newest state of its key.
func (kv *KV) apply(hw *heightWrites, item *overlayItem, op *Op) Result {
	switch op.Type {
	case OpGet:
		if !item.exists {
			return Result{Status: StatusNotFound}
		}
		return Result{Status: StatusOK, Value: item.value, Exists: true}
	case OpDelete:
		if !item.exists {
			return Result{Status: StatusNotFound}
		}
		kv.set(hw, item, op.Key, nil, false)
		return Result{Status: StatusOK}
	case OpCAS:
		match := !item.exists
		if !op.ExpectAbsent {
			match = item.exists && bytes.Equal(item.value, op.Expect)
		}
		if !match {
			return Result{Status: StatusConflict, Value: item.value, Exists: item.exists}
		}
	}
	// put, or a matching cas
	if !item.exists || !bytes.Equal(item.value, op.Value) {
		kv.set(hw, item, op.Key, op.Value, true)
	}
	return Result{Status: StatusOK}
}

// set changes the newest state of key and the checksum.
func (kv *KV) set(hw *heightWrites, item *overlayItem, key, value []byte, exists bool) {
	if item.exists {
		kv.eh.hash(&kv.tmp, key, item.value)
		kv.sum.sub(&kv.tmp)
	}
	if exists {
		value = bytes.Clone(value)
		if value == nil {
			value = []byte{}
		}
		kv.eh.hash(&kv.tmp, key, value)
		kv.sum.add(&kv.tmp)
	}
	item.value, item.exists = value, exists
	hw.writes[string(key)] = pendingWrite{value: value, del: !exists}
}

// readLatest reads the newest stored version of key.
func (kv *KV) readLatest(it app.Iterator, key []byte) (*overlayItem, error) {
	prefix := versionPrefix(kv.gen, key)
	item := &overlayItem{}
	if it.SeekGE(binary.BigEndian.AppendUint64(bytes.Clone(prefix), 0)) && bytes.HasPrefix(it.Key(), prefix) {
		k, v := it.Key(), it.Value()
		if len(k) != len(prefix)+8 || len(v) == 0 {
			return nil, fmt.Errorf("kv: malformed version record %x", k)
		}
		item.base = version{height: ^binary.BigEndian.Uint64(k[len(prefix):]), ok: true}
		if v[0] == tagValue {
			item.exists = true
			item.value = bytes.Clone(v[1:])
		}
	}
	return item, it.Error()
}

// Commit implements app.Application: it writes the versions of every key the executed blocks changed, the
// garbage entries of the versions kept for snapshots, and the meta record.
func (kv *KV) Commit(w app.Writer) error {
	if len(kv.pending) == 0 {
		return nil
	}
	kv.mu.Lock()
	gen := kv.gen
	var newestPin uint64
	hasPins := len(kv.pins) > 0
	if hasPins {
		newestPin = kv.pins[len(kv.pins)-1].Height
	}
	kv.mu.Unlock()

	last := make(map[string]version)
	var buf []byte
	for _, hw := range kv.pending {
		h := hw.height
		for k, wr := range hw.writes {
			key := []byte(k)
			prev, ok := last[k]
			if !ok {
				prev = kv.overlay[k].base
			}
			var garbage []byte
			if prev.ok {
				// The previous version is still needed by a kept snapshot at or above its height (all
				// snapshots are below h); otherwise nothing can read it any more.
				if hasPins && prev.height <= newestPin {
					garbage = binary.BigEndian.AppendUint64(garbage, prev.height)
				} else if err := w.Delete(versionKey(gen, key, prev.height)); err != nil {
					return fmt.Errorf("kv: commit: %w", err)
				}
			}
			switch {
			case !wr.del:
				buf = append(append(buf[:0], tagValue), wr.value...)
				if err := w.Set(versionKey(gen, key, h), buf); err != nil {
					return fmt.Errorf("kv: commit: %w", err)
				}
				last[k] = version{height: h, ok: true}
			case hasPins:
				// A tombstone hides older versions kept for snapshots; it goes when they go.
				if err := w.Set(versionKey(gen, key, h), []byte{tagTombstone}); err != nil {
					return fmt.Errorf("kv: commit: %w", err)
				}
				garbage = binary.BigEndian.AppendUint64(garbage, h)
				last[k] = version{height: h, ok: true}
			default:
				// Without kept snapshots no older version exists (collectGarbage leaves none), so a
				// deleted key needs no tombstone.
				last[k] = version{}
			}
			if garbage != nil {
				if err := w.Set(garbageKey(gen, h, key), garbage); err != nil {
					return fmt.Errorf("kv: commit: %w", err)
				}
			}
		}
	}
	m, err := encodeMeta(gen, kv.executed, &kv.sum)
	if err != nil {
		return fmt.Errorf("kv: commit: %w", err)
	}
	if err := w.Set(keyMeta, m); err != nil {
		return fmt.Errorf("kv: commit: %w", err)
	}
	kv.committed = app.State{Height: kv.executed, Digest: kv.sum.digest()}
	kv.committedSum = kv.sum
	kv.pending = nil
	clear(kv.overlay)
	return nil
}

// Get reads key from the committed state without consensus, and returns the height it read at. It is
// safe to call from any goroutine, concurrently with execution.
func (kv *KV) Get(key []byte) (value []byte, ok bool, height uint64, err error) {
	it, err := kv.st.NewIter(nil, nil)
	if err != nil {
		return nil, false, 0, fmt.Errorf("kv: get: %w", err)
	}
	defer it.Close()
	// One iterator sees one point in time, so the meta record and the value agree.
	gen := uint64(1)
	if it.SeekGE(keyMeta) && bytes.Equal(it.Key(), keyMeta) {
		if gen, height, _, err = decodeMeta(it.Value()); err != nil {
			return nil, false, 0, err
		}
	}
	prefix := versionPrefix(gen, key)
	if it.SeekGE(versionKey(gen, key, height)) && bytes.HasPrefix(it.Key(), prefix) {
		if v := it.Value(); len(v) > 0 && v[0] == tagValue {
			return bytes.Clone(v[1:]), true, height, nil
		}
	}
	return nil, false, height, it.Error()
}

// Query implements app.Querier: the query is an encoded get operation, the answer an encoded Result.
func (kv *KV) Query(query []byte) ([]byte, uint64, error) {
	op, err := DecodeOp(query)
	if err != nil {
		return nil, 0, err
	}
	if op.Type != OpGet {
		return nil, 0, fmt.Errorf("kv: query: only get is answered locally, not %s", op.Type)
	}
	v, ok, h, err := kv.Get(op.Key)
	if err != nil {
		return nil, 0, err
	}
	res := Result{Status: StatusNotFound}
	if ok {
		res = Result{Status: StatusOK, Value: v, Exists: true}
	}
	ans, err := EncodeResult(res)
	return ans, h, err
}

// sortedPins returns a copy of the kept snapshots.
func (kv *KV) sortedPins() []app.State {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	return slices.Clone(kv.pins)
}
