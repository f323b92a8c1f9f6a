package kv

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/p2pbft/p2pbft/node/app"
	"github.com/p2pbft/p2pbft/node/app/apptest"
	"github.com/p2pbft/p2pbft/node/store"
	"github.com/p2pbft/p2pbft/wire"
)

// env is a KV on a real store, committed the way the node commits: the app's writes in the block's batch.
type env struct {
	t    testing.TB
	dir  string
	opts store.Options
	st   *store.Store
	kv   *KV
}

// newEnv opens a small store without fsync (these tests are about the app, not durability).
func newEnv(t testing.TB) *env {
	return newEnvOpts(t, store.Options{UnsafeNoSync: true, MemTableSize: 4 << 20, CacheSize: 8 << 20})
}

func newEnvOpts(t testing.TB, opts store.Options) *env {
	t.Helper()
	opts.Logger = slog.New(slog.DiscardHandler)
	e := &env{t: t, dir: t.TempDir(), opts: opts}
	e.open()
	t.Cleanup(func() { e.st.Close() })
	return e
}

func (e *env) open() {
	e.t.Helper()
	st, err := store.Open(e.dir, e.opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.st = st
	if e.kv, err = Open(st.AppStorage()); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) reopen() {
	e.t.Helper()
	if err := e.st.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.open()
}

func (e *env) commit() {
	e.t.Helper()
	b := e.st.NewBatch()
	if err := e.kv.Commit(b.App()); err != nil {
		e.t.Fatal(err)
	}
	if err := b.Commit(); err != nil {
		e.t.Fatal(err)
	}
}

func req(t testing.TB, o Op) app.Request {
	t.Helper()
	b, err := EncodeOp(o)
	if err != nil {
		t.Fatal(err)
	}
	return app.Request{Client: []byte("client"), Op: b}
}

// exec executes one block of ops and returns the decoded results.
func (e *env) exec(ops ...Op) ([]Result, wire.Digest) {
	e.t.Helper()
	batch := make([]app.Request, len(ops))
	for i, o := range ops {
		batch[i] = req(e.t, o)
	}
	out, err := e.kv.Execute(e.kv.executed+1, batch)
	if err != nil {
		e.t.Fatal(err)
	}
	res := make([]Result, len(out.Results))
	for i, r := range out.Results {
		if res[i], err = DecodeResult(r); err != nil {
			e.t.Fatal(err)
		}
	}
	return res, out.Digest
}

// digestOf computes the state digest of a key-value map from scratch.
func digestOf(m map[string]string) wire.Digest {
	var sum, v ltHash
	var eh elemHasher
	for k, val := range m {
		eh.hash(&v, []byte(k), []byte(val))
		sum.add(&v)
	}
	return sum.digest()
}

// storedState reads the state at height straight from storage (newest version <= height of every key).
func storedState(t testing.TB, kv *KV, height uint64) map[string]string {
	t.Helper()
	it, err := kv.st.NewIter(versionsStart(kv.gen), versionsEnd(kv.gen))
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	out := map[string]string{}
	decided := map[string]bool{}
	for ok := it.First(); ok; ok = it.Next() {
		key, h, err := parseVersionKey(kv.gen, it.Key())
		if err != nil {
			t.Fatal(err)
		}
		if h > height || decided[string(key)] {
			continue
		}
		decided[string(key)] = true
		if v := it.Value(); v[0] == tagValue {
			out[string(key)] = string(v[1:])
		}
	}
	return out
}

// countRows counts the records of the current generation with the given kind byte.
func countRows(t testing.TB, kv *KV, kind byte) int {
	t.Helper()
	lo := append(genPrefix(kv.gen), kind)
	it, err := kv.st.NewIter(lo, append(genPrefix(kv.gen), kind+1))
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		n++
	}
	return n
}

