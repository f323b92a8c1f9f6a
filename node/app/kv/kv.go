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
	sum          ltHash      // after the last executed block
	sumDigest    wire.Digest // sum.digest()
	executed     uint64
	pending      []*heightWrites // executed, not yet committed, in height order
	// items holds the newest state of keys: every key written since the last commit (dirty: never
	// evicted) and, up to maxItems entries and maxItemBytes bytes, keys whose committed state is known
	// from an earlier read or commit, so that most operations need no store read. An item is exact: it
	// always equals what a read of the store (plus the pending writes) would give; see item.
	items        map[string]*item
	itemBytes    int // the sum of item.size over items
	maxItems     int
	maxItemBytes int
	// complete says that the items hold every key that has a stored version in the current generation,
	// so a key they do not hold has none and needs no read: true after Open or a restore found the whole
	// state within the bounds (a new replica's empty state, or one that fits), until the first eviction.
	complete bool
	// gcDone is the height up to which a garbage collection of generation gcGen collected every entry.
	gcGen, gcDone uint64
	restoring     *restore
	eh            elemHasher
	tmp           ltHash
	keyBuf        []byte // scratch for store keys
	valBuf        []byte // scratch for store values

	// mu guards gen and pins, which snapshot readers consult from other goroutines.
	mu   sync.Mutex
	gen  uint64
	pins []app.State // kept snapshots, by increasing height
}

// Default bounds of the item cache. An entry of a 100-byte value costs about 300 bytes of heap, so the
// default holds 131,072 such keys (~40 MiB), the whole key space of the replica benchmark; larger values
// hit the byte bound first.
const (
	defaultMaxItems     = 1 << 17
	defaultMaxItemBytes = 64 << 20
	// itemOverhead approximates an item's heap cost besides its key and value: the struct, the map slot
	// and the allocation headers.
	itemOverhead = 160
)

// version names one stored version of a key: the height that wrote it, if one is stored.
type version struct {
	height uint64
	ok     bool
}

// item is the state of one key: its newest value (after the executed blocks), and base, the newest
// version the store holds once the last Commit's writes are durable. Items are created from a store read
// and afterwards changed only together with the store: by Execute and Commit, by the garbage collection
// (which may delete the stored version base names), and dropped all at once by a restore.
type item struct {
	key    string
	value  []byte // never modified in place: a new value is a new slice
	exists bool
	base   version
	// next is Commit's scratch copy of base, so that a failed Commit leaves base unchanged.
	next version
	// wroteAt is the height of the newest pending write of the key (0: none), wroteIdx that write's
	// index in its heightWrites.
	wroteAt  uint64
	wroteIdx int
}

func (it *item) size() int { return len(it.key) + len(it.value) + itemOverhead }

type heightWrites struct {
	height uint64
	writes []pendingWrite // one per key written at height, in the order of first write
}

type pendingWrite struct {
	it    *item
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
	return openBounded(st, defaultMaxItems, defaultMaxItemBytes)
}

// openBounded is Open with the given bounds of the item cache.
func openBounded(st app.Storage, maxItems, maxItemBytes int) (*KV, error) {
	kv := &KV{st: st, items: make(map[string]*item), maxItems: maxItems, maxItemBytes: maxItemBytes}
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
	kv.sum, kv.sumDigest = kv.committedSum, kv.committed.Digest
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
	if err := kv.loadItems(); err != nil {
		return nil, err
	}
	return kv, nil
}

