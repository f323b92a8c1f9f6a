// Package apptest checks that an app.Application keeps the contract the node relies on: deterministic
// execution, digests that track the state, exact snapshots that can be streamed to another replica while
// execution goes on, restores that check their digest, and a committed state that survives a restart (or,
// for a volatile application, a restart from zero that replays to the same digests).
//
// Use it from your application's tests:
//
//	func TestConformance(t *testing.T) {
//		apptest.Run(t, func(st app.Storage) (app.Application, error) { return myapp.Open(st) },
//			func(r *rand.Rand) []byte { return myapp.RandomOp(r) })
//	}
//
// It runs the application on real stores (package store) in temporary directories, driven the way the node
// drives it: Execute, then Commit into the block's batch, one fsynced batch per step.
package apptest

import (
	"bytes"
	"errors"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"

	"github.com/p2pbft/p2pbft/node/app"
	"github.com/p2pbft/p2pbft/node/store"
	"github.com/p2pbft/p2pbft/wire"
)

// Factory opens the application on the storage the node lends it.
type Factory func(st app.Storage) (app.Application, error)

// OpGen returns one random operation of the application (valid or not: both must be handled).
type OpGen func(r *rand.Rand) []byte

// replica is one application on its own store.
type replica struct {
	t    *testing.T
	open Factory
	dir  string
	st   *store.Store
	app  app.Application
	// executed is the last height executed; the node would track this.
	executed uint64
}

func newReplica(t *testing.T, open Factory) *replica {
	t.Helper()
	r := &replica{t: t, open: open, dir: t.TempDir()}
	r.start()
	t.Cleanup(func() { r.st.Close() })
	return r
}

func (r *replica) start() {
	r.t.Helper()
	st, err := store.Open(r.dir, store.Options{Logger: slog.New(slog.DiscardHandler), UnsafeNoSync: true, MemTableSize: 4 << 20, CacheSize: 8 << 20})
	if err != nil {
		r.t.Fatal(err)
	}
	r.st = st
	if r.app, err = r.open(st.AppStorage()); err != nil {
		r.t.Fatalf("open application: %v", err)
	}
	info, err := r.app.Info()
	if err != nil {
		r.t.Fatalf("Info: %v", err)
	}
	r.executed = info.Height
}

func (r *replica) restart() {
	r.t.Helper()
	if err := r.st.Close(); err != nil {
		r.t.Fatal(err)
	}
	r.start()
}

func (r *replica) execute(batch []app.Request) app.Outcome {
	r.t.Helper()
	out, err := r.app.Execute(r.executed+1, batch)
	if err != nil {
		r.t.Fatalf("Execute(%d): %v", r.executed+1, err)
	}
	if len(out.Results) != len(batch) {
		r.t.Fatalf("Execute(%d): %d results for %d requests", r.executed+1, len(out.Results), len(batch))
	}
	r.executed++
	return out
}

func (r *replica) commit() {
	r.t.Helper()
	b := r.st.NewBatch()
	if err := r.app.Commit(b.App()); err != nil {
		r.t.Fatalf("Commit: %v", err)
	}
	if err := b.Commit(); err != nil {
		r.t.Fatal(err)
	}
}

func randomBatch(r *rand.Rand, gen OpGen) []app.Request {
	n := r.IntN(20)
	if r.IntN(8) == 0 {
		n = 0
	}
	batch := make([]app.Request, n)
	for i := range batch {
		batch[i] = app.Request{Client: []byte{byte(r.IntN(4))}, Op: gen(r)}
	}
	return batch
}

// SeedEnv names the environment variable that fixes the seed of the random blocks (to replay a failure).
const SeedEnv = "P2PBFT_APPTEST_SEED"

// Run runs the conformance checks as subtests. The seed is logged and repeated in failure messages.
func Run(t *testing.T, open Factory, gen OpGen) {
	seed := rand.Uint64()
	if s := os.Getenv(SeedEnv); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("%s=%q: %v", SeedEnv, s, err)
		}
	}
	t.Logf("apptest seed %d (replay with %s=%d)", seed, SeedEnv, seed)
	t.Run("Determinism", func(t *testing.T) { determinism(t, seed, open, gen) })
	t.Run("SnapshotRestore", func(t *testing.T) { snapshotRestore(t, seed, open, gen) })
	t.Run("RestoreChecksDigest", func(t *testing.T) { restoreChecksDigest(t, seed, open, gen) })
	t.Run("Restart", func(t *testing.T) { restart(t, seed, open, gen) })
}

