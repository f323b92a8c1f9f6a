package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"
	"github.com/p2pbft/p2pbft/wire"
)

// Key layout. Every key starts with one byte that names its space; the application's namespace is
// prefixAppSpace, and nothing else ever writes there.
var (
	keyGenesis   = []byte("m/genesis")
	keyHead      = []byte("m/head")
	keyHardState = []byte("m/hardstate")
	keyLogNext   = []byte("m/lognext")
)

const (
	prefixLog      = 'l' // l | seq u64 | index u64 -> record
	prefixBlock    = 'b' // b | height u64 -> encoded block
	prefixAnchor   = 'a' // a | height u64 -> hash of the block at height (a state-transfer jump point)
	prefixAppSpace = 'x' // x | application key -> application value
)

func blockKey(h uint64) []byte  { return binary.BigEndian.AppendUint64([]byte{prefixBlock}, h) }
func anchorKey(h uint64) []byte { return binary.BigEndian.AppendUint64([]byte{prefixAnchor}, h) }
func logKey(seq, idx uint64) []byte {
	k := binary.BigEndian.AppendUint64([]byte{prefixLog}, seq)
	return binary.BigEndian.AppendUint64(k, idx)
}

// ErrNotFound is returned (wrapped) for a block or record the store does not hold.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned by Batch.Commit when another batch committed since this one was created: the
// store has one writer (the node's event loop), and a batch built on a stale head must not be applied.
var ErrConflict = errors.New("concurrent batch committed first")

// ErrCorrupt says that the store's files are damaged (garbage in the write-ahead log or a table, a
// checksum that does not match): the store cannot be opened, or a read failed, as it is. A replica
// recovers by wiping its store (Wipe) and catching up from the others.
//
// Pebble opens its tables lazily, so a damaged table is found only by the first read that touches it
// (possibly well after Open): reads wrap such errors in ErrCorrupt too (readErr).
var ErrCorrupt = errors.New("store: the data is damaged")

// readErr wraps an error of a read: in ErrCorrupt if pebble says the data is damaged (a table whose
// checksum does not match, a table that is not one), so that callers can give the same advice as for a
// store that does not open.
func readErr(what string, err error) error {
	if pebble.IsCorruptionError(err) {
		return fmt.Errorf("%w: %s: %w", ErrCorrupt, what, err)
	}
	return fmt.Errorf("store: %s: %w", what, err)
}

// Options configures a Store. The zero value is usable.
type Options struct {
	// Genesis is the hash that block 1 links to (the hash of the genesis document). A new store records
	// it; an existing store refuses to open with a different one.
	Genesis wire.Digest
	// Logger receives the database's messages. Nil means slog.Default().
	Logger *slog.Logger
	// MemTableSize is the database's write buffer size; 0 means DefaultMemTableSize. Besides memory, it
	// sets the disk the write-ahead log takes: pebble preallocates every log file to 110% of it and keeps
	// a few for reuse (see DefaultMemTableSize).
	MemTableSize uint64
	// CacheSize is the block cache size; 0 means 64 MiB.
	CacheSize int64
	// UnsafeNoSync skips every fsync. A crash of the machine (not only of the process) can then lose
	// committed blocks. For throwaway tests and benchmarks only.
	UnsafeNoSync bool
}

// Store is the replica's crash-safe database. It is safe for concurrent use, except that batches that
// write to the chain or the consensus log must come from one writer at a time (see ErrConflict).
type Store struct {
	db       *pebble.DB
	fsCloser io.Closer // the disk-health checker of db's file system (pebbleOptions)
	dir      string
	log      *slog.Logger
	wopts    *pebble.WriteOptions
	genesis  wire.Digest

	mu      sync.Mutex // guards the fields below
	head    Ref
	logNext uint64
	epoch   uint64 // bumped by every Batch commit; a batch created in an older epoch conflicts
	closed  bool
}

