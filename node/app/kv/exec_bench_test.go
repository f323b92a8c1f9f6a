package kv

// Run with
//
//	go test -run '^$' -bench 'ExecutePutsSteady' -benchmem -count 5 ./node/app/kv/

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/node/app"
	"github.com/p2pbft/p2pbft/node/store"
)

// steadyKeySpace is the key space of the replica benchmark (`p2pbft bench`): puts uniform over 100,000 keys.
const steadyKeySpace = 100_000

// steadyBlocks returns blocks of puts of 100-byte values to keys uniform over steadyKeySpace, and for each
// request the offset of its value in the encoded operation, so the benchmark can change every value before
// it executes a request again (a put of the value a key already holds changes nothing and would be cheap).
func steadyBlocks(b *testing.B, r *rand.Rand, blocks, perBlock int) ([][]app.Request, [][]int) {
	reqs := make([][]app.Request, blocks)
	offs := make([][]int, blocks)
	for i := range reqs {
		reqs[i] = make([]app.Request, perBlock)
		offs[i] = make([]int, perBlock)
		for j := range reqs[i] {
			val := make([]byte, 100)
			for k := range val {
				val[k] = byte(r.Uint32())
			}
			reqs[i][j] = req(b, Put(fmt.Appendf(nil, "user/%08d", r.IntN(steadyKeySpace)), val))
			offs[i][j] = bytes.Index(reqs[i][j].Op, val)
			if offs[i][j] < 0 {
				b.Fatal("value not found in the encoded put")
			}
		}
	}
	return reqs, offs
}

// processCPU is the CPU time (user and system) of the whole process so far: the benchmark's goroutine, the
// store's background work and the garbage collector. The machine is shared, so the CPU time per request is
// the comparable figure, not the elapsed time.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkExecutePutsSteady is the replica's execution under `p2pbft bench`: blocks of 100-byte puts over a
// 100,000-key space whose every key already exists (the state is filled before the timer starts), each
// block executed and committed the way the node does it (the app's writes in the block's store batch, on a
// pebble store on disk with the default memtable and cache, without fsync: the fsync is the store's cost).
// Every execution of a request puts a new value (a counter in its first bytes), so every put replaces a
// value. ns/req, cpu-ns/req (process CPU time) and allocs/req are per request; ns/op and allocs/op per block.
//
// checkpoints keeps a snapshot at every 32nd block and releases the one before, as a replica does at its
// stable checkpoints (consensus.checkpoint_interval 32): every put then keeps the replaced version and
// writes a garbage entry, which the release collects.
//
// cache=off bounds the item cache to nothing, so every block reads every key from the store: the cost of
// the first pass after a restart, or of a key space far beyond the cache.
func BenchmarkExecutePutsSteady(b *testing.B) {
	for _, c := range []struct {
		perBlock    int
		cache       bool
		checkpoints bool
	}{{64, true, false}, {256, true, false}, {64, false, false}, {64, true, true}} {
		perBlock := c.perBlock
		name := fmt.Sprintf("block=%d", perBlock)
		if !c.cache {
			name += "/cache=off"
		}
		if c.checkpoints {
			name += "/checkpoints"
		}
		b.Run(name, func(b *testing.B) {
			e := newEnvOpts(b, store.Options{UnsafeNoSync: true})
			if !c.cache {
				e.kv.maxItems, e.kv.maxItemBytes = 0, 0
			}
			fillKeySpace(b, e)
			r := rand.New(rand.NewPCG(3, 4))
			blocks, offs := steadyBlocks(b, r, 512, perBlock)
			var counter uint64
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			cpu0 := processCPU(b)
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				blk, off := blocks[i%len(blocks)], offs[i%len(offs)]
				for j := range blk {
					counter++
					binary.BigEndian.PutUint64(blk[j].Op[off[j]:], counter)
				}
				if _, err := e.kv.Execute(e.kv.executed+1, blk); err != nil {
					b.Fatal(err)
				}
				e.commit()
				i++
				if c.checkpoints && i%checkpointInterval == 0 {
					checkpoint(b, e.kv)
				}
			}
			cpu := processCPU(b) - cpu0
			runtime.ReadMemStats(&ms1)
			n := float64(b.N * perBlock)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/req")
			b.ReportMetric(float64(cpu.Nanoseconds())/n, "cpu-ns/req")
			b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/n, "allocs/req")
		})
	}
}

// fillKeySpace puts a 100-byte value to every key of the steady key space, in order.
func fillKeySpace(b *testing.B, e *env) {
	fill := make([]app.Request, 0, 1000)
	for k := 0; k < steadyKeySpace; k++ {
		fill = append(fill, req(b, Put(fmt.Appendf(nil, "user/%08d", k), make([]byte, 100))))
		if len(fill) == cap(fill) {
			if _, err := e.kv.Execute(e.kv.executed+1, fill); err != nil {
				b.Fatal(err)
			}
			e.commit()
			fill = fill[:0]
		}
	}
}

// BenchmarkOpenSteadyState is Open of the benchmark's state (100,000 keys of 100 bytes): the item cache is
// loaded by one scan of the state.
func BenchmarkOpenSteadyState(b *testing.B) {
	e := newEnvOpts(b, store.Options{UnsafeNoSync: true})
	fillKeySpace(b, e)
	b.ReportAllocs()
	for b.Loop() {
		kv, err := Open(e.st.AppStorage())
		if err != nil {
			b.Fatal(err)
		}
		if !kv.complete || len(kv.items) != steadyKeySpace {
			b.Fatalf("%d items loaded, complete %v", len(kv.items), kv.complete)
		}
	}
}

// checkpointInterval is the replica's default consensus.checkpoint_interval.
const checkpointInterval = 32

// checkpoint takes a snapshot at the committed height and releases the older ones, as a replica does at
// a stable checkpoint.
func checkpoint(b *testing.B, kv *KV) {
	if err := kv.TakeSnapshot(kv.committed.Height); err != nil {
		b.Fatal(err)
	}
	pins, _ := kv.Snapshots()
	for _, p := range pins[:len(pins)-1] {
		if err := kv.ReleaseSnapshot(p.Height); err != nil {
			b.Fatal(err)
		}
	}
}
