package kv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/p2pbft/p2pbft/node/app"
	"github.com/p2pbft/p2pbft/wire"
)

// TakeSnapshot implements app.SnapshotSource. A snapshot costs one small record: versions are kept, not
// copied, and Commit keeps every version a snapshot can still read.
func (kv *KV) TakeSnapshot(height uint64) error {
	if height != kv.committed.Height {
		return fmt.Errorf("kv: snapshot at %d: the committed height is %d: %w", height, kv.committed.Height, app.ErrHeight)
	}
	if kv.restoring != nil {
		return errors.New("kv: snapshot during a restore")
	}
	kv.mu.Lock()
	gen := kv.gen
	exists := len(kv.pins) > 0 && kv.pins[len(kv.pins)-1].Height == height
	kv.mu.Unlock()
	if exists {
		return nil
	}
	b := kv.st.NewBatch()
	defer b.Close()
	if err := b.Set(pinKey(gen, height), kv.committed.Digest[:]); err != nil {
		return fmt.Errorf("kv: snapshot at %d: %w", height, err)
	}
	if err := b.Commit(true); err != nil {
		return fmt.Errorf("kv: snapshot at %d: %w", height, err)
	}
	kv.mu.Lock()
	kv.pins = append(kv.pins, kv.committed)
	kv.mu.Unlock()
	return nil
}

// ReleaseSnapshot implements app.SnapshotSource.
func (kv *KV) ReleaseSnapshot(height uint64) error {
	kv.mu.Lock()
	i := slices.IndexFunc(kv.pins, func(s app.State) bool { return s.Height == height })
	gen := kv.gen
	kv.mu.Unlock()
	if i < 0 {
		return nil
	}
	b := kv.st.NewBatch()
	defer b.Close()
	if err := b.Delete(pinKey(gen, height)); err != nil {
		return fmt.Errorf("kv: release snapshot %d: %w", height, err)
	}
	// No sync: a release lost in a crash only keeps the snapshot, and the garbage collection below is
	// ordered after it in the log.
	if err := b.Commit(false); err != nil {
		return fmt.Errorf("kv: release snapshot %d: %w", height, err)
	}
	kv.mu.Lock()
	kv.pins = slices.Delete(kv.pins, i, i+1)
	kv.mu.Unlock()
	return kv.collectGarbage()
}

// Snapshots implements app.SnapshotSource.
func (kv *KV) Snapshots() ([]app.State, error) { return kv.sortedPins(), nil }

// gcBatchEntries bounds the garbage entries collected per write.
const gcBatchEntries = 4096

// collectGarbage deletes the versions no kept snapshot can read: those listed in garbage entries at or
// below the oldest kept snapshot (all of them when none is kept). A version superseded at height h is
// readable only from snapshots below h, and every snapshot is at or above the oldest.
func (kv *KV) collectGarbage() error {
	kv.mu.Lock()
	gen := kv.gen
	floor := ^uint64(0)
	if len(kv.pins) > 0 {
		floor = kv.pins[0].Height
	}
	kv.mu.Unlock()
	// Garbage entries at or below the height an earlier pass of this process collected up to are gone,
	// so start above them: the store keeps the deletions of the entries as tombstones until a compaction,
	// and a seek from the start would step over all of them (the collection's largest cost in a replica
	// profile).
	from := garbageStart(gen)
	if kv.gcGen == gen && kv.gcDone > 0 {
		if kv.gcDone >= floor {
			return nil
		}
		from = garbageEnd(gen, kv.gcDone)
	}
	for {
		n, err := kv.collectSome(gen, from, floor)
		if err != nil {
			return fmt.Errorf("kv: garbage collection: %w", err)
		}
		if n < gcBatchEntries {
			break
		}
	}
	// Every entry at or below floor is collected, and Commit writes entries only at heights above the
	// committed one, so none will appear at or below min(floor, committed height).
	kv.gcGen, kv.gcDone = gen, min(floor, kv.committed.Height)
	return nil
}

// collectSome collects up to gcBatchEntries garbage entries from from up to height floor.
func (kv *KV) collectSome(gen uint64, from []byte, floor uint64) (int, error) {
	it, err := kv.st.NewIter(from, garbageEnd(gen, floor))
	if err != nil {
		return 0, err
	}
	defer it.Close()
	b := kv.st.NewBatch()
	defer b.Close()
	n := 0
	start := len(garbageStart(gen))
	var key, rest []byte
	var stale []*item // items whose newest version this batch deletes
	for ok := it.First(); ok && n < gcBatchEntries; ok = it.Next() {
		k, v := it.Key(), it.Value()
		if len(k) < start+8 || len(v) == 0 || len(v)%8 != 0 {
			return 0, fmt.Errorf("malformed garbage record %x", k)
		}
		if key, rest, err = appendUnescaped(key[:0], k[start+8:]); err != nil || len(rest) != 0 {
			return 0, fmt.Errorf("malformed garbage record %x", k)
		}
		item := kv.items[string(key)]
		for i := 0; i < len(v); i += 8 {
			h := binary.BigEndian.Uint64(v[i:])
			kv.keyBuf = binary.BigEndian.AppendUint64(appendVersionPrefix(kv.keyBuf[:0], gen, key), ^h)
			if err := b.Delete(kv.keyBuf); err != nil {
				return 0, err
			}
			if item != nil && item.base == (version{height: h, ok: true}) {
				stale = append(stale, item)
			}
		}
		if err := b.Delete(k); err != nil {
			return 0, err
		}
		n++
	}
	if err := it.Error(); err != nil {
		return 0, err
	}
	if n > 0 {
		if err := b.Commit(false); err != nil {
			return 0, err
		}
	}
	kv.forgetVersions(stale)
	return n, nil
}