// pebbleLogger routes pebble's messages to slog. Pebble calls Fatalf only for unrecoverable corruption;
// it must not return.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg, "component", "pebble")
	panic("pebble: " + msg)
}

// DefaultMemTableSize is the memtable size of a store that does not set one: 4 MiB.
//
// Pebble preallocates each write-ahead log file to 110% of the memtable size, keeps up to
// MemTableStopWritesThreshold+1 used ones for reuse, and holds the logs of every memtable not yet
// flushed; with 64 MiB (pebble's usual setting, and this store's until it measured otherwise) a replica
// idling at 20 requests per second held ~490 MB of logs after 4 minutes for ~21 MB of data. With 4 MiB
// the logs take a few tens of MB at most, and flushes come more often, which costs nothing measurable on
// the request path (BENCHMARKS.md, "Disk footprint"). A replica under sustained heavy write load may set
// a larger one (store.memtable_size) for fewer, larger flushes.
const DefaultMemTableSize = 4 << 20

// pebbleOptions returns the database's options, and the closer of the disk-health checker that wraps its
// file system. Pebble closes the checker it makes itself only in DB.Close, so every Open that failed
// (a damaged store, which an operator or a test may try again and again) left its goroutine running:
// the store makes the checker itself and closes it in both cases.
func pebbleOptions(o Options) (*pebble.Options, io.Closer) {
	l := o.Logger
	if l == nil {
		l = slog.Default()
	}
	mem := o.MemTableSize
	if mem == 0 {
		mem = DefaultMemTableSize
	}
	po := &pebble.Options{
		MemTableSize: mem,
		Logger:       pebbleLogger{l},
		FS:           vfs.Default, // set, so that EnsureDefaults does not wrap it in a checker of its own
	}
	po.EnsureDefaults()
	fs, closer := vfs.WithDiskHealthChecks(vfs.Default, 5*time.Second, func(info vfs.DiskSlowInfo) {
		po.EventListener.DiskSlow(info)
	})
	po.FS = fs
	return po, closer
}

// Open opens (or creates) the store in dir.
//
// A panic inside pebble while it opens the store and reads its metadata (pebble panics, or calls its
// logger's Fatalf, which panics here, on some damage it finds) is returned as ErrCorrupt with the panic's
// message: a replica must say what is wrong and what to do, not die with a stack trace.
func Open(dir string, opts Options) (s *Store, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: create %s: %w", dir, err)
	}
	po, fsCloser := pebbleOptions(opts)
	defer func() {
		if s == nil {
			fsCloser.Close()
		}
	}()
	cacheSize := opts.CacheSize
	if cacheSize == 0 {
		cacheSize = 64 << 20
	}
	cache := pebble.NewCache(cacheSize)
	defer cache.Unref()
	po.Cache = cache
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("%w: open %s: %v", ErrCorrupt, dir, r)
		}
	}()
	db, err := pebble.Open(dir, po)
	if err != nil {
		if pebble.IsCorruptionError(err) {
			return nil, fmt.Errorf("%w: open %s: %w", ErrCorrupt, dir, err)
		}
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	st := &Store{db: db, fsCloser: fsCloser, dir: dir, log: log, wopts: pebble.Sync, genesis: opts.Genesis}
	if opts.UnsafeNoSync {
		st.wopts = pebble.NoSync
	}
	if err := st.loadSafely(); err != nil {
		db.Close()
		return nil, err
	}
	return st, nil
}

// loadSafely is load with a panic in pebble (a read of a damaged table) turned into ErrCorrupt; the
// caller then closes the database, which a panic in Open itself would skip.
func (s *Store) loadSafely() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: read %s: %v", ErrCorrupt, s.dir, r)
		}
	}()
	return s.load()
}