// determinism: two replicas fed the same blocks, committed at different moments, agree on every result
// and digest; Info reports the last committed block; a null batch changes no digest; heights must follow.
func determinism(t *testing.T, seed uint64, open Factory, gen OpGen) {
	r := rand.New(rand.NewPCG(seed, 1))
	a, b := newReplica(t, open), newReplica(t, open)
	var last wire.Digest
	for h := 1; h <= 60; h++ {
		batch := randomBatch(r, gen)
		oa, ob := a.execute(batch), b.execute(batch)
		if oa.Digest != ob.Digest {
			t.Fatalf("seed %d: block %d: digests differ between replicas", seed, h)
		}
		for i := range oa.Results {
			if !bytes.Equal(oa.Results[i], ob.Results[i]) {
				t.Fatalf("seed %d: block %d request %d: results differ between replicas", seed, h, i)
			}
		}
		if len(batch) == 0 && h > 1 && oa.Digest != last {
			t.Fatalf("seed %d: block %d: a null batch changed the digest", seed, h)
		}
		last = oa.Digest
		a.commit()
		if r.IntN(3) == 0 {
			b.commit()
		}
		if info, err := a.app.Info(); err != nil || info.Height != uint64(h) || info.Digest != oa.Digest {
			t.Fatalf("seed %d: after commit of block %d Info = %+v, %v", seed, h, info, err)
		}
	}
	if _, err := a.app.Execute(a.executed+2, nil); err == nil {
		t.Fatalf("Execute accepted a height gap")
	}
	if _, err := a.app.Execute(a.executed, nil); err == nil {
		t.Fatalf("Execute accepted a height it already executed")
	}
}

