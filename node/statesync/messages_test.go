package statesync

import (
	"bytes"
	"testing"

	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
	"github.com/p2pbft/p2pbft/wire/wiretest"
)

func TestRoundTrip(t *testing.T) {
	k := wiretest.NewKey("r0")
	req := &Request{Type: TypeChunk, Seq: 64, Cursor: []byte("key-17"), MaxBytes: 1 << 20}
	e, err := NewRequest(k, "chain", req)
	if err != nil {
		t.Fatal(err)
	}
	if e.Kind != wire.KindStateRequest {
		t.Fatalf("kind %s", e.Kind)
	}
	got, err := DecodeRequest(e.Payload)
	if err != nil || got.Type != req.Type || got.Seq != 64 || !bytes.Equal(got.Cursor, req.Cursor) || got.MaxBytes != req.MaxBytes {
		t.Fatalf("decoded %+v, %v", got, err)
	}
	resp := &Response{Type: TypeManifest, Seq: 64, AppDigest: wire.Digest{1}, TableDigest: wire.Digest{2}, TableSize: 9, Block: []byte{1, 2}}
	re, err := NewResponse(k, "chain", resp)
	if err != nil {
		t.Fatal(err)
	}
	r, err := DecodeResponse(re.Payload, TypeManifest, 64)
	if err != nil || r.AppDigest != resp.AppDigest || r.TableDigest != resp.TableDigest || r.TableSize != 9 {
		t.Fatalf("decoded %+v, %v", r, err)
	}
	if _, err := DecodeResponse(re.Payload, TypeManifest, 65); err == nil {
		t.Fatal("a manifest for another checkpoint was accepted")
	}
	if _, err := DecodeResponse(re.Payload, TypeChunk, 64); err == nil {
		t.Fatal("a manifest was accepted as a chunk")
	}
}

func TestDecodeRequestBounds(t *testing.T) {
	for name, r := range map[string]*Request{
		"unknown type":       {Type: 0, Seq: 1},
		"manifest at 0":      {Type: TypeManifest},
		"backward range":     {Type: TypeBlocks, Seq: 5, To: 4},
		"blocks from 0":      {Type: TypeBlocks, Seq: 0, To: 4},
		"oversized cursor":   {Type: TypeChunk, Seq: 1, Cursor: make([]byte, MaxCursor+1)},
		"table at 0":         {Type: TypeTable},
		"future type number": {Type: 200, Seq: 3},
	} {
		b, _ := wire.Marshal(r)
		if _, err := DecodeRequest(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestCheckpointMatches(t *testing.T) {
	table := []byte("table")
	app := wire.Digest{7}
	certified := pbft.CheckpointDigest(32, app, pbft.ClientTableDigest(table))
	r := &Response{AppDigest: app, TableDigest: pbft.ClientTableDigest(table)}
	if !r.CheckpointMatches(32, certified) {
		t.Fatal("the right digests do not match")
	}
	if r.CheckpointMatches(33, certified) {
		t.Fatal("matches another sequence number")
	}
	r.AppDigest[0] ^= 1
	if r.CheckpointMatches(32, certified) {
		t.Fatal("matches with another app digest")
	}
}

func TestAgreement(t *testing.T) {
	a, b := wire.Digest{1}, wire.Digest{2}
	for _, tc := range []struct {
		hashes []wire.Digest
		need   int
		want   wire.Digest
		n      int
		ok     bool
	}{
		{nil, 1, wire.Digest{}, 0, false},
		{[]wire.Digest{a}, 1, a, 1, true},
		{[]wire.Digest{a}, 2, a, 1, false},
		{[]wire.Digest{a, b, a}, 2, a, 2, true},
		{[]wire.Digest{b, a, b, a, b}, 3, b, 3, true},
		{[]wire.Digest{a, b}, 2, wire.Digest{}, 1, false},
	} {
		h, idx, ok := Agreement(tc.hashes, tc.need)
		if ok != tc.ok || (ok && (h != tc.want || len(idx) != tc.n)) {
			t.Errorf("Agreement(%v, %d) = %v, %v, %v", tc.hashes, tc.need, h, idx, ok)
		}
		for _, i := range idx {
			if tc.hashes[i] != h {
				t.Errorf("index %d does not carry the agreed hash", i)
			}
		}
	}
}

func FuzzDecodeRequest(f *testing.F) {
	for _, r := range []*Request{{Type: TypeManifest, Seq: 8}, {Type: TypeBlocks, Seq: 1, To: 9}, {Type: TypeChunk, Seq: 8, Cursor: []byte("c")}} {
		b, _ := wire.Marshal(r)
		f.Add(b)
	}
	f.Add([]byte{0x86, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRequest(b)
		if err != nil {
			return
		}
		if len(r.Cursor) > MaxCursor || r.Seq == 0 || (r.Type == TypeBlocks && r.To < r.Seq) {
			t.Fatalf("accepted out of bounds: %+v", r)
		}
		again, err := wire.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeRequest(again); err != nil {
			t.Fatalf("re-encoding does not decode: %v", err)
		}
	})
}

func FuzzDecodeResponse(f *testing.F) {
	for _, r := range []*Response{
		{Type: TypeManifest, Seq: 8, Block: []byte{1}, TableSize: 3},
		{Type: TypeChunk, Seq: 8, Data: []byte("d"), More: true},
		{Type: TypeBlocks, Seq: 1, Blocks: [][]byte{{1}, {2}}},
	} {
		b, _ := wire.Marshal(r)
		f.Add(b, uint8(r.Type), r.Seq)
	}
	f.Fuzz(func(t *testing.T, b []byte, typ uint8, seq uint64) {
		r, err := DecodeResponse(b, Type(typ), seq)
		if err != nil {
			return
		}
		if r.Type != Type(typ) || r.Seq != seq || len(r.Data) > MaxPart || len(r.Blocks) > MaxBlocks {
			t.Fatalf("accepted %+v for %d/%d", r, typ, seq)
		}
	})
}