// loadItems fills the items with the newest version of every key, in key order, until they reach their
// bounds; if the whole state fits, the items are complete. One sequential scan costs far less than the
// seeks that would otherwise find these keys one by one (each seek visits every level of the store, and
// finding that a key does not exist costs as much).
func (kv *KV) loadItems() error {
	iter, err := kv.st.NewIter(versionsStart(kv.gen), versionsEnd(kv.gen))
	if err != nil {
		return fmt.Errorf("kv: open: %w", err)
	}
	defer iter.Close()
	var last *item
	start := len(versionsStart(kv.gen))
	var key []byte
	for ok := iter.First(); ok; ok = iter.Next() {
		k := iter.Key()
		var rest []byte
		if key, rest, err = appendUnescaped(key[:0], k[start:]); err != nil || len(rest) != 8 {
			return fmt.Errorf("kv: open: malformed version key %x", k)
		}
		h := ^binary.BigEndian.Uint64(rest)
		if last != nil && last.key == string(key) {
			continue // an older version, kept for a snapshot
		}
		v := iter.Value()
		if len(v) == 0 {
			return fmt.Errorf("kv: open: malformed version record %x", iter.Key())
		}
		it := &item{key: string(key), base: version{height: h, ok: true}}
		if v[0] == tagValue {
			it.exists, it.value = true, bytes.Clone(v[1:])
		}
		if len(kv.items) >= kv.maxItems || kv.itemBytes+it.size() > kv.maxItemBytes {
			return nil // not complete
		}
		kv.items[it.key] = it
		kv.itemBytes += it.size()
		last = it
	}
	if err := iter.Error(); err != nil {
		return fmt.Errorf("kv: open: %w", err)
	}
	kv.complete = true
	return nil
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
	hw := &heightWrites{height: height, writes: make([]pendingWrite, 0, len(batch))}
	out := app.Outcome{Results: make([][]byte, len(batch))}
	// The store iterator is opened at the first key the items do not hold (none when they hold all).
	var iter app.Iterator
	defer func() {
		if iter != nil {
			iter.Close()
		}
	}()
	// Most results are a plain "ok": their constant encoding is copied into one buffer per block instead
	// of encoded (and allocated) one by one.
	var okBuf []byte
	for i, req := range batch {
		var res Result
		op, err := DecodeOp(req.Op)
		if err != nil {
			res = invalid(err)
		} else {
			var it *item
			if it, err = kv.lookup(&iter, op.Key); err != nil {
				return app.Outcome{}, fmt.Errorf("kv: execute block %d: %w", height, err)
			}
			res = kv.apply(hw, it, &op)
		}
		if res.Status == StatusOK && res.Value == nil && !res.Exists {
			if len(okBuf)+len(okResult) > cap(okBuf) {
				okBuf = make([]byte, 0, (len(batch)-i)*len(okResult))
			}
			n := len(okBuf)
			okBuf = append(okBuf, okResult...)
			out.Results[i] = okBuf[n:len(okBuf):len(okBuf)]
			continue
		}
		if out.Results[i], err = EncodeResult(res); err != nil {
			return app.Outcome{}, fmt.Errorf("kv: execute block %d: %w", height, err)
		}
	}
	kv.pending = append(kv.pending, hw)
	kv.executed = height
	kv.sumDigest = kv.sum.digest()
	out.Digest = kv.sumDigest
	return out, nil
}

// okResult is the encoding of Result{Status: StatusOK}.
var okResult = func() []byte {
	b, err := EncodeResult(Result{Status: StatusOK})
	if err != nil {
		panic("kv: encode the ok result: " + err.Error())
	}
	return b
}()

func invalid(err error) Result {
	msg := err.Error()
	if len(msg) > maxErrorLen {
		msg = msg[:maxErrorLen]
	}
	return Result{Status: StatusInvalid, Error: msg}
}

// lookup returns the item of key, read from the store through *iter (opened on first use) if the items
// do not hold it.
func (kv *KV) lookup(iter *app.Iterator, key []byte) (*item, error) {
	if it := kv.items[string(key)]; it != nil {
		return it, nil
	}
	if kv.complete {
		it := &item{key: string(key)} // no stored version
		kv.items[it.key] = it
		kv.itemBytes += it.size()
		return it, nil
	}
	if *iter == nil {
		lo, hi := genBounds(kv.gen)
		var err error
		if *iter, err = kv.st.NewIter(lo, hi); err != nil {
			return nil, err
		}
	}
	it, err := kv.readLatest(*iter, key)
	if err != nil {
		return nil, err
	}
	kv.items[it.key] = it
	kv.itemBytes += it.size()
	return it, nil
}

// apply performs a checked operation on the newest state of its key.
func (kv *KV) apply(hw *heightWrites, it *item, op *Op) Result {
	switch op.Type {
	case OpGet:
		if !it.exists {
			return Result{Status: StatusNotFound}
		}
		return Result{Status: StatusOK, Value: it.value, Exists: true}
	case OpDelete:
		if !it.exists {
			return Result{Status: StatusNotFound}
		}
		kv.set(hw, it, nil, false)
		return Result{Status: StatusOK}
	case OpCAS:
		match := !it.exists
		if !op.ExpectAbsent {
			match = it.exists && bytes.Equal(it.value, op.Expect)
		}
		if !match {
			return Result{Status: StatusConflict, Value: it.value, Exists: it.exists}
		}
	}
	// put, or a matching cas
	if !it.exists || !bytes.Equal(it.value, op.Value) {
		kv.set(hw, it, op.Value, true)
	}
	return Result{Status: StatusOK}
}

// set changes the newest state of a key and the checksum, and records the write.
func (kv *KV) set(hw *heightWrites, it *item, value []byte, exists bool) {
	if it.exists {
		kv.eh.hashString(&kv.tmp, it.key, it.value)
		kv.sum.sub(&kv.tmp)
	}
	if exists {
		value = bytes.Clone(value)
		if value == nil {
			value = []byte{}
		}
		kv.eh.hashString(&kv.tmp, it.key, value)
		kv.sum.add(&kv.tmp)
	}
	kv.itemBytes += len(value) - len(it.value)
	it.value, it.exists = value, exists
	w := pendingWrite{it: it, value: value, del: !exists}
	if it.wroteAt == hw.height {
		hw.writes[it.wroteIdx] = w
		return
	}
	it.wroteAt, it.wroteIdx = hw.height, len(hw.writes)
	hw.writes = append(hw.writes, w)
}