func TestOperations(t *testing.T) {
	e := newEnv(t)
	k, v1, v2 := []byte("k"), []byte("v1"), []byte("v2")
	res, _ := e.exec(
		Get(k),
		Put(k, v1),
		Get(k),
		CAS(k, v2, v2),                 // conflict: holds v1
		CAS(k, v1, v2),                 // ok
		CreateIfAbsent(k, v1),          // conflict: exists
		Delete(k),                      // ok
		Delete(k),                      // not found
		CreateIfAbsent(k, v1),          // ok
		Put([]byte("empty"), []byte{}), // empty values are values
		Get([]byte("empty")),
	)
	want := []Result{
		{Status: StatusNotFound},
		{Status: StatusOK},
		{Status: StatusOK, Value: v1, Exists: true},
		{Status: StatusConflict, Value: v1, Exists: true},
		{Status: StatusOK},
		{Status: StatusConflict, Value: v2, Exists: true},
		{Status: StatusOK},
		{Status: StatusNotFound},
		{Status: StatusOK},
		{Status: StatusOK},
		{Status: StatusOK, Value: []byte{}, Exists: true},
	}
	for i := range want {
		if res[i].Status != want[i].Status || !bytes.Equal(res[i].Value, want[i].Value) || res[i].Exists != want[i].Exists {
			t.Errorf("op %d: got %+v, want %+v", i, res[i], want[i])
		}
	}
	// Malformed requests get StatusInvalid and change nothing.
	_, before := e.exec()
	batch := []app.Request{{Op: []byte{0xff}}, {Op: nil}, req(t, Get(k))}
	bad, _ := wire.Marshal(&Op{Type: 9, Key: k})
	batch = append(batch, app.Request{Op: bad})
	out, err := e.kv.Execute(e.kv.executed+1, batch)
	if err != nil {
		t.Fatal(err)
	}
	for i, raw := range out.Results[:len(batch)] {
		r, err := DecodeResult(raw)
		if err != nil {
			t.Fatal(err)
		}
		if (r.Status == StatusInvalid) != (i != 2) {
			t.Errorf("request %d: status %s (%s)", i, r.Status, r.Error)
		}
	}
	if out.Digest != before {
		t.Error("invalid requests changed the digest")
	}
	e.commit()
	if v, ok, h, err := e.kv.Get(k); err != nil || !ok || !bytes.Equal(v, v1) || h != 3 {
		t.Errorf("local Get = %q %v %d %v", v, ok, h, err)
	}
	// Heights must follow.
	if _, err := e.kv.Execute(e.kv.executed+2, nil); !errors.Is(err, app.ErrHeight) {
		t.Errorf("execute with a gap: %v", err)
	}
}

func TestQuery(t *testing.T) {
	e := newEnv(t)
	e.exec(Put([]byte("a"), []byte("1")))
	q, _ := EncodeOp(Get([]byte("a")))
	if ans, h, err := e.kv.Query(q); err != nil || h != 0 {
		t.Fatalf("query before commit: %v %d", err, h)
	} else if r, _ := DecodeResult(ans); r.Status != StatusNotFound {
		t.Fatalf("uncommitted write visible to local reads: %+v", r)
	}
	e.commit()
	ans, h, err := e.kv.Query(q)
	if err != nil || h != 1 {
		t.Fatalf("query: %v %d", err, h)
	}
	if r, _ := DecodeResult(ans); r.Status != StatusOK || string(r.Value) != "1" {
		t.Fatalf("query answer %+v", r)
	}
	put, _ := EncodeOp(Put([]byte("a"), nil))
	if _, _, err := e.kv.Query(put); err == nil {
		t.Fatal("a put was answered as a query")
	}
}

// model is the reference: the state as a map, and its history at every committed height.
type model struct {
	cur     map[string]string
	history map[uint64]map[string]string
}

func (m *model) apply(o Op) {
	k := string(o.Key)
	old, exists := m.cur[k]
	switch o.Type {
	case OpPut:
		m.cur[k] = string(o.Value)
	case OpDelete:
		delete(m.cur, k)
	case OpCAS:
		if o.ExpectAbsent && !exists || !o.ExpectAbsent && exists && old == string(o.Expect) {
			m.cur[k] = string(o.Value)
		}
	}
}

func randomOp(r *rand.Rand, keys int) Op {
	k := []byte(fmt.Sprintf("key-%03d", r.IntN(keys)))
	if r.IntN(20) == 0 {
		k = append(k, 0, byte(r.IntN(3))) // keys with zero bytes exercise the escaping
	}
	v := []byte(fmt.Sprintf("v%d", r.IntN(8)))
	switch r.IntN(10) {
	case 0, 1:
		return Delete(k)
	case 2:
		return Get(k)
	case 3:
		return CAS(k, []byte(fmt.Sprintf("v%d", r.IntN(8))), v)
	case 4:
		return CreateIfAbsent(k, v)
	default:
		return Put(k, v)
	}
}

