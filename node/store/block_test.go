package store

import (
	"bytes"
	"errors"
	"testing"

	"github.com/p2pbft/p2pbft/wire"
)

func TestBlockRoundTripAndHash(t *testing.T) {
	genesis := wire.Digest{9}
	b := testBlock(t, Ref{Hash: genesis}, 2, testRequests(t, 1, 5, 40), wire.Digest{7})
	data, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	d, err := DecodeBlock(data)
	if err != nil {
		t.Fatal(err)
	}
	if d.Hash() != b.Hash() || d.View != 2 || len(d.Batch) != 5 || len(d.Cert) != 3 || !bytes.Equal(d.Batch[4], b.Batch[4]) {
		t.Fatalf("round trip changed the block")
	}
	again, _ := d.Marshal()
	if !bytes.Equal(again, data) {
		t.Fatal("encoding is not deterministic")
	}
	// The hash covers height, prev, batch digest and app digest, and not the view or the certificate.
	h := b.Hash()
	for name, mutate := range map[string]func(*Block){
		"height": func(c *Block) { c.Height++ },
		"prev":   func(c *Block) { c.Prev[0] ^= 1 },
		"batch":  func(c *Block) { c.BatchDigest[31] ^= 1 },
		"app":    func(c *Block) { c.AppDigest[5] ^= 1 },
	} {
		c := *b
		mutate(&c)
		if c.Hash() == h {
			t.Errorf("changing %s does not change the hash", name)
		}
	}
	c := *b
	c.View, c.Cert = 7, nil
	if c.Hash() != h {
		t.Error("view or certificate changes the hash")
	}
}

func TestDecodeBlockRejectsMalformed(t *testing.T) {
	b := testBlock(t, Ref{}, 0, testRequests(t, 1, 2, 40), wire.Digest{})
	good, _ := b.Marshal()
	shortDigest, _ := wire.Marshal(&blockWire{Height: 1, Prev: make([]byte, 31), BatchDigest: make([]byte, 32), AppDigest: make([]byte, 32)})
	longDigest, _ := wire.Marshal(&blockWire{Height: 1, Prev: make([]byte, 32), BatchDigest: make([]byte, 33), AppDigest: make([]byte, 32)})
	zeroHeight, _ := wire.Marshal(&blockWire{Height: 0, Prev: make([]byte, 32), BatchDigest: make([]byte, 32), AppDigest: make([]byte, 32)})
	for name, data := range map[string][]byte{
		"empty":          nil,
		"truncated":      good[:len(good)-1],
		"trailing":       append(bytes.Clone(good), 0),
		"short digest":   shortDigest,
		"long digest":    longDigest,
		"height 0":       zeroHeight,
		"not an array":   {0xa0},
		"wrong arity":    {0x82, 0x01, 0x02},
		"indefinite":     {0x9f, 0xff},
		"huge bytes":     {0x87, 0x01, 0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"huge array":     {0x87, 0x01, 0x40, 0x00, 0x40, 0x40, 0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x80},
		"cut in a field": {0x87, 0x18, 0x01, 0x58, 0x20},
	} {
		if _, err := DecodeBlock(data); !errors.Is(err, ErrBadBlock) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestVerify(t *testing.T) {
	prev := Ref{Height: 4, Hash: wire.Digest{4}}
	good := testBlock(t, prev, 1, testRequests(t, 2, 3, 40), wire.Digest{5})
	if err := good.Verify(prev, testCertCheck); err != nil {
		t.Fatalf("good block: %v", err)
	}
	null := testBlock(t, prev, 1, nil, wire.Digest{5})
	if err := null.Verify(prev, testCertCheck); err != nil {
		t.Fatalf("null block: %v", err)
	}
	if err := good.Verify(prev, nil); err == nil {
		t.Error("verified without a certificate check")
	}
	commit, _ := wire.Seal(testReplicas[0], testChain, wire.KindCommit, []byte("x"))
	commitRaw, _ := commit.Marshal()
	forged, _ := wire.DecodeEnvelope(good.Cert[0])
	forged.Sig = bytes.Clone(forged.Sig)
	forged.Sig[0] ^= 1
	forgedRaw, _ := forged.Marshal()
	other := testBlock(t, prev, 1, testRequests(t, 3, 3, 40), wire.Digest{5})

	for name, mutate := range map[string]func(b *Block){
		"height":            func(b *Block) { b.Height++ },
		"prev":              func(b *Block) { b.Prev[0] ^= 1 },
		"batch digest":      func(b *Block) { b.BatchDigest[0] ^= 1 },
		"reordered batch":   func(b *Block) { b.Batch[0], b.Batch[1] = b.Batch[1], b.Batch[0] },
		"dropped request":   func(b *Block) { b.Batch = b.Batch[1:] },
		"malformed request": func(b *Block) { b.Batch[1] = []byte{0xff} },
		"not a request":     func(b *Block) { b.Batch[1] = commitRaw },
		"no certificate":    func(b *Block) { b.Cert = nil },
		"not a commit":      func(b *Block) { b.Cert[0] = b.Batch[0] },
		"forged commit":     func(b *Block) { b.Cert[0] = forgedRaw },
		"too few commits":   func(b *Block) { b.Cert = b.Cert[:2] },
		"duplicate signer":  func(b *Block) { b.Cert[2] = b.Cert[1] },
		"other block cert":  func(b *Block) { b.Cert = other.Cert },
		"view":              func(b *Block) { b.View++ }, // the certificate is for view 1
	} {
		c := *good
		c.Batch = append([][]byte(nil), good.Batch...)
		c.Cert = append([][]byte(nil), good.Cert...)
		mutate(&c)
		if err := c.Verify(prev, testCertCheck); !errors.Is(err, ErrBadBlock) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func FuzzDecodeBlock(f *testing.F) {
	b := testBlock(f, Ref{Hash: wire.Digest{1}}, 3, testRequests(f, 1, 2, 30), wire.Digest{2})
	good, _ := b.Marshal()
	f.Add(good)
	null, _ := testBlock(f, Ref{Height: 9}, 0, nil, wire.Digest{}).Marshal()
	f.Add(null)
	f.Add([]byte{0x87, 0x01, 0x40, 0x00, 0x40, 0x40, 0x80, 0x80})
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := DecodeBlock(data)
		if err != nil {
			if !errors.Is(err, ErrBadBlock) {
				t.Fatalf("error does not wrap ErrBadBlock: %v", err)
			}
			return
		}
		again, err := b.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		b2, err := DecodeBlock(again)
		if err != nil || b2.Hash() != b.Hash() || b2.View != b.View || len(b2.Batch) != len(b.Batch) || len(b2.Cert) != len(b.Cert) {
			t.Fatalf("round trip changed the block (%v)", err)
		}
		// Verify must not panic on anything that decodes.
		b.Verify(Ref{Height: b.Height - 1, Hash: b.Prev}, testCertCheck)
	})
}
