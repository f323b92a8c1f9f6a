package app_test

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/p2pbft/p2pbft/node/app"
	"github.com/p2pbft/p2pbft/node/app/apptest"
	"github.com/p2pbft/p2pbft/wire"
)

// counters is a small volatile application: named counters that requests increment. Its state lives in
// memory, so it writes nothing in Commit and starts from height 0 after a restart (the node then replays
// the chain). Snapshots are copies of the map, cheap for a small state.
//
// An operation is "inc NAME"; its result is the counter's new value as 8 big-endian bytes, or "bad op".
type counters struct {
	state    map[string]uint64
	height   uint64 // executed
	digest   wire.Digest
	snapshot map[uint64]*counterSnap
	mu       sync.Mutex // guards snapshot: readers come from other goroutines
	restore  *counterRestore
}

type counterSnap struct {
	st    app.State
	pairs []pair // sorted by name
}

type pair struct {
	_     struct{} `cbor:",toarray"`
	Name  string
	Value uint64
}

func newCounters() *counters {
	c := &counters{state: map[string]uint64{}, snapshot: map[uint64]*counterSnap{}}
	c.digest = digestOf(c.state)
	return c
}

// digestOf hashes the sorted state. Recomputing it per block is fine for a small state; package kv shows
// an incremental digest for a large one.
func digestOf(m map[string]uint64) wire.Digest {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(m)) {
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(k))))
		h.Write([]byte(k))
		h.Write(binary.BigEndian.AppendUint64(nil, m[k]))
	}
	return wire.Digest(h.Sum(nil))
}

func (c *counters) Info() (app.State, error) {
	return app.State{Height: c.height, Digest: c.digest}, nil
}

func (c *counters) Execute(height uint64, batch []app.Request) (app.Outcome, error) {
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
	c.digest = digestOf(c.state)
	out.Digest = c.digest
	return out, nil
}

// Commit writes nothing: the state is volatile.
func (c *counters) Commit(app.Writer) error { return nil }

func (c *counters) TakeSnapshot(height uint64) error {
	if height != c.height {
		return app.ErrHeight
	}
	s := &counterSnap{st: app.State{Height: height, Digest: c.digest}}
	for _, k := range slices.Sorted(maps.Keys(c.state)) {
		s.pairs = append(s.pairs, pair{Name: k, Value: c.state[k]})
	}
	c.mu.Lock()
	c.snapshot[height] = s
	c.mu.Unlock()
	return nil
}

func (c *counters) ReleaseSnapshot(height uint64) error {
	c.mu.Lock()
	delete(c.snapshot, height)
	c.mu.Unlock()
	return nil
}

func (c *counters) Snapshots() ([]app.State, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []app.State
	for _, s := range c.snapshot {
		out = append(out, s.st)
	}
	slices.SortFunc(out, func(a, b app.State) int { return cmp.Compare(a.Height, b.Height) })
	return out, nil
}

func (c *counters) OpenSnapshot(height uint64) (app.Snapshot, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.snapshot[height]
	if !ok {
		return nil, app.ErrNoSnapshot
	}
	return s, nil
}

func (s *counterSnap) State() app.State { return s.st }
func (s *counterSnap) Close() error     { return nil }

// ReadChunk encodes the pairs after the cursor (a counter name) with the wire codec.
func (s *counterSnap) ReadChunk(cursor []byte, maxBytes int) ([]byte, bool, error) {
	i, _ := slices.BinarySearchFunc(s.pairs, string(cursor), func(p pair, name string) int { return cmp.Compare(p.Name, name) })
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

type counterRestore struct {
	c      *counters
	height uint64
	want   wire.Digest
	state  map[string]uint64
	cursor []byte
}

func (c *counters) Restore(height uint64, want wire.Digest) (app.SnapshotRestore, error) {
	return &counterRestore{c: c, height: height, want: want, state: map[string]uint64{}}, nil
}

func (r *counterRestore) Cursor() []byte { return r.cursor }

// Apply checks the chunk from the untrusted peer: it decodes and its names strictly increase.
func (r *counterRestore) Apply(chunk []byte) error {
	var pairs []pair
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

func (r *counterRestore) Finish(app.Writer) error {
	d := digestOf(r.state)
	if d != r.want {
		return app.ErrDigestMismatch
	}
	c := r.c
	c.state, c.height, c.digest = r.state, r.height, d
	return c.TakeSnapshot(r.height) // keep it, to serve it in turn
}

func (r *counterRestore) Abort() error { return nil }

// Example drives an application the way the node does: execute committed blocks in order, commit, snapshot
// at a checkpoint, and restore that snapshot on another replica that fell behind.
func Example() {
	var a app.Application = newCounters()
	for h, ops := range [][]string{{"inc apples", "inc pears"}, {"inc apples", "oops"}, {}} {
		batch := make([]app.Request, len(ops))
		for i, op := range ops {
			batch[i] = app.Request{Client: []byte("client-key"), Op: []byte(op)}
		}
		out, err := a.Execute(uint64(h+1), batch)
		if err != nil {
			panic(err)
		}
		// The node puts out.Digest into the block and commits the block together with the app's writes.
		if err := a.Commit(nil); err != nil {
			panic(err)
		}
		fmt.Printf("block %d: %d results, digest %s\n", h+1, len(out.Results), out.Digest)
	}
	// Checkpoint at height 3: keep a snapshot; a lagging replica copies it chunk by chunk.
	a.TakeSnapshot(3)
	snap, _ := a.OpenSnapshot(3)
	b := newCounters()
	rs, _ := b.Restore(snap.State().Height, snap.State().Digest)
	for more := true; more; {
		var chunk []byte
		chunk, more, _ = snap.ReadChunk(rs.Cursor(), 16)
		if err := rs.Apply(chunk); err != nil {
			panic(err)
		}
	}
	if err := rs.Finish(nil); err != nil {
		panic(err)
	}
	info, _ := b.Info()
	fmt.Printf("restored at height %d, digest %s, apples=%d\n", info.Height, info.Digest, b.state["apples"])
	// Output:
	// block 1: 2 results, digest 0edfac720b9bbb51
	// block 2: 2 results, digest 9312e3381f87204d
	// block 3: 0 results, digest 9312e3381f87204d
	// restored at height 3, digest 9312e3381f87204d, apples=2
}

// The example application passes the conformance checks.
func TestCountersConformance(t *testing.T) {
	apptest.Run(t, func(app.Storage) (app.Application, error) { return newCounters(), nil },
		func(r *rand.Rand) []byte {
			if r.IntN(10) == 0 {
				return []byte("nonsense")
			}
			return []byte(fmt.Sprintf("inc c%d", r.IntN(30)))
		})
}