// snapshotRestore: a snapshot taken at a height still reads exactly that state after more blocks; streamed
// in small chunks into a fresh replica, it restores that state (Info and digest), and the restored replica
// then executes the following blocks to the same digests as the source did.
func snapshotRestore(t *testing.T, seed uint64, open Factory, gen OpGen) {
	r := rand.New(rand.NewPCG(seed, 2))
	src := newReplica(t, open)
	for h := 1; h <= 30; h++ {
		src.execute(randomBatch(r, gen))
		src.commit()
	}
	at, _ := src.app.Info()
	if err := src.app.TakeSnapshot(at.Height); err != nil {
		t.Fatalf("TakeSnapshot: %v", err)
	}
	var later [][]app.Request
	var digests []wire.Digest
	for h := 0; h < 20; h++ {
		batch := randomBatch(r, gen)
		later = append(later, batch)
		digests = append(digests, src.execute(batch).Digest)
		src.commit()
	}
	snaps, err := src.app.Snapshots()
	if err != nil || len(snaps) == 0 || snaps[len(snaps)-1] != at {
		t.Fatalf("Snapshots() = %v, %v; want it to list %+v", snaps, err, at)
	}
	snap, err := src.app.OpenSnapshot(at.Height)
	if err != nil {
		t.Fatalf("OpenSnapshot: %v", err)
	}
	if snap.State() != at {
		t.Fatalf("snapshot state %+v, want %+v", snap.State(), at)
	}
	dst := newReplica(t, open)
	dst.execute(randomBatch(r, gen)) // some state of its own, to be replaced
	dst.commit()
	rs, err := dst.app.Restore(at.Height, at.Digest)
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	for more, chunks := true, 0; more; chunks++ {
		if chunks > 1_000_000 {
			t.Fatal("snapshot never ends")
		}
		before := bytes.Clone(rs.Cursor())
		var data []byte
		data, more, err = snap.ReadChunk(rs.Cursor(), 256)
		if err != nil {
			t.Fatalf("ReadChunk: %v", err)
		}
		if err := rs.Apply(data); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		if more && bytes.Equal(before, rs.Cursor()) {
			t.Fatal("a chunk that is not the last did not move the cursor")
		}
	}
	snap.Close()
	b := dst.st.NewBatch()
	if err := rs.Finish(b.App()); err != nil {
		t.Fatalf("Finish: %v", err)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if info, err := dst.app.Info(); err != nil || info != at {
		t.Fatalf("restored Info = %+v, %v; want %+v", info, err, at)
	}
	dst.executed = at.Height
	for i, batch := range later {
		if d := dst.execute(batch).Digest; d != digests[i] {
			t.Fatalf("seed %d: restored replica's block %d digest differs from the source's", seed, at.Height+uint64(i)+1)
		}
		dst.commit()
	}
	if err := src.app.ReleaseSnapshot(at.Height); err != nil {
		t.Fatalf("ReleaseSnapshot: %v", err)
	}
	if _, err := src.app.OpenSnapshot(at.Height); !errors.Is(err, app.ErrNoSnapshot) {
		t.Fatalf("OpenSnapshot of a released snapshot: %v, want ErrNoSnapshot", err)
	}
}

// restoreChecksDigest: a restore that does not produce the certified digest is refused at Finish, and
// aborting it leaves the state as it was.
func restoreChecksDigest(t *testing.T, seed uint64, open Factory, gen OpGen) {
	r := rand.New(rand.NewPCG(seed, 3))
	src := newReplica(t, open)
	for h := 1; h <= 5; h++ {
		src.execute(randomBatch(r, gen))
		src.commit()
	}
	at, _ := src.app.Info()
	if err := src.app.TakeSnapshot(at.Height); err != nil {
		t.Fatal(err)
	}
	snap, err := src.app.OpenSnapshot(at.Height)
	if err != nil {
		t.Fatal(err)
	}
	dst := newReplica(t, open)
	dst.execute(randomBatch(r, gen))
	dst.commit()
	before, _ := dst.app.Info()
	wrong := at.Digest
	wrong[0] ^= 1
	rs, err := dst.app.Restore(at.Height, wrong)
	if err != nil {
		t.Fatal(err)
	}
	for more := true; more; {
		var data []byte
		if data, more, err = snap.ReadChunk(rs.Cursor(), 1<<20); err != nil {
			t.Fatal(err)
		}
		if err := rs.Apply(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := rs.Finish(dst.st.NewBatch().App()); !errors.Is(err, app.ErrDigestMismatch) {
		t.Fatalf("Finish with the wrong digest: %v, want ErrDigestMismatch", err)
	}
	if err := rs.Abort(); err != nil {
		t.Fatalf("Abort: %v", err)
	}
	if info, _ := dst.app.Info(); info != before {
		t.Fatalf("a refused restore changed the state: %+v -> %+v", before, info)
	}
	// The replica goes on executing normally.
	dst.execute(nil)
	dst.commit()
}

// restart: after a restart the application reports either the last committed block (durable) or a lower
// height from which replaying the same blocks reproduces the same digests (volatile).
func restart(t *testing.T, seed uint64, open Factory, gen OpGen) {
	r := rand.New(rand.NewPCG(seed, 4))
	a := newReplica(t, open)
	var blocks [][]app.Request
	var digests []wire.Digest
	for h := 1; h <= 25; h++ {
		batch := randomBatch(r, gen)
		blocks = append(blocks, batch)
		digests = append(digests, a.execute(batch).Digest)
		a.commit()
	}
	// An executed but uncommitted block is lost in a crash.
	a.execute(randomBatch(r, gen))
	a.restart()
	info, err := a.app.Info()
	if err != nil {
		t.Fatal(err)
	}
	if info.Height > uint64(len(blocks)) {
		t.Fatalf("after restart Info reports height %d; only %d blocks were committed", info.Height, len(blocks))
	}
	if info.Height > 0 && info.Digest != digests[info.Height-1] {
		t.Fatalf("after restart Info reports the wrong digest for height %d", info.Height)
	}
	for h := info.Height + 1; h <= uint64(len(blocks)); h++ {
		if d := a.execute(blocks[h-1]).Digest; d != digests[h-1] {
			t.Fatalf("seed %d: replay of block %d after restart gives another digest", seed, h)
		}
		a.commit()
	}
}
