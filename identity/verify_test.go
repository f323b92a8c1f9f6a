package identity

import (
	"bytes"
	stded25519 "crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"errors"
	"math/big"
	mrand "math/rand/v2"
	"testing"

	"github.com/oasisprotocol/curve25519-voi/curve"
	"github.com/oasisprotocol/curve25519-voi/curve/scalar"
	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"

	"github.com/p2pbft/p2pbft/wire"
)

func newVerifier(t testing.TB, pinned ...*Key) *Verifier {
	t.Helper()
	var pubs [][]byte
	for _, k := range pinned {
		pubs = append(pubs, k.PublicKey())
	}
	v, err := NewVerifier(pubs, 0)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func seal(t testing.TB, k wire.Signer, payload string) *wire.Envelope {
	t.Helper()
	e, err := wire.Seal(k, "chain-a", wire.KindPrepare, []byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestVerifyAcceptsAndRejects(t *testing.T) {
	k, client := testKey(t, 1), testKey(t, 2)
	v := newVerifier(t, k)
	for _, signer := range []*Key{k, client} { // pinned and cached keys
		e := seal(t, signer, "hello")
		if err := v.Verify(e); err != nil {
			t.Fatalf("valid envelope by %s: %v", signer, err)
		}
		if err := v.Verify(e); err != nil { // second time from the cache
			t.Fatalf("valid envelope (cached key): %v", err)
		}
	}
	mutations := map[string]func(e *wire.Envelope){
		"payload":    func(e *wire.Envelope) { e.Payload = []byte("hellO") },
		"chain":      func(e *wire.Envelope) { e.ChainID = "chain-b" },
		"kind":       func(e *wire.Envelope) { e.Kind = wire.KindCommit },
		"author":     func(e *wire.Envelope) { e.Author = client.PublicKey() },
		"sig bit":    func(e *wire.Envelope) { e.Sig[10] ^= 0x40 },
		"short sig":  func(e *wire.Envelope) { e.Sig = e.Sig[:63] },
		"no sig":     func(e *wire.Envelope) { e.Sig = nil },
		"short key":  func(e *wire.Envelope) { e.Author = e.Author[:31] },
		"not point":  func(e *wire.Envelope) { e.Author = notAPoint() },
		"zero sig":   func(e *wire.Envelope) { e.Sig = make([]byte, 64) },
		"S + order":  func(e *wire.Envelope) { e.Sig = addOrderToS(e.Sig) },
		"other msg":  func(e *wire.Envelope) { e.Sig = seal(t, k, "other").Sig },
		"nil author": func(e *wire.Envelope) { e.Author = nil },
	}
	for name, mutate := range mutations {
		e := fresh(t, seal(t, k, "hello"))
		mutate(e)
		err := v.Verify(e)
		if !errors.Is(err, wire.ErrBadSignature) {
			t.Errorf("%s: Verify = %v, want ErrBadSignature", name, err)
		}
		var be *wire.BatchError
		if err := v.VerifyBatch([]*wire.Envelope{seal(t, k, "ok"), e}); !errors.As(err, &be) || len(be.Failed) != 1 || be.Failed[0] != 1 {
			t.Errorf("%s: VerifyBatch = %v, want failure at index 1", name, err)
		}
	}
	if err := v.Verify(nil); err == nil {
		t.Error("nil envelope accepted")
	}
}

// fresh returns a decoded copy of e, without the payload digest that Seal cached, so that tests can
// change the payload.
func fresh(t testing.TB, e *wire.Envelope) *wire.Envelope {
	t.Helper()
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	d, err := wire.DecodeEnvelope(b)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// notAPoint returns 32 bytes that do not decode to a curve point.
func notAPoint() []byte {
	for i := byte(2); ; i++ {
		b := make([]byte, 32)
		b[0] = i
		if _, err := voi.NewExpandedPublicKey(b); err != nil {
			return b
		}
	}
}

var groupOrder, _ = new(big.Int).SetString("7237005577332262213973186563042994240857116359379907606001950938285454250989", 10)

// addOrderToS returns the signature with S replaced by S + L: the same value mod L, but non-canonical.
func addOrderToS(sig []byte) []byte {
	s := new(big.Int).SetBytes(reverse(sig[32:]))
	s.Add(s, groupOrder)
	out := append([]byte(nil), sig[:32]...)
	sb := make([]byte, 32)
	s.FillBytes(sb)
	return append(out, reverse(sb)...)
}

func reverse(b []byte) []byte {
	out := make([]byte, len(b))
	for i := range b {
		out[len(b)-1-i] = b[i]
	}
	return out
}

// torsionSignature signs msg with k, but with a nonce point R = rB + T where T has order 8. The cofactored
// equation (ZIP-215, batch verification) accepts it; crypto/ed25519's cofactorless equation does not.
func torsionSignature(t *testing.T, k *Key, msg []byte) []byte {
	t.Helper()
	raw, _ := k.LibP2P().Raw()
	h := sha512.Sum512(raw[:32])
	h[0] &= 248
	h[31] &= 127
	h[31] |= 64
	a, err := scalar.NewFromBytesModOrder(h[:32])
	if err != nil {
		t.Fatal(err)
	}
	var rb [64]byte
	rand.Read(rb[:])
	r, _ := scalar.NewFromBytesModOrderWide(rb[:])
	var R curve.EdwardsPoint
	R.MulBasepoint(curve.ED25519_BASEPOINT_TABLE, r)
	R.Add(&R, curve.EIGHT_TORSION[1])
	var Rc curve.CompressedEdwardsY
	Rc.SetEdwardsPoint(&R)
	hh := sha512.New()
	hh.Write(Rc[:])
	hh.Write(k.PublicKey())
	hh.Write(msg)
	kk, _ := scalar.NewFromBytesModOrderWide(hh.Sum(nil))
	var S scalar.Scalar
	S.Mul(kk, a)
	S.Add(&S, r)
	sig := append([]byte(nil), Rc[:]...)
	var sb [32]byte
	if err := S.ToBytes(sb[:]); err != nil {
		t.Fatal(err)
	}
	return append(sig, sb[:]...)
}

// TestSingleAndBatchAgreeOnEdgeCases checks the edge cases where ed25519 implementations differ.
func TestSingleAndBatchAgreeOnEdgeCases(t *testing.T) {
	k := testKey(t, 4)
	v := newVerifier(t, k)

	// 1. Mixed-order R: valid under the cofactored equation, invalid under crypto/ed25519's.
	torsion := seal(t, k, "torsion")
	torsion.Sig = torsionSignature(t, k, torsion.SigningBytes())
	if stded25519.Verify(k.PublicKey(), torsion.SigningBytes(), torsion.Sig) {
		t.Fatal("test vector broken: crypto/ed25519 accepts the mixed-order R signature")
	}

	// 2. Small-order public key (the identity point) with R = identity, S = 0: every message "verifies"
	// under plain ZIP-215. We reject it.
	smallA := &wire.Envelope{ChainID: "chain-a", Kind: wire.KindPrepare, Author: identityPoint(), Payload: []byte("x")}
	smallA.Sig = append(identityPoint(), make([]byte, 32)...)
	zip215 := &voi.Options{Verify: voi.VerifyOptionsZIP_215}
	if !voi.VerifyWithOptions(smallA.Author, smallA.SigningBytes(), smallA.Sig, zip215) {
		t.Fatal("test vector broken: ZIP-215 should accept the small-order key signature")
	}

	// 3. Non-canonical S.
	nonCanonS := seal(t, k, "noncanonical")
	nonCanonS.Sig = addOrderToS(nonCanonS.Sig)

	cases := []struct {
		name string
		e    *wire.Envelope
		want bool
	}{
		{"valid", seal(t, k, "valid"), true},
		{"mixed-order R", torsion, true},
		{"small-order A", smallA, false},
		{"non-canonical S", nonCanonS, false},
	}
	for _, c := range cases {
		single := v.Verify(c.e) == nil
		batchAlone := v.VerifyBatch([]*wire.Envelope{c.e}) == nil
		// In a larger batch, next to valid signatures (the multi-scalar path).
		es := []*wire.Envelope{seal(t, k, "a"), c.e, seal(t, k, "b"), seal(t, k, "c")}
		batch := v.VerifyBatch(es)
		batchOK := batch == nil
		if single != c.want || batchAlone != c.want || batchOK != c.want {
			t.Errorf("%s: single=%v batch-of-1=%v batch-of-4=%v, want %v", c.name, single, batchAlone, batchOK, c.want)
		}
		var be *wire.BatchError
		if !c.want && (!errors.As(batch, &be) || len(be.Failed) != 1 || be.Failed[0] != 1) {
			t.Errorf("%s: batch error %v, want failure at index 1 only", c.name, batch)
		}
	}
}

func identityPoint() []byte {
	b := make([]byte, 32)
	b[0] = 1
	return b
}

// TestBatchMatchesSingle verifies random batches with random corruptions and checks that VerifyBatch
// reports exactly the envelopes Verify rejects.
func TestBatchMatchesSingle(t *testing.T) {
	seed := uint64(12345)
	rng := mrand.New(mrand.NewPCG(seed, 0))
	keys := []*Key{testKey(t, 1), testKey(t, 2), testKey(t, 3)}
	v := newVerifier(t, keys[:2]...) // keys[2] goes through the LRU cache
	for round := 0; round < 30; round++ {
		n := 1 + rng.IntN(40)
		es := make([]*wire.Envelope, n)
		for i := range es {
			e := fresh(t, seal(t, keys[rng.IntN(len(keys))], string(rune('a'+rng.IntN(26)))))
			switch rng.IntN(6) {
			case 0:
				e.Sig[rng.IntN(64)] ^= byte(1 << rng.IntN(8))
			case 1:
				e.Payload = append(e.Payload, 'x')
			}
			es[i] = e
		}
		var want []int
		for i, e := range es {
			if v.Verify(e) != nil {
				want = append(want, i)
			}
		}
		err := v.VerifyBatch(es)
		var got []int
		var be *wire.BatchError
		if errors.As(err, &be) {
			got = be.Failed
		} else if err != nil {
			t.Fatalf("seed %d round %d: unexpected error %v", seed, round, err)
		}
		if !equalInts(got, want) {
			t.Fatalf("seed %d round %d: batch failures %v, single failures %v", seed, round, got, want)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestVerifierCacheEviction(t *testing.T) {
	v, err := NewVerifier(nil, 2)
	if err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 3; round++ {
		for i := byte(0); i < 5; i++ {
			if err := v.Verify(seal(t, testKey(t, i), "m")); err != nil {
				t.Fatal(err)
			}
		}
	}
	if v.cache.Len() != 2 {
		t.Fatalf("cache holds %d keys, want 2", v.cache.Len())
	}
	if _, err := NewVerifier([][]byte{notAPoint()}, 0); err == nil {
		t.Fatal("NewVerifier accepted a pinned key that is not a point")
	}
}

func TestVerifySignatureRaw(t *testing.T) {
	k := testKey(t, 7)
	v := newVerifier(t)
	sig, _ := k.Sign([]byte("m"))
	if err := v.VerifySignature(k.PublicKey(), []byte("m"), sig); err != nil {
		t.Fatal(err)
	}
	if err := v.VerifySignature(k.PublicKey(), []byte("n"), sig); !errors.Is(err, wire.ErrBadSignature) {
		t.Fatalf("wrong message: %v", err)
	}
	if !bytes.Equal(k.PublicKey(), seal(t, k, "x").Author) {
		t.Fatal("Seal does not use the key's public key as author")
	}
}
