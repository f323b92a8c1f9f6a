package store

// Store benchmarks, every write durable (fsync). Run with
//
//	go test -run '^$' -bench 'Store' -benchtime 500x ./node/store/

import (
	"fmt"
	"testing"

	"github.com/p2pbft/p2pbft/node/app"
	"github.com/p2pbft/p2pbft/node/app/kv"
	"github.com/p2pbft/p2pbft/wire"
)

// BenchmarkStoreAppendBlock appends blocks of 1,000 ~200-byte requests with a 3-signature certificate,
// one fsynced batch per block (the block, the head, a hard state and two consensus records).
func BenchmarkStoreAppendBlock(b *testing.B) {
	s := openBench(b)
	batch := testRequests(b, 1, 1000, 90)
	proto := testBlock(b, Ref{}, 0, batch, wire.Digest{})
	size, _ := proto.Marshal()
	b.SetBytes(int64(len(size)))
	b.ReportAllocs()
	for b.Loop() {
		blk := *proto
		head := s.Head()
		blk.Height, blk.Prev = head.Height+1, head.Hash
		wb := s.NewBatch()
		wb.SetHardState(make([]byte, 64))
		wb.AppendRecord(blk.Height, benchRecord)
		wb.AppendRecord(blk.Height, benchRecord)
		if err := wb.AppendBlock(&blk); err != nil {
			b.Fatal(err)
		}
		if err := wb.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "blocks/s")
}

// BenchmarkStoreRecords persists what one engine step might: three small records and the hard state, in one
// fsynced batch.
func BenchmarkStoreRecords(b *testing.B) {
	s := openBench(b)
	hard := make([]byte, 64)
	b.SetBytes(int64(3*len(benchRecord) + len(hard)))
	b.ReportAllocs()
	var seq uint64
	for b.Loop() {
		seq++
		wb := s.NewBatch()
		wb.SetHardState(hard)
		for i := 0; i < 3; i++ {
			wb.AppendRecord(seq, benchRecord)
		}
		if seq%64 == 0 {
			wb.TruncateLog(seq - 32)
		}
		if err := wb.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "syncs/s")
}

// BenchmarkStoreBlockWithKV is the node's whole commit path for a block of 1,000 key-value puts: execute
// (digest included), build the block, write it with the app's changes in one fsynced batch.
func BenchmarkStoreBlockWithKV(b *testing.B) {
	s := openBench(b)
	a, err := kv.Open(s.AppStorage())
	if err != nil {
		b.Fatal(err)
	}
	const perBlock = 1000
	blocks := make([][]app.Request, 16)
	raws := make([][][]byte, len(blocks))
	for i := range blocks {
		for j := 0; j < perBlock; j++ {
			op, _ := kv.EncodeOp(kv.Put([]byte(fmt.Sprintf("user/%08d", (i*7919+j*104729)%100000)), make([]byte, 60)))
			e, _ := wire.Seal(testClient, testChain, wire.KindRequest, op)
			raw, _ := e.Marshal()
			blocks[i] = append(blocks[i], app.Request{Client: e.Author, Op: e.Payload})
			raws[i] = append(raws[i], raw)
		}
	}
	proto := testBlock(b, Ref{}, 0, raws[0], wire.Digest{})
	data, _ := proto.Marshal()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		head := s.Head()
		out, err := a.Execute(head.Height+1, blocks[i%len(blocks)])
		if err != nil {
			b.Fatal(err)
		}
		blk := *proto
		blk.Batch = raws[i%len(blocks)]
		blk.Height, blk.Prev, blk.AppDigest = head.Height+1, head.Hash, out.Digest
		wb := s.NewBatch()
		if err := wb.AppendBlock(&blk); err != nil {
			b.Fatal(err)
		}
		if err := a.Commit(wb.App()); err != nil {
			b.Fatal(err)
		}
		if err := wb.Commit(); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "blocks/s")
	b.ReportMetric(float64(b.N)*perBlock/b.Elapsed().Seconds(), "ops/s")
}

func openBench(b *testing.B) *Store {
	s, err := Open(b.TempDir(), Options{Genesis: testGenesis, Logger: quiet()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}