// TestPropertyDigestAndSnapshots runs random blocks with random commit grouping and random snapshots taken
// and released, and checks after every commit: the incremental digest equals the digest computed from
// scratch, the stored state equals the model at the committed height and at every kept snapshot, local reads
// agree, and garbage stays bounded.
func TestPropertyDigestAndSnapshots(t *testing.T) {
	for run := 0; run < 4; run++ {
		seed := rand.Uint64()
		t.Run(fmt.Sprint(run), func(t *testing.T) {
			t.Logf("seed %d", seed)
			r := rand.New(rand.NewPCG(seed, 7))
			e := newEnv(t)
			m := &model{cur: map[string]string{}, history: map[uint64]map[string]string{0: {}}}
			keys := 5 + r.IntN(60)
			for block := 0; block < 150; block++ {
				ops := make([]Op, r.IntN(12))
				for i := range ops {
					ops[i] = randomOp(r, keys)
					m.apply(ops[i])
				}
				_, d := e.exec(ops...)
				if want := digestOf(m.cur); d != want {
					t.Fatalf("seed %d block %d: incremental digest %s, from scratch %s", seed, e.kv.executed, d, want)
				}
				m.history[e.kv.executed] = maps.Clone(m.cur)
				if r.IntN(3) > 0 {
					continue // commit several blocks at once
				}
				e.commit()
				h := e.kv.committed.Height
				if r.IntN(4) == 0 {
					if err := e.kv.TakeSnapshot(h); err != nil {
						t.Fatal(err)
					}
				}
				pins, _ := e.kv.Snapshots()
				if len(pins) > 0 && r.IntN(3) == 0 {
					if err := e.kv.ReleaseSnapshot(pins[r.IntN(len(pins))].Height); err != nil {
						t.Fatal(err)
					}
				}
				if r.IntN(25) == 0 {
					e.reopen()
				}
				checkState(t, seed, e, m)
			}
			// Releasing every snapshot leaves exactly one version per live key and no garbage.
			pins, _ := e.kv.Snapshots()
			for _, p := range pins {
				if err := e.kv.ReleaseSnapshot(p.Height); err != nil {
					t.Fatal(err)
				}
			}
			e.commit()
			if n, want := countRows(t, e.kv, 'V'), len(storedState(t, e.kv, e.kv.committed.Height)); n != want {
				t.Errorf("seed %d: %d stored versions for %d live keys after releasing all snapshots", seed, n, want)
			}
			if n := countRows(t, e.kv, 'Q'); n != 0 {
				t.Errorf("seed %d: %d garbage records left", seed, n)
			}
		})
	}
}

func checkState(t *testing.T, seed uint64, e *env, m *model) {
	t.Helper()
	h := e.kv.committed.Height
	want := m.history[h]
	got := storedState(t, e.kv, h)
	if !maps.Equal(got, want) {
		t.Fatalf("seed %d height %d: stored state %v, model %v", seed, h, got, want)
	}
	if e.kv.committed.Digest != digestOf(want) {
		t.Fatalf("seed %d height %d: committed digest differs from scratch", seed, h)
	}
	for k, v := range want {
		got, ok, gh, err := e.kv.Get([]byte(k))
		if err != nil || !ok || string(got) != v || gh != h {
			t.Fatalf("seed %d: Get(%q) = %q %v %d %v, want %q at %d", seed, k, got, ok, gh, err, v, h)
		}
	}
	pins, _ := e.kv.Snapshots()
	for _, p := range pins {
		if got := storedState(t, e.kv, p.Height); !maps.Equal(got, m.history[p.Height]) {
			t.Fatalf("seed %d: snapshot %d reads %v, model %v", seed, p.Height, got, m.history[p.Height])
		}
		if p.Digest != digestOf(m.history[p.Height]) {
			t.Fatalf("seed %d: snapshot %d digest differs from scratch", seed, p.Height)
		}
	}
}