// forgetVersions keeps the items exact after the garbage collection deleted the newest stored version of
// their keys. Only a tombstone can be the newest version of its key and garbage (a value version becomes
// garbage when a newer version supersedes it), and every older version of its key went with it or before
// it (they were superseded at or below its height), so the key then has no stored version. A clean item
// is dropped (the next read finds that out, and complete items stay complete: the key has no stored
// version); one with pending writes is told.
func (kv *KV) forgetVersions(stale []*item) {
	for _, it := range stale {
		if kv.items[it.key] != it {
			continue // already dropped (listed twice)
		}
		if it.wroteAt > kv.committed.Height {
			it.base = version{}
			continue
		}
		delete(kv.items, it.key)
		kv.itemBytes -= it.size()
	}
}

// OpenSnapshot implements app.SnapshotSource.
func (kv *KV) OpenSnapshot(height uint64) (app.Snapshot, error) {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	for _, p := range kv.pins {
		if p.Height == height {
			return &snapshotReader{st: kv.st, gen: kv.gen, state: p}, nil
		}
	}
	return nil, fmt.Errorf("kv: snapshot %d: %w", height, app.ErrNoSnapshot)
}

// chunk is the encoding of a snapshot chunk: live pairs in increasing key order.
type chunk struct {
	_       struct{} `cbor:",toarray"`
	Entries []chunkEntry
}

type chunkEntry struct {
	_     struct{} `cbor:",toarray"`
	Key   []byte
	Value []byte
}

// entryOverhead approximates the encoding overhead of one entry in a chunk.
const entryOverhead = 12

type snapshotReader struct {
	st    app.Storage
	gen   uint64
	state app.State
}

func (r *snapshotReader) State() app.State { return r.state }
func (r *snapshotReader) Close() error     { return nil }

// ReadChunk implements app.Snapshot. Each call opens its own iterator and checks, in the same point-in-time
// view, that the snapshot is still kept: every version it reads is then intact.
func (r *snapshotReader) ReadChunk(cursor []byte, maxBytes int) ([]byte, bool, error) {
	lo, hi := genBounds(r.gen)
	it, err := r.st.NewIter(lo, hi)
	if err != nil {
		return nil, false, fmt.Errorf("kv: snapshot %d: %w", r.state.Height, err)
	}
	defer it.Close()
	pk := pinKey(r.gen, r.state.Height)
	if !it.SeekGE(pk) || !bytes.Equal(it.Key(), pk) {
		if err := it.Error(); err != nil {
			return nil, false, fmt.Errorf("kv: snapshot %d: %w", r.state.Height, err)
		}
		return nil, false, fmt.Errorf("kv: snapshot %d was released: %w", r.state.Height, app.ErrNoSnapshot)
	}
	start := versionsStart(r.gen)
	if cursor != nil {
		start = versionPrefix(r.gen, cursor)
	}
	var c chunk
	size, more := 0, false
	s := r.state.Height
	var cur []byte // the key whose version at s was decided
	end := versionsEnd(r.gen)
	for ok := it.SeekGE(start); ok; ok = it.Next() {
		if bytes.Compare(it.Key(), end) >= 0 {
			break
		}
		key, h, err := parseVersionKey(r.gen, it.Key())
		if err != nil {
			return nil, false, fmt.Errorf("kv: snapshot %d: %w", r.state.Height, err)
		}
		if cursor != nil && bytes.Compare(key, cursor) <= 0 || h > s || bytes.Equal(key, cur) && cur != nil {
			continue
		}
		// The first version at or below s is the key's state at s.
		cur = key
		v := it.Value()
		if len(v) == 0 {
			return nil, false, fmt.Errorf("kv: snapshot %d: malformed version of %q", r.state.Height, key)
		}
		if v[0] != tagValue {
			continue
		}
		n := len(key) + len(v) - 1 + entryOverhead
		if len(c.Entries) > 0 && size+n > maxBytes {
			more = true
			break
		}
		c.Entries = append(c.Entries, chunkEntry{Key: key, Value: bytes.Clone(v[1:])})
		size += n
	}
	if err := it.Error(); err != nil {
		return nil, false, fmt.Errorf("kv: snapshot %d: %w", r.state.Height, err)
	}
	data, err := wire.Marshal(&c)
	if err != nil {
		return nil, false, fmt.Errorf("kv: snapshot %d: %w", r.state.Height, err)
	}
	return data, more, nil
}

// decodeChunk decodes a chunk from a peer and checks it: keys and values within the limits, keys strictly
// increasing and after cursor.
func decodeChunk(data []byte, cursor []byte) ([]chunkEntry, error) {
	var c chunk
	if err := wire.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("kv: %w: %w", app.ErrBadChunk, err)
	}
	prev := cursor
	for i, e := range c.Entries {
		if len(e.Key) == 0 || len(e.Key) > MaxKeySize || len(e.Value) > MaxValueSize {
			return nil, fmt.Errorf("kv: entry %d: key of %d bytes, value of %d: %w", i, len(e.Key), len(e.Value), app.ErrBadChunk)
		}
		if prev != nil && bytes.Compare(e.Key, prev) <= 0 {
			return nil, fmt.Errorf("kv: entry %d: key %q does not follow %q: %w", i, e.Key, prev, app.ErrBadChunk)
		}
		prev = e.Key
	}
	return c.Entries, nil
}
