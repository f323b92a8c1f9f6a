package store

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"

	"github.com/p2pbft/p2pbft/wire"
)

var testGenesis = wire.Digest{0x6e}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func openTest(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(dir, Options{Genesis: testGenesis, Logger: quiet(), MemTableSize: 4 << 20, CacheSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func commit(t testing.TB, b *Batch) {
	t.Helper()
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
}

// appendBlocks appends n blocks with small batches, one batch per block.
func appendBlocks(t testing.TB, s *Store, n int) []*Block {
	t.Helper()
	var out []*Block
	for i := 0; i < n; i++ {
		head := s.Head()
		blk := testBlock(t, head, 0, testRequests(t, head.Height, 2, 30), wire.Digest{byte(head.Height)})
		b := s.NewBatch()
		if err := b.AppendBlock(blk); err != nil {
			t.Fatal(err)
		}
		commit(t, b)
		out = append(out, blk)
	}
	return out
}

func TestOpenChecksGenesis(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	if h := s.Head(); h.Height != 0 || h.Hash != testGenesis {
		t.Fatalf("new store head %v", h)
	}
	s.Close()
	if _, err := Open(dir, Options{Genesis: wire.Digest{1}, Logger: quiet()}); err == nil {
		t.Fatal("opened a store of another chain")
	}
}

func TestChainAppendAndRead(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	blocks := appendBlocks(t, s, 10)
	// Several blocks in one batch.
	b := s.NewBatch()
	for i := 0; i < 3; i++ {
		blk := testBlock(t, b.Head(), 1, nil, wire.Digest{})
		if err := b.AppendBlock(blk); err != nil {
			t.Fatal(err)
		}
		blocks = append(blocks, blk)
	}
	if s.Head().Height != 10 {
		t.Fatal("uncommitted blocks moved the head")
	}
	commit(t, b)
	if s.Head() != blocks[12].Ref() {
		t.Fatalf("head %v, want %v", s.Head(), blocks[12].Ref())
	}
	// Links are enforced.
	b = s.NewBatch()
	bad := testBlock(t, Ref{Height: 13, Hash: wire.Digest{1}}, 0, nil, wire.Digest{})
	if err := b.AppendBlock(bad); !errors.Is(err, ErrBadBlock) {
		t.Fatalf("append with a wrong prev: %v", err)
	}
	gap := testBlock(t, Ref{Height: 14, Hash: s.Head().Hash}, 0, nil, wire.Digest{})
	if err := b.AppendBlock(gap); !errors.Is(err, ErrBadBlock) {
		t.Fatalf("append with a gap: %v", err)
	}
	b.Close()

	s.Close()
	s = openTest(t, dir)
	if s.Head() != blocks[12].Ref() {
		t.Fatal("head lost on reopen")
	}
	for _, want := range blocks {
		got, err := s.Block(want.Height)
		if err != nil || got.Hash() != want.Hash() {
			t.Fatalf("block %d: %v", want.Height, err)
		}
	}
	if _, err := s.Block(14); !errors.Is(err, ErrNotFound) {
		t.Fatalf("block above the head: %v", err)
	}
	var heights []uint64
	for blk, err := range s.Blocks(4, 8) {
		if err != nil {
			t.Fatal(err)
		}
		heights = append(heights, blk.Height)
	}
	if !slices.Equal(heights, []uint64{4, 5, 6, 7, 8}) {
		t.Fatalf("range 4..8 gave %v", heights)
	}
	for blk := range s.Blocks(11, ^uint64(0)) {
		if blk.Height < 11 {
			t.Fatal("range below its start")
		}
	}
	if err := s.VerifyChain(1, 13, testCertCheck); err != nil {
		t.Fatal(err)
	}
	if err := s.VerifyChain(1, 14, testCertCheck); !errors.Is(err, ErrNotFound) {
		t.Fatalf("verify past the head: %v", err)
	}
}

func TestConsensusRecords(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	if hs, err := s.HardState(); err != nil || hs != nil {
		t.Fatalf("hard state of a new store: %x %v", hs, err)
	}
	b := s.NewBatch()
	b.SetHardState([]byte("view=1"))
	for seq := uint64(1); seq <= 5; seq++ {
		for i := 0; i < 3; i++ {
			b.AppendRecord(seq, []byte(fmt.Sprintf("%d.%d", seq, i)))
		}
	}
	commit(t, b)
	b = s.NewBatch()
	b.AppendRecord(2, []byte("2.late")) // a later record for an old sequence number sorts after the others
	b.SetHardState([]byte("view=2"))
	commit(t, b)

	s.Close()
	s = openTest(t, dir)
	if hs, _ := s.HardState(); string(hs) != "view=2" {
		t.Fatalf("hard state %q", hs)
	}
	got := readRecords(t, s, 0)
	want := []string{"1.0", "1.1", "1.2", "2.0", "2.1", "2.2", "2.late", "3.0", "3.1", "3.2", "4.0", "4.1", "4.2", "5.0", "5.1", "5.2"}
	if !slices.Equal(got, want) {
		t.Fatalf("records %v", got)
	}
	if got := readRecords(t, s, 5); !slices.Equal(got, want[13:]) {
		t.Fatalf("records from 5: %v", got)
	}
	// Truncation, and appends after it in the same batch and after a reopen (the index survives).
	b = s.NewBatch()
	b.TruncateLog(3)
	b.AppendRecord(3, []byte("3.new"))
	commit(t, b)
	s.Close()
	s = openTest(t, dir)
	b = s.NewBatch()
	b.AppendRecord(6, []byte("6.0"))
	b.AppendRecord(4, []byte("4.new"))
	commit(t, b)
	want = []string{"3.new", "4.0", "4.1", "4.2", "4.new", "5.0", "5.1", "5.2", "6.0"}
	if got := readRecords(t, s, 0); !slices.Equal(got, want) {
		t.Fatalf("after truncation: %v", got)
	}
}

func readRecords(t *testing.T, s *Store, from uint64) []string {
	t.Helper()
	var out []string
	for r, err := range s.Records(from) {
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(r.Data, []byte(fmt.Sprint(r.Seq))) {
			t.Fatalf("record %q under seq %d", r.Data, r.Seq)
		}
		out = append(out, string(r.Data))
	}
	return out
}

func TestBatchConflictAndReuse(t *testing.T) {
	s := openTest(t, t.TempDir())
	b1, b2 := s.NewBatch(), s.NewBatch()
	b1.AppendBlock(testBlock(t, s.Head(), 0, nil, wire.Digest{}))
	b2.AppendBlock(testBlock(t, s.Head(), 0, nil, wire.Digest{1}))
	commit(t, b1)
	if err := b2.Commit(); !errors.Is(err, ErrConflict) {
		t.Fatalf("second writer on a stale head: %v", err)
	}
	if err := b1.Commit(); err == nil {
		t.Fatal("committed a batch twice")
	}
	if s.Head().Height != 1 {
		t.Fatal("head moved by a conflicting batch")
	}
}

func TestJumpAndBackfill(t *testing.T) {
	// A source chain of 20 blocks; the replica has the first 5, jumps to 15 (a state transfer), appends
	// 16..20, then backfills 14 down to 6.
	src := openTest(t, t.TempDir())
	blocks := appendBlocks(t, src, 20)
	dir := t.TempDir()
	s := openTest(t, dir)
	b := s.NewBatch()
	for _, blk := range blocks[:5] {
		if err := b.AppendBlock(blk); err != nil {
			t.Fatal(err)
		}
	}
	commit(t, b)
	b = s.NewBatch()
	if err := b.JumpTo(Ref{Height: 3}); err == nil {
		t.Fatal("jumped backwards")
	}
	if err := b.JumpTo(blocks[14].Ref()); err != nil {
		t.Fatal(err)
	}
	commit(t, b)
	if h, err := s.HashAt(15); err != nil || h != blocks[14].Hash() {
		t.Fatalf("hash at the anchor: %v", err)
	}
	b = s.NewBatch()
	for _, blk := range blocks[15:] {
		if err := b.AppendBlock(blk); err != nil {
			t.Fatal(err)
		}
	}
	commit(t, b)
	if err := s.VerifyChain(16, 20, testCertCheck); err != nil {
		t.Fatal(err)
	}
	if err := s.VerifyChain(1, 20, testCertCheck); !errors.Is(err, ErrNotFound) {
		t.Fatalf("verify across the gap: %v", err)
	}
	// Backfill refuses a block that does not hash to what the chain above expects, and blocks with
	// nothing above them.
	b = s.NewBatch()
	if err := b.BackfillBlock(blocks[9]); err == nil {
		t.Fatal("backfilled block 10 with nothing above it")
	}
	fake := *blocks[14]
	fake.AppDigest[0] ^= 1
	if err := b.BackfillBlock(&fake); !errors.Is(err, ErrBadBlock) {
		t.Fatalf("backfilled a block the anchor does not name: %v", err)
	}
	for i := 14; i >= 5; i-- {
		if err := b.BackfillBlock(blocks[i]); err != nil {
			t.Fatalf("backfill %d: %v", i+1, err)
		}
	}
	if err := b.BackfillBlock(blocks[7]); err == nil {
		t.Fatal("backfilled a block twice")
	}
	commit(t, b)
	s.Close()
	s = openTest(t, dir)
	if err := s.VerifyChain(1, 20, testCertCheck); err != nil {
		t.Fatal(err)
	}
	if s.Head() != blocks[19].Ref() {
		t.Fatal("head")
	}
}

func TestAppStorageIsolation(t *testing.T) {
	s := openTest(t, t.TempDir())
	appendBlocks(t, s, 2)
	as := s.AppStorage()
	ab := as.NewBatch()
	ab.Set([]byte("a"), []byte("1"))
	ab.Set([]byte("b"), []byte("2"))
	ab.Set([]byte("c"), []byte("3"))
	if err := ab.Commit(true); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := as.Get([]byte("b")); err != nil || !ok || string(v) != "2" {
		t.Fatalf("get: %q %v %v", v, ok, err)
	}
	// Writes through the block batch are atomic with the block.
	b := s.NewBatch()
	b.App().Set([]byte("d"), []byte("4"))
	b.App().Delete([]byte("a"))
	if _, ok, _ := as.Get([]byte("d")); ok {
		t.Fatal("uncommitted app write visible")
	}
	commit(t, b)
	it, err := as.NewIter(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for ok := it.First(); ok; ok = it.Next() {
		keys = append(keys, string(it.Key())+"="+string(it.Value()))
	}
	it.Close()
	if !slices.Equal(keys, []string{"b=2", "c=3", "d=4"}) {
		t.Fatalf("app keys %v", keys)
	}
	// The widest delete the app can issue leaves the chain alone.
	ab = as.NewBatch()
	ab.DeleteRange(nil, nil)
	if err := ab.Commit(false); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := as.Get([]byte("c")); ok {
		t.Fatal("delete range missed")
	}
	if err := s.VerifyChain(1, 2, testCertCheck); err != nil {
		t.Fatalf("app delete range damaged the chain: %v", err)
	}
	// Iterator bounds and seeks are within the namespace.
	ab = as.NewBatch()
	for _, k := range []string{"k1", "k2", "k3", "z"} {
		ab.Set([]byte(k), []byte(k))
	}
	ab.Commit(false)
	it, _ = as.NewIter([]byte("k2"), []byte("z"))
	keys = nil
	for ok := it.SeekGE([]byte("k")); ok; ok = it.Next() {
		keys = append(keys, string(it.Key()))
	}
	it.Close()
	if !slices.Equal(keys, []string{"k2", "k3"}) {
		t.Fatalf("bounded iteration %v", keys)
	}
}

func TestOpenTwiceFails(t *testing.T) {
	dir := t.TempDir()
	openTest(t, dir)
	if s, err := Open(dir, Options{Genesis: testGenesis, Logger: quiet()}); err == nil {
		s.Close()
		t.Fatal("opened a store that is already open")
	} else {
		t.Logf("second open: %v", err)
	}
}