func TestDigestOrderIndependent(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 3))
	pairs := map[string]string{}
	for i := 0; i < 300; i++ {
		pairs[fmt.Sprintf("k%d", r.IntN(1000))] = fmt.Sprintf("v%d", r.Uint32())
	}
	keys := slices.Sorted(maps.Keys(pairs))
	var digests []wire.Digest
	for trial := 0; trial < 3; trial++ {
		e := newEnv(t)
		order := slices.Clone(keys)
		r.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		// Different orders, different block boundaries, and detours (a key set, deleted, set again).
		var block []Op
		for _, k := range order {
			if r.IntN(4) == 0 {
				block = append(block, Put([]byte(k), []byte("detour")), Delete([]byte(k)))
			}
			block = append(block, Put([]byte(k), []byte(pairs[k])))
			if r.IntN(10) == 0 {
				e.exec(block...)
				block = nil
			}
		}
		_, d := e.exec(block...)
		e.commit()
		digests = append(digests, d)
	}
	if digests[0] != digests[1] || digests[1] != digests[2] {
		t.Fatalf("seed %d: same state, different digests %v", seed, digests)
	}
	if digests[0] != digestOf(pairs) {
		t.Fatalf("seed %d: digest differs from scratch", seed)
	}
	// Any change of content changes the digest, and undoing it restores it.
	e := newEnv(t)
	_, d0 := e.exec()
	_, d1 := e.exec(Put([]byte("a"), []byte("1")))
	_, d2 := e.exec(Put([]byte("a"), []byte("2")))
	_, d3 := e.exec(Put([]byte("a"), []byte("1")))
	_, d4 := e.exec(Delete([]byte("a")))
	if d0 == d1 || d1 == d2 || d1 != d3 || d4 != d0 {
		t.Fatalf("digests %v %v %v %v %v", d0, d1, d2, d3, d4)
	}
}

// transfer streams snapshot snap into a fresh KV with chunks of about maxBytes.
func transfer(t *testing.T, snap app.Snapshot, dst *env, maxBytes int) (chunks int) {
	t.Helper()
	s := snap.State()
	rs, err := dst.kv.Restore(s.Height, s.Digest)
	if err != nil {
		t.Fatal(err)
	}
	for more := true; more; {
		var data []byte
		before := rs.Cursor()
		data, more, err = snap.ReadChunk(rs.Cursor(), maxBytes)
		if err != nil {
			t.Fatal(err)
		}
		if err := rs.Apply(data); err != nil {
			t.Fatal(err)
		}
		chunks++
		if more && bytes.Equal(before, rs.Cursor()) {
			t.Fatal("a chunk made no progress")
		}
	}
	b := dst.st.NewBatch()
	if err := rs.Finish(b.App()); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	return chunks
}

func TestSnapshotRestoreWhileExecutionContinues(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 11))
	src := newEnv(t)
	m := &model{cur: map[string]string{}}
	for i := 0; i < 20; i++ {
		ops := make([]Op, 50)
		for j := range ops {
			ops[j] = Put([]byte(fmt.Sprintf("key-%04d", r.IntN(800))), bytes.Repeat([]byte{byte(r.Uint32())}, r.IntN(300)))
			m.apply(ops[j])
		}
		src.exec(ops...)
		src.commit()
	}
	snapHeight := src.kv.committed.Height
	want := maps.Clone(m.cur)
	if err := src.kv.TakeSnapshot(snapHeight); err != nil {
		t.Fatal(err)
	}
	snap, err := src.kv.OpenSnapshot(snapHeight)
	if err != nil {
		t.Fatal(err)
	}
	// Execution goes on: overwrites, deletes, new keys.
	for i := 0; i < 10; i++ {
		ops := make([]Op, 60)
		for j := range ops {
			ops[j] = randomOp(r, 900)
			m.apply(ops[j])
		}
		src.exec(ops...)
		src.commit()
	}
	dst := newEnv(t)
	dst.exec(Put([]byte("stale"), []byte("state the restore must replace")))
	dst.commit()
	n := transfer(t, snap, dst, 2000)
	if n < 10 {
		t.Errorf("only %d chunks of ~2000 bytes for a %d-key state", n, len(want))
	}
	if st, _ := dst.kv.Info(); st.Height != snapHeight || st.Digest != snap.State().Digest || st.Digest != digestOf(want) {
		t.Fatalf("restored state %+v, want height %d digest %s", st, snapHeight, digestOf(want))
	}
	if got := storedState(t, dst.kv, snapHeight); !maps.Equal(got, want) {
		t.Fatalf("restored state differs from the state at the snapshot")
	}
	if _, ok, _, _ := dst.kv.Get([]byte("stale")); ok {
		t.Fatal("the old state survived the restore")
	}
	// The restored replica keeps the snapshot (it can serve it) and survives a restart.
	dst.reopen()
	if pins, _ := dst.kv.Snapshots(); len(pins) != 1 || pins[0].Height != snapHeight {
		t.Fatalf("restored replica keeps snapshots %v", pins)
	}
	if got := storedState(t, dst.kv, snapHeight); !maps.Equal(got, want) {
		t.Fatal("restored state lost on reopen")
	}
	// Both replicas execute the same next blocks to the same digests.
	for i := 0; i < 3; i++ {
		ops := []Op{randomOp(r, 900), randomOp(r, 900)}
		_, d := dst.exec(ops...)
		dst.commit()
		mm := &model{cur: want}
		for _, o := range ops {
			mm.apply(o)
		}
		if d != digestOf(mm.cur) {
			t.Fatal("restored replica computes a wrong digest afterwards")
		}
	}
	// A released snapshot can no longer be read.
	if err := src.kv.ReleaseSnapshot(snapHeight); err != nil {
		t.Fatal(err)
	}
	if _, _, err := snap.ReadChunk(nil, 1000); !errors.Is(err, app.ErrNoSnapshot) {
		t.Fatalf("read of a released snapshot: %v", err)
	}
	if _, err := src.kv.OpenSnapshot(snapHeight); !errors.Is(err, app.ErrNoSnapshot) {
		t.Fatalf("open of a released snapshot: %v", err)
	}
}

