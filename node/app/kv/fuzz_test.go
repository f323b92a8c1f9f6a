package kv

import (
	"bytes"
	"testing"

	"github.com/p2pbft/p2pbft/wire"
)

// Seed corpora are checked in under testdata/fuzz; the f.Add seeds below cover the same shapes so that a
// plain `go test` exercises them too. Fuzz longer with, for example,
//
//	go test -run '^$' -fuzz FuzzDecodeOp -fuzztime 60s ./node/app/kv/

func opSeeds() [][]byte {
	var out [][]byte
	for _, o := range []Op{
		Put([]byte("k"), []byte("v")), Get([]byte("key")), Delete([]byte{0, 1, 2}),
		CAS([]byte("k"), []byte("old"), []byte("new")), CreateIfAbsent([]byte("k"), nil),
	} {
		b, _ := EncodeOp(o)
		out = append(out, b)
	}
	return append(out, []byte{}, []byte{0x85}, []byte{0x85, 0x01, 0x40, 0x40, 0x40, 0xf4})
}

func FuzzDecodeOp(f *testing.F) {
	for _, s := range opSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		o, err := DecodeOp(data)
		if err != nil {
			return
		}
		if o.Check() != nil {
			t.Fatal("decoded operation fails its check")
		}
		b, err := EncodeOp(o)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		o2, err := DecodeOp(b)
		if err != nil || o2.Type != o.Type || !bytes.Equal(o2.Key, o.Key) || !bytes.Equal(o2.Value, o.Value) ||
			!bytes.Equal(o2.Expect, o.Expect) || o2.ExpectAbsent != o.ExpectAbsent {
			t.Fatalf("round trip changed the operation: %+v -> %+v (%v)", o, o2, err)
		}
	})
}

func FuzzDecodeResult(f *testing.F) {
	for _, r := range []Result{
		{Status: StatusOK}, {Status: StatusOK, Value: []byte("v"), Exists: true},
		{Status: StatusConflict, Value: []byte("cur"), Exists: true}, {Status: StatusInvalid, Error: "bad"},
	} {
		b, _ := EncodeResult(r)
		f.Add(b)
	}
	f.Add([]byte{0x84, 0x05, 0xf6, 0xf4, 0x60})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeResult(data)
		if err != nil {
			return
		}
		b, err := EncodeResult(r)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		r2, err := DecodeResult(b)
		if err != nil || r2.Status != r.Status || !bytes.Equal(r2.Value, r.Value) || r2.Exists != r.Exists || r2.Error != r.Error {
			t.Fatalf("round trip changed the result: %+v -> %+v (%v)", r, r2, err)
		}
	})
}

func FuzzDecodeChunk(f *testing.F) {
	for _, c := range []chunk{
		{}, {Entries: []chunkEntry{{Key: []byte("a"), Value: []byte("1")}}},
		{Entries: []chunkEntry{{Key: []byte("a")}, {Key: []byte("a\x00"), Value: []byte("2")}, {Key: []byte("b")}}},
		{Entries: []chunkEntry{{Key: []byte("b")}, {Key: []byte("a")}}},
	} {
		b, _ := wire.Marshal(&c)
		f.Add(b, []byte(nil))
		f.Add(b, []byte("a"))
	}
	f.Fuzz(func(t *testing.T, data, cursor []byte) {
		if len(cursor) == 0 {
			cursor = nil
		}
		entries, err := decodeChunk(data, cursor)
		if err != nil {
			return
		}
		prev := cursor
		for _, e := range entries {
			if len(e.Key) == 0 || len(e.Key) > MaxKeySize || len(e.Value) > MaxValueSize {
				t.Fatalf("accepted an entry out of bounds: key %d value %d bytes", len(e.Key), len(e.Value))
			}
			if prev != nil && bytes.Compare(e.Key, prev) <= 0 {
				t.Fatalf("accepted key %q after %q", e.Key, prev)
			}
			prev = e.Key
		}
	})
}

// FuzzMeta: the meta record is read from disk at every open; a damaged one must be an error, not a panic.
func FuzzMeta(f *testing.F) {
	var sum ltHash
	sum[3] = 7
	b, _ := encodeMeta(2, 10, &sum)
	f.Add(b)
	f.Add([]byte{0x84, 0x01, 0x01, 0x01, 0x40})
	f.Fuzz(func(t *testing.T, data []byte) {
		gen, h, s, err := decodeMeta(data)
		if err != nil {
			return
		}
		b, err := encodeMeta(gen, h, &s)
		if err != nil {
			t.Fatal(err)
		}
		if g2, h2, s2, err := decodeMeta(b); err != nil || g2 != gen || h2 != h || s2 != s {
			t.Fatal("meta round trip changed the record")
		}
	})
}

// FuzzUnescape: escaped keys are parsed out of stored keys.
func FuzzUnescape(f *testing.F) {
	f.Add([]byte("abc"))
	f.Add([]byte{0, 1, 0})
	f.Fuzz(func(t *testing.T, key []byte) {
		enc := escape(nil, key)
		got, rest, err := unescape(append(enc, 9, 9))
		if err != nil || !bytes.Equal(got, key) || !bytes.Equal(rest, []byte{9, 9}) {
			t.Fatalf("escape round trip of %x: %x %x %v", key, got, rest, err)
		}
		unescape(key) // arbitrary input: must not panic
	})
}
