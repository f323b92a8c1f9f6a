package kv

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/p2pbft/p2pbft/node/app"
)

// cacheVariant is a bound of the item cache under test.
type cacheVariant struct {
	name            string
	items, itemSize int
}

var cacheVariants = []cacheVariant{
	{"none", 0, 0}, // every item dropped at commit: each block reads the store, as before the cache
	{"tiny", 3, 600},
	{"mid", 20, 1 << 20}, // the state fits at some restarts and not at others
	{"default", defaultMaxItems, defaultMaxItemBytes},
}

// open replaces e.kv with a KV on the same store with these bounds.
func (c cacheVariant) open(t *testing.T, e *env) {
	t.Helper()
	var err error
	if e.kv, err = openBounded(e.st.AppStorage(), c.items, c.itemSize); err != nil {
		t.Fatal(err)
	}
}

// TestItemCacheChangesNothing runs the same random blocks (puts, deletes, gets, compare-and-sets, invalid
// operations, empty values and values up to a few hundred bytes) on KVs that differ only in the bounds of
// their item cache, with random commit grouping, snapshots taken and released (garbage collection),
// restarts and restores to an older snapshot, and checks that results and digests are identical at every block, and after every
// commit that the stores hold identical records, that local reads agree, and that every cached item equals
// what the store holds.
func TestItemCacheChangesNothing(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3, 4, 5, 6} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 11))
			envs := make([]*env, len(cacheVariants))
			for i, c := range cacheVariants {
				envs[i] = newEnv(t)
				c.open(t, envs[i])
			}
			keys := 5 + r.IntN(40)
			restores, collected := 0, 0
			for block := 0; block < 250; block++ {
				batch := make([]app.Request, r.IntN(16))
				for i := range batch {
					switch r.IntN(25) {
					case 0:
						batch[i] = app.Request{Op: []byte{0xff}} // malformed
					case 1, 2:
						v := make([]byte, 100+r.IntN(300))
						for j := range v {
							v[j] = byte(r.IntN(4))
						}
						batch[i] = req(t, Put([]byte(fmt.Sprintf("key-%03d", r.IntN(keys))), v))
					case 3:
						batch[i] = req(t, Put([]byte(fmt.Sprintf("key-%03d", r.IntN(keys))), nil)) // empty value
					default:
						batch[i] = req(t, randomOp(r, keys))
					}
				}
				var first app.Outcome
				for i, e := range envs {
					out, err := e.kv.Execute(e.kv.executed+1, batch)
					if err != nil {
						t.Fatalf("seed %d block %d, cache %s: %v", seed, block, cacheVariants[i].name, err)
					}
					if i == 0 {
						first = out
						continue
					}
					if out.Digest != first.Digest {
						t.Fatalf("seed %d block %d: cache %s digest %s, without cache %s", seed, block, cacheVariants[i].name, out.Digest, first.Digest)
					}
					for j := range out.Results {
						if !bytes.Equal(out.Results[j], first.Results[j]) {
							t.Fatalf("seed %d block %d request %d: cache %s result %x, without cache %x", seed, block, j, cacheVariants[i].name, out.Results[j], first.Results[j])
						}
					}
				}
				if r.IntN(3) > 0 {
					continue
				}
				for _, e := range envs {
					e.commit()
				}
				h := envs[0].kv.committed.Height
				if r.IntN(4) == 0 {
					for _, e := range envs {
						if err := e.kv.TakeSnapshot(h); err != nil {
							t.Fatal(err)
						}
					}
				}
				pins, _ := envs[0].kv.Snapshots()
				if len(pins) > 1 && r.IntN(3) == 0 {
					p := pins[r.IntN(len(pins))].Height
					for _, e := range envs {
						before := countRows(t, e.kv, 'V')
						if err := e.kv.ReleaseSnapshot(p); err != nil {
							t.Fatal(err)
						}
						collected += before - countRows(t, e.kv, 'V')
					}
				}
				pins, _ = envs[0].kv.Snapshots()
				if len(pins) > 0 && pins[0].Height < h && r.IntN(12) == 0 {
					restoreAll(t, envs, pins[0], 1+r.IntN(300))
					restores++
				}
				if r.IntN(15) == 0 {
					i := r.IntN(len(envs))
					envs[i].reopen()
					cacheVariants[i].open(t, envs[i])
				}
				compareEnvs(t, seed, envs, r)
			}
			if restores == 0 || collected == 0 {
				t.Fatalf("seed %d: %d restores, %d versions collected: the run does not exercise the cache's invalidation", seed, restores, collected)
			}
		})
	}
}

// restoreAll restores every env to the snapshot p of envs[0], read in chunks of about maxBytes before the
// first restore starts (envs[0] restores its own snapshot too).
func restoreAll(t *testing.T, envs []*env, p app.State, maxBytes int) {
	t.Helper()
	snap, err := envs[0].kv.OpenSnapshot(p.Height)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	var chunks [][]byte
	var cursor []byte
	for more := true; more; {
		var data []byte
		if data, more, err = snap.ReadChunk(cursor, maxBytes); err != nil {
			t.Fatal(err)
		}
		chunks = append(chunks, data)
		entries, err := decodeChunk(data, cursor)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) > 0 {
			cursor = entries[len(entries)-1].Key
		}
	}
	for _, e := range envs {
		rs, err := e.kv.Restore(p.Height, p.Digest)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range chunks {
			if err := rs.Apply(c); err != nil {
				t.Fatal(err)
			}
		}
		b := e.st.NewBatch()
		if err := rs.Finish(b.App()); err != nil {
			t.Fatal(err)
		}
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
	}
}