func TestRestoreRejectsBadInput(t *testing.T) {
	src := newEnv(t)
	src.exec(Put([]byte("a"), []byte("1")), Put([]byte("b"), []byte("2")), Put([]byte("c"), []byte("3")))
	src.commit()
	if err := src.kv.TakeSnapshot(1); err != nil {
		t.Fatal(err)
	}
	snap, _ := src.kv.OpenSnapshot(1)
	good, _, err := snap.ReadChunk(nil, 1<<20)
	if err != nil {
		t.Fatal(err)
	}

	dst := newEnv(t)
	dst.exec(Put([]byte("mine"), []byte("x")))
	dst.commit()
	before, _ := dst.kv.Info()

	// A digest mismatch (a peer sending a different state) is caught at Finish.
	rs, err := dst.kv.Restore(1, wire.Digest{1})
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Apply(good); err != nil {
		t.Fatal(err)
	}
	if err := rs.Finish(dst.st.NewBatch().App()); !errors.Is(err, app.ErrDigestMismatch) {
		t.Fatalf("finish with a wrong digest: %v", err)
	}
	if err := rs.Abort(); err != nil {
		t.Fatal(err)
	}

	rs, err = dst.kv.Restore(1, snap.State().Digest)
	if err != nil {
		t.Fatal(err)
	}
	bad := map[string][]byte{
		"garbage":    {0xff, 0x00},
		"unordered":  mustMarshal(t, chunk{Entries: []chunkEntry{{Key: []byte("b")}, {Key: []byte("a")}}}),
		"duplicate":  mustMarshal(t, chunk{Entries: []chunkEntry{{Key: []byte("a")}, {Key: []byte("a")}}}),
		"empty key":  mustMarshal(t, chunk{Entries: []chunkEntry{{Key: nil}}}),
		"long key":   mustMarshal(t, chunk{Entries: []chunkEntry{{Key: make([]byte, MaxKeySize+1)}}}),
		"long value": mustMarshal(t, chunk{Entries: []chunkEntry{{Key: []byte("k"), Value: make([]byte, MaxValueSize+1)}}}),
	}
	for name, data := range bad {
		if err := rs.Apply(data); !errors.Is(err, app.ErrBadChunk) {
			t.Errorf("%s chunk: %v", name, err)
		}
	}
	if err := rs.Apply(good); err != nil {
		t.Fatal(err)
	}
	// A chunk that goes back before the cursor is refused.
	if err := rs.Apply(good); !errors.Is(err, app.ErrBadChunk) {
		t.Errorf("replayed chunk: %v", err)
	}
	if _, err := dst.kv.Execute(before.Height+1, nil); err == nil {
		t.Error("execute during a restore")
	}
	if err := rs.Abort(); err != nil {
		t.Fatal(err)
	}
	// Nothing changed.
	if st, _ := dst.kv.Info(); st != before {
		t.Fatalf("aborted restores changed the state: %+v -> %+v", before, st)
	}
	if v, ok, _, _ := dst.kv.Get([]byte("mine")); !ok || string(v) != "x" {
		t.Fatal("aborted restores changed the data")
	}
	dst.reopen()
	if st, _ := dst.kv.Info(); st != before {
		t.Fatal("aborted restores changed the state after reopen")
	}
	if n := countRows(t, dst.kv, 'V'); n != 1 {
		t.Fatalf("%d versions after aborted restores, want 1", n)
	}
}