// load reads the store's metadata, or initialises a new store.
func (s *Store) load() error {
	g, ok, err := s.get(keyGenesis)
	if err != nil {
		return err
	}
	if !ok {
		b := s.db.NewBatch()
		defer b.Close()
		head := encodeRef(Ref{Height: 0, Hash: s.genesis})
		if err := errors.Join(b.Set(keyGenesis, s.genesis[:], nil), b.Set(keyHead, head, nil)); err != nil {
			return fmt.Errorf("store: initialise: %w", err)
		}
		if err := b.Commit(pebble.Sync); err != nil {
			return fmt.Errorf("store: initialise: %w", err)
		}
		s.head = Ref{Hash: s.genesis}
		s.log.Info("store created", "dir", s.dir, "genesis", s.genesis)
		return nil
	}
	if !bytes.Equal(g, s.genesis[:]) {
		return fmt.Errorf("store: %s belongs to the chain with genesis %x, not %s", s.dir, g, s.genesis)
	}
	hb, ok, err := s.get(keyHead)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("store: %s: head record missing", s.dir)
	}
	if s.head, err = decodeRef(hb); err != nil {
		return fmt.Errorf("store: %s: head record: %w", s.dir, err)
	}
	if nb, ok, err := s.get(keyLogNext); err != nil {
		return err
	} else if ok {
		if len(nb) != 8 {
			return fmt.Errorf("store: %s: log index record is %d bytes", s.dir, len(nb))
		}
		s.logNext = binary.BigEndian.Uint64(nb)
	}
	s.log.Info("store opened", "dir", s.dir, "head", s.head.Height)
	return nil
}

func encodeRef(r Ref) []byte {
	return append(binary.BigEndian.AppendUint64(nil, r.Height), r.Hash[:]...)
}

func decodeRef(b []byte) (Ref, error) {
	if len(b) != 8+32 {
		return Ref{}, fmt.Errorf("reference is %d bytes, want 40", len(b))
	}
	var r Ref
	r.Height = binary.BigEndian.Uint64(b)
	copy(r.Hash[:], b[8:])
	return r, nil
}

// get returns a copy of the value of key.
func (s *Store) get(key []byte) ([]byte, bool, error) {
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, readErr(fmt.Sprintf("read %q", key), err)
	}
	out := bytes.Clone(v)
	closer.Close()
	return out, true, nil
}

// Close closes the database. Batches and iterators must be closed first.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	err := s.db.Close()
	s.fsCloser.Close()
	if err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

// Genesis returns the hash block 1 links to.
func (s *Store) Genesis() wire.Digest { return s.genesis }

// Head returns the height and hash of the last block (or the last anchor, after a state-transfer jump;
// Ref{0, genesis} for an empty chain).
func (s *Store) Head() Ref {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.head
}

// HardState returns the last hard state written, or nil if none was.
func (s *Store) HardState() ([]byte, error) {
	v, _, err := s.get(keyHardState)
	return v, err
}

// Record is one consensus log record.
type Record struct {
	Seq  uint64
	Data []byte
}

// Records iterates the consensus log records with sequence number >= from, in (sequence number, append)
// order. Records appended in one batch with the same sequence number keep their order.
func (s *Store) Records(from uint64) iter.Seq2[Record, error] {
	return func(yield func(Record, error) bool) {
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: logKey(from, 0), UpperBound: []byte{prefixLog + 1}})
		if err != nil {
			yield(Record{}, readErr("read log", err))
			return
		}
		defer it.Close()
		for ok := it.First(); ok; ok = it.Next() {
			k := it.Key()
			if len(k) != 17 {
				yield(Record{}, fmt.Errorf("store: read log: malformed key %x", k))
				return
			}
			if !yield(Record{Seq: binary.BigEndian.Uint64(k[1:]), Data: bytes.Clone(it.Value())}, nil) {
				return
			}
		}
		if err := it.Error(); err != nil {
			yield(Record{}, readErr("read log", err))
		}
	}
}

