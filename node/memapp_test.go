package node

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/p2pbft/p2pbft/node/app"
	"github.com/p2pbft/p2pbft/wire"
)

// memCounters (copied from package app's example) is a small volatile application: named counters that requests increment. Its state lives in
// memory, so it writes nothing in Commit and starts from height 0 after a restart (the node then replays
// the chain). Snapshots are copies of the map, cheap for a small state.
//
// An operation is "inc NAME"; its result is the counter's new value as 8 big-endian bytes, or "bad op".
type memCounters struct {
	state    map[string]uint64
	height   uint64 // executed
	digest   wire.Digest
	snapshot map[uint64]*memSnap
	mu       sync.Mutex // guards snapshot: readers come from other goroutines
	restore  *memRestore
}

type memSnap struct {
	st    app.State
	pairs []memPair // sorted by name
}

type memPair struct {
	_     struct{} `cbor:",toarray"`
	Name  string
	Value uint64
}

func newMemCounters() *memCounters {
	c := &memCounters{state: map[string]uint64{}, snapshot: map[uint64]*memSnap{}}
	c.digest = memDigestOf(c.state)
	return c
}

// memDigestOf hashes the sorted state. Recomputing it per block is fine for a small state; package kv shows
// an incremental digest for a large one.
func memDigestOf(m map[string]uint64) wire.Digest {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(m)) {
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(k))))
		h.Write([]byte(k))
		h.Write(binary.BigEndian.AppendUint64(nil, m[k]))
	}
	return wire.Digest(h.Sum(nil))
}

func (c *memCounters) Info() (app.State, error) {
	return app.State{Height: c.height, Digest: c.digest}, nil
}

func (c *memCounters) Execute(height uint64, batch []app.Request) (app.Outcome, error) {
	if height != c.height+1 {
		return app.Outcome{}, app.ErrHeight
	}
	out := app.Outcome{Results: make([][]byte, len(batch))}
	for i, r := range batch {
		name, ok := bytes.CutPrefix(r.Op, []byte("inc "))
		if !ok || len(name) == 0 {
			out.Results[i] = []byte("bad op")
			continue
		}
		c.state[string(name)]++
		out.Results[i] = binary.BigEndian.AppendUint64(nil, c.state[string(name)])
	}
	c.height = height
	c.digest = memDigestOf(c.state)
	out.Digest = c.digest
	return out, nil
}

// Commit writes nothing: the state is volatile.
func (c *memCounters) Commit(app.Writer) error { return nil }

func (c *memCounters) TakeSnapshot(height uint64) error {
	if height != c.height {
		return app.ErrHeight
	}
	s := &memSnap{st: app.State{Height: height, Digest: c.digest}}
	for _, k := range slices.Sorted(maps.Keys(c.state)) {
		s.pairs = append(s.pairs, memPair{Name: k, Value: c.state[k]})
	}
	c.mu.Lock()
	c.snapshot[height] = s
	c.mu.Unlock()
	return nil
}

func (c *memCounters) ReleaseSnapshot(height uint64) error {
	c.mu.Lock()
	delete(c.snapshot, height)
	c.mu.Unlock()
	return nil
}

func (c *memCounters) Snapshots() ([]app.State, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []app.State
	for _, s := range c.snapshot {
		out = append(out, s.st)
	}
	slices.SortFunc(out, func(a, b app.State) int { return cmp.Compare(a.Height, b.Height) })
	return out, nil
}

func (c *memCounters) OpenSnapshot(height uint64) (app.Snapshot, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.snapshot[height]
	if !ok {
		return nil, app.ErrNoSnapshot
	}
	return s, nil
}

func (s *memSnap) State() app.State { return s.st }
func (s *memSnap) Close() error     { return nil }

// ReadChunk encodes the pairs after the cursor (a counter name) with the wire codec.
func (s *memSnap) ReadChunk(cursor []byte, maxBytes int) ([]byte, bool, error) {
	i, _ := slices.BinarySearchFunc(s.pairs, string(cursor), func(p memPair, name string) int { return cmp.Compare(p.Name, name) })
	if cursor != nil && i < len(s.pairs) && s.pairs[i].Name == string(cursor) {
		i++
	}
	j, size := i, 0
	for j < len(s.pairs) && (j == i || size+len(s.pairs[j].Name)+12 <= maxBytes) {
		size += len(s.pairs[j].Name) + 12
		j++
	}
	data, err := wire.Marshal(s.pairs[i:j])
	return data, j < len(s.pairs), err
}

type memRestore struct {
	c      *memCounters
	height uint64
	want   wire.Digest
	state  map[string]uint64
	cursor []byte
}

func (c *memCounters) Restore(height uint64, want wire.Digest) (app.SnapshotRestore, error) {
	return &memRestore{c: c, height: height, want: want, state: map[string]uint64{}}, nil
}

func (r *memRestore) Cursor() []byte { return r.cursor }

// Apply checks the chunk from the untrusted peer: it decodes and its names strictly increase.
func (r *memRestore) Apply(chunk []byte) error {
	var pairs []memPair
	if err := wire.Unmarshal(chunk, &pairs); err != nil {
		return fmt.Errorf("%w: %w", app.ErrBadChunk, err)
	}
	for _, p := range pairs {
		if p.Name == "" || r.cursor != nil && p.Name <= string(r.cursor) {
			return app.ErrBadChunk
		}
		r.cursor = []byte(p.Name)
	}
	for _, p := range pairs {
		r.state[p.Name] = p.Value
	}
	return nil
}

func (r *memRestore) Finish(app.Writer) error {
	d := memDigestOf(r.state)
	if d != r.want {
		return app.ErrDigestMismatch
	}
	c := r.c
	c.state, c.height, c.digest = r.state, r.height, d
	return c.TakeSnapshot(r.height) // keep it, to serve it in turn
}

func (r *memRestore) Abort() error { return nil }
