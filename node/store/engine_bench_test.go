package store

// The measurement behind the choice of pebble over bbolt (see the package documentation). Run with
//
//	go test -run '^$' -bench 'Engine' -benchtime 300x ./node/store/
//
// Each engine stores the same encoded blocks under the same keys, one durable (fsynced) transaction per
// block, and small consensus records, one durable transaction per record batch.

import (
	"encoding/binary"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble"
	"github.com/p2pbft/p2pbft/wire"
	bolt "go.etcd.io/bbolt"
)

// benchBlockBytes returns an encoded block of 1,000 ~200-byte requests with a 3-signature certificate.
func benchBlockBytes(b *testing.B) []byte {
	b.Helper()
	blk := testBlock(b, Ref{}, 0, testRequests(b, 1, 1000, 90), wire.Digest{1})
	data, err := blk.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	return data
}

// benchRecord is a small consensus record (about a signed PREPARE or COMMIT envelope).
var benchRecord = make([]byte, 180)

type engine interface {
	// write stores the key/value pairs in one durable transaction.
	write(kv ...[]byte) error
	close() error
}

type pebbleEngine struct{ db *pebble.DB }

func (e pebbleEngine) write(kv ...[]byte) error {
	b := e.db.NewBatch()
	defer b.Close()
	for i := 0; i < len(kv); i += 2 {
		if err := b.Set(kv[i], kv[i+1], nil); err != nil {
			return err
		}
	}
	return b.Commit(pebble.Sync)
}
func (e pebbleEngine) close() error { return e.db.Close() }

type boltEngine struct{ db *bolt.DB }

var boltBucket = []byte("b")

func (e boltEngine) write(kv ...[]byte) error {
	return e.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(boltBucket)
		for i := 0; i < len(kv); i += 2 {
			if err := bk.Put(kv[i], kv[i+1]); err != nil {
				return err
			}
		}
		return nil
	})
}
func (e boltEngine) close() error { return e.db.Close() }

func openEngine(b *testing.B, name string) engine {
	b.Helper()
	dir := b.TempDir()
	switch name {
	case "pebble":
		po, fsCloser := pebbleOptions(Options{})
		b.Cleanup(func() { fsCloser.Close() })
		db, err := pebble.Open(dir, po)
		if err != nil {
			b.Fatal(err)
		}
		return pebbleEngine{db}
	case "bbolt":
		// The settings etcd runs bbolt with.
		db, err := bolt.Open(filepath.Join(dir, "bolt.db"), 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
		if err != nil {
			b.Fatal(err)
		}
		if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket(boltBucket); return err }); err != nil {
			b.Fatal(err)
		}
		return boltEngine{db}
	}
	b.Fatalf("unknown engine %q", name)
	return nil
}

func BenchmarkEngineBlock(b *testing.B) {
	block := benchBlockBytes(b)
	for _, name := range []string{"pebble", "bbolt"} {
		b.Run(name, func(b *testing.B) {
			e := openEngine(b, name)
			defer e.close()
			head := make([]byte, 40)
			var h uint64
			b.SetBytes(int64(len(block)))
			b.ReportAllocs()
			for b.Loop() {
				h++
				binary.BigEndian.PutUint64(head, h)
				if err := e.write(blockKey(h), block, keyHead, head); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "blocks/s")
		})
	}
}

func BenchmarkEngineRecords(b *testing.B) {
	for _, name := range []string{"pebble", "bbolt"} {
		b.Run(name, func(b *testing.B) {
			e := openEngine(b, name)
			defer e.close()
			hard := make([]byte, 64)
			var seq uint64
			b.SetBytes(int64(3*len(benchRecord) + len(hard)))
			b.ReportAllocs()
			for b.Loop() {
				seq++
				// Three records (a pre-prepare digest, a prepare, a commit) and the hard state: what one
				// Ready of the engine might ask to persist.
				if err := e.write(
					logKey(seq, 3*seq), benchRecord,
					logKey(seq, 3*seq+1), benchRecord,
					logKey(seq, 3*seq+2), benchRecord,
					keyHardState, hard); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "syncs/s")
		})
	}
}