// Block returns the block at height h, or an error wrapping ErrNotFound.
func (s *Store) Block(h uint64) (*Block, error) {
	v, ok, err := s.get(blockKey(h))
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("store: block %d: %w", h, ErrNotFound)
	}
	b, err := DecodeBlock(v)
	if err != nil {
		return nil, fmt.Errorf("store: stored block %d: %w", h, err)
	}
	if b.Height != h {
		return nil, fmt.Errorf("store: block stored at %d says height %d", h, b.Height)
	}
	return b, nil
}

// Blocks iterates the stored blocks with from <= height <= to in increasing height. Heights the store does
// not hold (below a state-transfer jump that was not backfilled) are skipped; compare Block.Height with
// what you expect if you need a contiguous range.
func (s *Store) Blocks(from, to uint64) iter.Seq2[*Block, error] {
	return func(yield func(*Block, error) bool) {
		if from > to {
			return
		}
		upper := []byte{prefixBlock + 1}
		if to < ^uint64(0) {
			upper = blockKey(to + 1)
		}
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: blockKey(from), UpperBound: upper})
		if err != nil {
			yield(nil, readErr("read blocks", err))
			return
		}
		defer it.Close()
		for ok := it.First(); ok; ok = it.Next() {
			h := binary.BigEndian.Uint64(it.Key()[1:])
			b, err := DecodeBlock(it.Value())
			if err == nil && b.Height != h {
				err = fmt.Errorf("block stored at %d says height %d", h, b.Height)
			}
			if err != nil {
				yield(nil, fmt.Errorf("store: stored block %d: %w", h, err))
				return
			}
			if !yield(b, nil) {
				return
			}
		}
		if err := it.Error(); err != nil {
			yield(nil, readErr("read blocks", err))
		}
	}
}

// Anchor returns the hash recorded for height h by a state-transfer jump (Batch.JumpTo), if any.
func (s *Store) Anchor(h uint64) (wire.Digest, bool, error) {
	v, ok, err := s.get(anchorKey(h))
	if err != nil || !ok {
		return wire.Digest{}, false, err
	}
	if len(v) != 32 {
		return wire.Digest{}, false, fmt.Errorf("store: anchor %d is %d bytes", h, len(v))
	}
	return wire.Digest(v), true, nil
}

// HashAt returns the hash of the block at height h as far as the store knows it: from the block itself,
// from the Prev link of block h+1, or from an anchor. Height 0 is the genesis hash.
func (s *Store) HashAt(h uint64) (wire.Digest, error) {
	if h == 0 {
		return s.genesis, nil
	}
	if head := s.Head(); head.Height == h {
		return head.Hash, nil
	}
	if b, err := s.Block(h); err == nil {
		return b.Hash(), nil
	} else if !errors.Is(err, ErrNotFound) {
		return wire.Digest{}, err
	}
	if next, err := s.Block(h + 1); err == nil {
		return next.Prev, nil
	} else if !errors.Is(err, ErrNotFound) {
		return wire.Digest{}, err
	}
	if a, ok, err := s.Anchor(h); err != nil || ok {
		return a, err
	}
	return wire.Digest{}, fmt.Errorf("store: hash of height %d: %w", h, ErrNotFound)
}

// VerifyChain verifies the stored blocks from..to (inclusive) with Block.Verify, each against the one
// before it (block from against HashAt(from-1)). It fails on a missing block.
func (s *Store) VerifyChain(from, to uint64, checkCert CertCheck) error {
	if from == 0 {
		from = 1
	}
	prevHash, err := s.HashAt(from - 1)
	if err != nil {
		return err
	}
	prev := Ref{Height: from - 1, Hash: prevHash}
	for b, err := range s.Blocks(from, to) {
		if err != nil {
			return err
		}
		if b.Height != prev.Height+1 {
			return fmt.Errorf("store: verify chain: block %d: %w", prev.Height+1, ErrNotFound)
		}
		if err := b.Verify(prev, checkCert); err != nil {
			return err
		}
		prev = b.Ref()
	}
	if prev.Height < to {
		return fmt.Errorf("store: verify chain: block %d: %w", prev.Height+1, ErrNotFound)
	}
	return nil
}