// compareEnvs checks committed KVs: identical store records and local reads, and exact items within
// their bounds.
func compareEnvs(t *testing.T, seed uint64, envs []*env, r *rand.Rand) {
	t.Helper()
	want := storeRecords(t, envs[0].kv)
	for i, e := range envs {
		if i > 0 {
			if got := storeRecords(t, e.kv); !equalRecords(got, want) {
				t.Fatalf("seed %d height %d: the store of cache %s holds %d records that differ from the %d without cache", seed, e.kv.committed.Height, cacheVariants[i].name, len(got), len(want))
			}
		}
		checkItems(t, seed, e.kv)
	}
	for range 4 {
		key := []byte(fmt.Sprintf("key-%03d", r.IntN(50)))
		v0, ok0, h0, err := envs[0].kv.Get(key)
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range envs[1:] {
			v, ok, h, err := e.kv.Get(key)
			if err != nil || ok != ok0 || h != h0 || !bytes.Equal(v, v0) {
				t.Fatalf("seed %d: cache %s Get(%q) = %q %v %d %v, without cache %q %v %d", seed, cacheVariants[i+1].name, key, v, ok, h, err, v0, ok0, h0)
			}
		}
	}
}

// storeRecords returns every record of the app's namespace, in key order.
func storeRecords(t *testing.T, kv *KV) [][2][]byte {
	t.Helper()
	it, err := kv.st.NewIter(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var out [][2][]byte
	for ok := it.First(); ok; ok = it.Next() {
		out = append(out, [2][]byte{bytes.Clone(it.Key()), bytes.Clone(it.Value())})
	}
	if err := it.Error(); err != nil {
		t.Fatal(err)
	}
	return out
}

func equalRecords(a, b [][2][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i][0], b[i][0]) || !bytes.Equal(a[i][1], b[i][1]) {
			return false
		}
	}
	return true
}

// checkItems checks, for a KV with nothing pending, that every item equals a fresh read of the store and
// that the items are within their bounds.
func checkItems(t *testing.T, seed uint64, kv *KV) {
	t.Helper()
	if len(kv.pending) != 0 {
		t.Fatal("checkItems with pending blocks")
	}
	lo, hi := genBounds(kv.gen)
	iter, err := kv.st.NewIter(lo, hi)
	if err != nil {
		t.Fatal(err)
	}
	defer iter.Close()
	size := 0
	for k, it := range kv.items {
		if k != it.key {
			t.Fatalf("seed %d: item of %q filed under %q", seed, it.key, k)
		}
		fresh, err := kv.readLatest(iter, []byte(k))
		if err != nil {
			t.Fatal(err)
		}
		// nil and empty values differ in an encoded result.
		if it.exists != fresh.exists || !bytes.Equal(it.value, fresh.value) || (it.value == nil) != (fresh.value == nil) || it.base != fresh.base {
			t.Fatalf("seed %d height %d: item %q = (%v %q %+v), the store holds (%v %q %+v)", seed, kv.committed.Height, k, it.exists, it.value, it.base, fresh.exists, fresh.value, fresh.base)
		}
		size += it.size()
	}
	if kv.complete {
		// Every key with a stored version has an item.
		for ok := iter.SeekGE(versionsStart(kv.gen)); ok && bytes.Compare(iter.Key(), versionsEnd(kv.gen)) < 0; ok = iter.Next() {
			key, _, err := parseVersionKey(kv.gen, iter.Key())
			if err != nil {
				t.Fatal(err)
			}
			if kv.items[string(key)] == nil {
				t.Fatalf("seed %d height %d: complete items without %q, which the store holds", seed, kv.committed.Height, key)
			}
		}
	}
	if size != kv.itemBytes {
		t.Fatalf("seed %d: items of %d bytes counted as %d", seed, size, kv.itemBytes)
	}
	if len(kv.items) > kv.maxItems || kv.itemBytes > kv.maxItemBytes {
		t.Fatalf("seed %d: %d items of %d bytes, bounds %d and %d", seed, len(kv.items), kv.itemBytes, kv.maxItems, kv.maxItemBytes)
	}
}

// TestItemCacheAfterTombstoneCollected: a deleted key's tombstone, kept for a snapshot, is collected when
// the snapshot goes; the cached item must not keep naming it (the next write would otherwise delete or
// list as garbage a version that no longer exists).
func TestItemCacheAfterTombstoneCollected(t *testing.T) {
	envs := []*env{newEnv(t), newEnv(t)}
	cacheVariants[0].open(t, envs[0])
	cacheVariants[3].open(t, envs[1])
	step := func(pin bool, ops ...Op) {
		for _, e := range envs {
			e.exec(ops...)
			e.commit()
			if pin {
				if err := e.kv.TakeSnapshot(e.kv.committed.Height); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	step(true, Put([]byte("k"), []byte("v1")), Put([]byte("other"), []byte("x")))
	step(false, Delete([]byte("k"))) // a tombstone at height 2, garbage once snapshot 1 goes
	step(true, Get([]byte("k")))
	for _, e := range envs {
		if err := e.kv.ReleaseSnapshot(1); err != nil {
			t.Fatal(err)
		}
		if n := countRows(t, e.kv, 'V'); n != 1 {
			t.Fatalf("%d versions after the tombstone's collection, want 1 (other)", n)
		}
	}
	checkItems(t, 0, envs[1].kv)
	step(false, Put([]byte("k"), []byte("v2")))
	if !equalRecords(storeRecords(t, envs[0].kv), storeRecords(t, envs[1].kv)) {
		t.Fatal("stores differ")
	}
	checkItems(t, 0, envs[1].kv)
}
