package identity

import (
	"bytes"
	"errors"
	"testing"

	"github.com/p2pbft/p2pbft/wire"
)

// Seeds live in testdata/fuzz/<FuzzName>/ as well as in the f.Add calls below. Run a target with, e.g.:
//
//	go test -run - -fuzz FuzzParseGenesis -fuzztime 30s ./identity/

func FuzzParseGenesis(f *testing.F) {
	_, reps := testReplicas(f, 4)
	g, err := NewGenesis("fuzz", reps)
	if err != nil {
		f.Fatal(err)
	}
	good, _ := g.Marshal()
	f.Add(good)
	f.Add([]byte("chain_id = \"x\"\n[[replica]]\npeer_id = \"12D3KooW\"\n"))
	f.Add([]byte("chain_id = 3"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := ParseGenesis(data)
		if err != nil {
			return
		}
		// Whatever parses must survive a round trip unchanged.
		out, err := g.Marshal()
		if err != nil {
			t.Fatalf("marshal a parsed genesis: %v", err)
		}
		g2, err := ParseGenesis(out)
		if err != nil {
			t.Fatalf("re-parse a marshalled genesis: %v\n%s", err, out)
		}
		if g2.Digest() != g.Digest() || g2.N() != g.N() || g2.F() != g.F() {
			t.Fatal("round trip changed the genesis")
		}
		if g.N() < 3*g.F()+1 {
			t.Fatalf("n=%d < 3f+1 with f=%d", g.N(), g.F())
		}
	})
}

func FuzzParseKeyFile(f *testing.F) {
	good, err := MarshalKeyFile(testKey(f, 1))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte("# comment\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParseKeyFile(data)
		if err != nil {
			return
		}
		out, err := MarshalKeyFile(k)
		if err != nil {
			t.Fatal(err)
		}
		k2, err := ParseKeyFile(out)
		if err != nil || !k2.Equal(k) {
			t.Fatalf("round trip: %v", err)
		}
		sig, _ := k.Sign([]byte("m"))
		v, _ := NewVerifier(nil, 1)
		if err := v.VerifySignature(k.PublicKey(), []byte("m"), sig); err != nil {
			t.Fatalf("a parsed key's signature does not verify: %v", err)
		}
	})
}

// FuzzVerifyAgree feeds arbitrary keys and signatures to Verify and VerifyBatch and checks that they
// agree (the batch also holds valid envelopes, so the multi-scalar path runs).
func FuzzVerifyAgree(f *testing.F) {
	k := testKey(f, 5)
	valid, _ := wire.Seal(k, "fuzz", wire.KindCommit, []byte("payload"))
	f.Add(valid.Author, valid.Sig, valid.Payload)
	f.Add(identityPoint(), append(identityPoint(), make([]byte, 32)...), []byte("x"))
	f.Add(make([]byte, 32), make([]byte, 64), []byte{})
	v := newVerifier(f, k)
	f.Fuzz(func(t *testing.T, author, sig, payload []byte) {
		e := &wire.Envelope{ChainID: "fuzz", Kind: wire.KindCommit, Author: author, Payload: payload, Sig: sig}
		single := v.Verify(e)
		if single != nil && !errors.Is(single, wire.ErrBadSignature) {
			t.Fatalf("Verify error does not wrap ErrBadSignature: %v", single)
		}
		a, _ := wire.Seal(k, "fuzz", wire.KindCommit, []byte("a"))
		b, _ := wire.Seal(k, "fuzz", wire.KindCommit, []byte("b"))
		batch := v.VerifyBatch([]*wire.Envelope{a, e, b})
		if (single == nil) != (batch == nil) {
			t.Fatalf("single says %v, batch says %v (author %x sig %x)", single, batch, author, sig)
		}
		if single == nil && !bytes.Equal(author, k.PublicKey()) && len(author) == 32 {
			// A forgery under another key would be remarkable; report it loudly.
			t.Fatalf("signature accepted for a key the fuzzer chose: author %x sig %x payload %x", author, sig, payload)
		}
	})
}