// readLatest reads the newest stored version of key.
func (kv *KV) readLatest(iter app.Iterator, key []byte) (*item, error) {
	kv.keyBuf = appendVersionPrefix(kv.keyBuf[:0], kv.gen, key)
	plen := len(kv.keyBuf)
	kv.keyBuf = binary.BigEndian.AppendUint64(kv.keyBuf, 0)
	prefix := kv.keyBuf[:plen]
	it := &item{key: string(key)}
	if iter.SeekGE(kv.keyBuf) && bytes.HasPrefix(iter.Key(), prefix) {
		k, v := iter.Key(), iter.Value()
		if len(k) != len(prefix)+8 || len(v) == 0 {
			return nil, fmt.Errorf("kv: malformed version record %x", k)
		}
		it.base = version{height: ^binary.BigEndian.Uint64(k[len(prefix):]), ok: true}
		if v[0] == tagValue {
			it.exists = true
			it.value = bytes.Clone(v[1:])
		}
	}
	return it, iter.Error()
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

	// item.next follows the newest stored version through the pending heights; base changes only once
	// every write is in w.
	for _, hw := range kv.pending {
		for _, wr := range hw.writes {
			wr.it.next = wr.it.base
		}
	}
	var garbage []byte
	for _, hw := range kv.pending {
		h := hw.height
		for _, wr := range hw.writes {
			it := wr.it
			prev := it.next
			garbage = garbage[:0]
			if prev.ok {
				// The previous version is still needed by a kept snapshot at or above its height (all
				// snapshots are below h); otherwise nothing can read it any more.
				if hasPins && prev.height <= newestPin {
					garbage = binary.BigEndian.AppendUint64(garbage, prev.height)
				} else if err := w.Delete(kv.versionKey(gen, it.key, prev.height)); err != nil {
					return fmt.Errorf("kv: commit: %w", err)
				}
			}
			switch {
			case !wr.del:
				kv.valBuf = append(append(kv.valBuf[:0], tagValue), wr.value...)
				if err := w.Set(kv.versionKey(gen, it.key, h), kv.valBuf); err != nil {
					return fmt.Errorf("kv: commit: %w", err)
				}
				it.next = version{height: h, ok: true}
			case hasPins:
				// A tombstone hides older versions kept for snapshots; it goes when they go.
				if err := w.Set(kv.versionKey(gen, it.key, h), []byte{tagTombstone}); err != nil {
					return fmt.Errorf("kv: commit: %w", err)
				}
				garbage = binary.BigEndian.AppendUint64(garbage, h)
				it.next = version{height: h, ok: true}
			default:
				// Without kept snapshots no older version exists (collectGarbage leaves none), so a
				// deleted key needs no tombstone.
				it.next = version{}
			}
			if len(garbage) > 0 {
				kv.keyBuf = appendGarbageKey(kv.keyBuf[:0], gen, h, it.key)
				if err := w.Set(kv.keyBuf, garbage); err != nil {
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
	for _, hw := range kv.pending {
		for _, wr := range hw.writes {
			wr.it.base = wr.it.next
		}
	}
	kv.committed = app.State{Height: kv.executed, Digest: kv.sumDigest}
	kv.committedSum = kv.sum
	kv.pending = nil
	kv.evict()
	return nil
}

// versionKey returns the version key of key at height in kv.keyBuf (valid until its next use). The
// writers copy keys, so the buffer can be reused.
func (kv *KV) versionKey(gen uint64, key string, height uint64) []byte {
	kv.keyBuf = binary.BigEndian.AppendUint64(appendVersionPrefix(kv.keyBuf[:0], gen, key), ^height)
	return kv.keyBuf
}

// evict drops clean items until the items are within their bounds. Go's map iteration starts at a random
// place, so this evicts keys at random: for a uniform key space as good as any policy, and for a skewed
// one it keeps a hot key with the probability that it survives random picks, without the bookkeeping
// of an LRU list on every access.
func (kv *KV) evict() {
	for k, it := range kv.items {
		if len(kv.items) <= kv.maxItems && kv.itemBytes <= kv.maxItemBytes {
			return
		}
		if it.wroteAt > kv.committed.Height {
			continue // a pending write: the store does not hold this state yet
		}
		delete(kv.items, k)
		kv.itemBytes -= it.size()
		kv.complete = false
	}
}

// dropItems forgets every item (the store holds another state).
func (kv *KV) dropItems() {
	clear(kv.items)
	kv.itemBytes = 0
	kv.complete = false
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
