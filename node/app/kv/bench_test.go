package kv

// Run with
//
//	go test -run '^$' -bench . -benchmem ./node/app/kv/

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/p2pbft/p2pbft/node/app"
	"github.com/p2pbft/p2pbft/node/store"
)

// putBatch returns a block of n puts of 100-byte values to keys drawn from a space of keySpace keys.
func putBatch(b *testing.B, r *rand.Rand, n, keySpace int) []app.Request {
	batch := make([]app.Request, n)
	val := make([]byte, 100)
	for i := range batch {
		for j := range val {
			val[j] = byte(r.Uint32())
		}
		batch[i] = req(b, Put([]byte(fmt.Sprintf("user/%08d", r.IntN(keySpace))), val))
	}
	return batch
}

// BenchmarkExecute1000Puts executes blocks of 1,000 puts (digest update included) and commits each into a
// store batch that is applied without fsync (the fsync is the store's cost: see the store benchmarks).
// The key space of 100,000 keys makes the state grow to it and then mostly overwrite.
func BenchmarkExecute1000Puts(b *testing.B) {
	for _, commit := range []bool{false, true} {
		b.Run(fmt.Sprintf("commit=%v", commit), func(b *testing.B) {
			// The store's default sizes (64 MiB memtable and cache), without fsync.
			e := newEnvOpts(b, store.Options{UnsafeNoSync: true})
			r := rand.New(rand.NewPCG(1, 2))
			blocks := make([][]app.Request, 64)
			for i := range blocks {
				blocks[i] = putBatch(b, r, 1000, 100_000)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := e.kv.Execute(e.kv.executed+1, blocks[i%len(blocks)]); err != nil {
					b.Fatal(err)
				}
				i++
				if commit || len(e.kv.pending) == 16 {
					e.commit()
				}
			}
			b.ReportMetric(float64(b.N)*1000/b.Elapsed().Seconds(), "ops/s")
		})
	}
}

// BenchmarkDigestUpdate is the digest cost of one overwrite: hash the old and the new pair, subtract, add.
func BenchmarkDigestUpdate(b *testing.B) {
	var eh elemHasher
	var sum, v ltHash
	key, oldV, newV := []byte("user/00001234"), make([]byte, 100), make([]byte, 100)
	newV[0] = 1
	b.ReportAllocs()
	for b.Loop() {
		eh.hash(&v, key, oldV)
		sum.sub(&v)
		eh.hash(&v, key, newV)
		sum.add(&v)
	}
}

// BenchmarkElemHash is one (key, value) -> 2048-byte vector mapping, by value size.
func BenchmarkElemHash(b *testing.B) {
	for _, size := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			var eh elemHasher
			var v ltHash
			val := make([]byte, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				eh.hash(&v, []byte("user/00001234"), val)
			}
		})
	}
}

// BenchmarkStateDigest is condensing the checksum into the 32-byte digest (once per block).
func BenchmarkStateDigest(b *testing.B) {
	var sum ltHash
	b.ReportAllocs()
	for b.Loop() {
		sum.digest()
	}
}

// BenchmarkDigestAfterHash is what Execute does at the end of a block: an element hash (BLAKE3, AVX-512 on
// CPUs that have it) followed by condensing the checksum (SHA-256). It exposes a dirty upper vector state
// left by the hash (see clearUpperVectors): compare with BenchmarkElemHash/100 + BenchmarkStateDigest.
func BenchmarkDigestAfterHash(b *testing.B) {
	var eh elemHasher
	var sum, v ltHash
	val := make([]byte, 100)
	b.ReportAllocs()
	for b.Loop() {
		eh.hash(&v, []byte("user/00001234"), val)
		sum.digest()
	}
}