// TestInterruptedRestoreIsDropped: a restore whose Finish never became durable leaves no trace on reopen.
func TestInterruptedRestoreIsDropped(t *testing.T) {
	src := newEnv(t)
	src.exec(Put([]byte("a"), []byte("1")))
	src.commit()
	src.kv.TakeSnapshot(1)
	snap, _ := src.kv.OpenSnapshot(1)
	data, _, _ := snap.ReadChunk(nil, 1<<20)

	dst := newEnv(t)
	rs, err := dst.kv.Restore(1, snap.State().Digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Apply(data); err != nil {
		t.Fatal(err)
	}
	dst.reopen() // "crash" before Finish
	if st, _ := dst.kv.Info(); st.Height != 0 {
		t.Fatalf("state after an interrupted restore: %+v", st)
	}
	it, _ := dst.kv.st.NewIter([]byte{'G'}, []byte{'H'})
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		t.Fatalf("leftover record %x", it.Key())
	}
}

func TestEmptySnapshot(t *testing.T) {
	src := newEnv(t)
	src.exec()
	src.commit()
	if err := src.kv.TakeSnapshot(1); err != nil {
		t.Fatal(err)
	}
	if err := src.kv.TakeSnapshot(0); !errors.Is(err, app.ErrHeight) {
		t.Fatalf("snapshot below the committed height: %v", err)
	}
	snap, _ := src.kv.OpenSnapshot(1)
	dst := newEnv(t)
	transfer(t, snap, dst, 100)
	if st, _ := dst.kv.Info(); st.Height != 1 || st.Digest != digestOf(nil) {
		t.Fatalf("restored empty state %+v", st)
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := wire.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestConformance runs the application contract checks of package apptest.
func TestConformance(t *testing.T) {
	apptest.Run(t, func(st app.Storage) (app.Application, error) { return Open(st) },
		func(r *rand.Rand) []byte {
			if r.IntN(15) == 0 {
				return []byte{0xff, byte(r.IntN(256))} // malformed
			}
			b, _ := EncodeOp(randomOp(r, 40))
			return b
		})
}

// TestConcurrentReaders streams a snapshot and serves local reads from other goroutines while blocks are
// executed and committed and snapshots come and go (run with -race).
func TestConcurrentReaders(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 5))
	e := newEnv(t)
	m := &model{cur: map[string]string{}}
	for i := 0; i < 10; i++ {
		ops := make([]Op, 40)
		for j := range ops {
			ops[j] = Put([]byte(fmt.Sprintf("key-%03d", r.IntN(400))), []byte(fmt.Sprint(r.Uint32())))
			m.apply(ops[j])
		}
		e.exec(ops...)
		e.commit()
	}
	at := e.kv.committed
	want := maps.Clone(m.cur)
	if err := e.kv.TakeSnapshot(at.Height); err != nil {
		t.Fatal(err)
	}
	snap, err := e.kv.OpenSnapshot(at.Height)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	go func() { // a peer copying the snapshot, in small chunks
		got := map[string]string{}
		var cursor []byte
		for more := true; more; {
			data, m, err := snap.ReadChunk(cursor, 300)
			if err != nil {
				done <- err
				return
			}
			more = m
			entries, err := decodeChunk(data, cursor)
			if err != nil {
				done <- err
				return
			}
			for _, en := range entries {
				got[string(en.Key)] = string(en.Value)
			}
			if len(entries) > 0 {
				cursor = entries[len(entries)-1].Key
			}
		}
		if !maps.Equal(got, want) {
			done <- fmt.Errorf("streamed snapshot differs from the state at %d", at.Height)
			return
		}
		done <- nil
	}()
	go func() { // local queries: every answer must be a committed value of its key
		for i := 0; i < 300; i++ {
			k := []byte(fmt.Sprintf("key-%03d", i%400))
			if _, _, h, err := e.kv.Get(k); err != nil || h < at.Height {
				done <- fmt.Errorf("Get: height %d, %v", h, err)
				return
			}
		}
		done <- nil
	}()
	for i := 0; i < 30; i++ {
		ops := make([]Op, 30)
		for j := range ops {
			ops[j] = randomOp(r, 400)
		}
		e.exec(ops...)
		e.commit()
		if i%10 == 9 {
			e.kv.TakeSnapshot(e.kv.committed.Height)
		}
	}
	for i := 0; i < 2; i++ {
		if err := <-done; err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
	}
}
