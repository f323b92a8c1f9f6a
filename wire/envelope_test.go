package wire_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/p2pbft/p2pbft/wire"
	"github.com/p2pbft/p2pbft/wire/wiretest"
)

func TestSealRoundTrip(t *testing.T) {
	k := wiretest.NewKey("replica-0")
	reg := wiretest.NewRegistry(k)
	e, err := wire.Seal(k, "chain-a", wire.KindPrepare, []byte("payload"))
	if err != nil {
		t.Fatal(err)
	}
	e.Body = []byte("body")
	e.Resend = 3
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	d, err := wire.DecodeEnvelope(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Verify(d); err != nil {
		t.Fatalf("verify decoded: %v", err)
	}
	if d.ID() != e.ID() || !bytes.Equal(d.Body, e.Body) || d.Resend != 3 {
		t.Fatalf("decoded envelope differs: %+v vs %+v", d, e)
	}
	// Unsigned fields do not change the ID; WithoutBody keeps the signature valid.
	wb := d.WithoutBody()
	if wb.ID() != e.ID() || wb.Body != nil || reg.Verify(wb) != nil {
		t.Fatal("WithoutBody changed the signed content")
	}
}

func TestSignatureBindsEveryField(t *testing.T) {
	k := wiretest.NewKey("replica-0")
	other := wiretest.NewKey("replica-1")
	reg := wiretest.NewRegistry(k, other)
	base, _ := wire.Seal(k, "chain-a", wire.KindPrepare, []byte("payload"))
	mutations := map[string]func(e *wire.Envelope){
		"chain":   func(e *wire.Envelope) { e.ChainID = "chain-b" },
		"kind":    func(e *wire.Envelope) { e.Kind = wire.KindCommit },
		"author":  func(e *wire.Envelope) { e.Author = other.PublicKey() },
		"payload": func(e *wire.Envelope) { e.Payload = []byte("payloaX") },
		"sig":     func(e *wire.Envelope) { e.Sig = append([]byte{}, e.Sig...); e.Sig[0] ^= 1 },
	}
	for name, mutate := range mutations {
		b, _ := base.Marshal()
		e, err := wire.DecodeEnvelope(b)
		if err != nil {
			t.Fatal(err)
		}
		mutate(e)
		if err := reg.Verify(e); !errors.Is(err, wire.ErrBadSignature) {
			t.Errorf("%s: mutated envelope verified (err=%v)", name, err)
		}
	}
}

func TestDecodeRejectsBadShapes(t *testing.T) {
	k := wiretest.NewKey("r")
	good, _ := wire.Seal(k, "c", wire.KindCommit, []byte{1})
	cases := map[string]func(e *wire.Envelope){
		"unknown kind":  func(e *wire.Envelope) { e.Kind = 999 },
		"empty chain":   func(e *wire.Envelope) { e.ChainID = "" },
		"long chain":    func(e *wire.Envelope) { e.ChainID = string(make([]byte, wire.MaxChainIDLen+1)) },
		"short author":  func(e *wire.Envelope) { e.Author = e.Author[:31] },
		"short sig":     func(e *wire.Envelope) { e.Sig = e.Sig[:10] },
		"missing sig":   func(e *wire.Envelope) { e.Sig = nil },
		"invalid kind0": func(e *wire.Envelope) { e.Kind = wire.KindInvalid },
	}
	for name, mutate := range cases {
		c := *good
		mutate(&c)
		b, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := wire.DecodeEnvelope(b); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	b, _ := good.Marshal()
	for _, bad := range [][]byte{nil, {0xff}, b[:len(b)-1], append(append([]byte{}, b...), 0)} {
		if _, err := wire.DecodeEnvelope(bad); err == nil {
			t.Errorf("decoded %x without error", bad)
		}
	}
}

func TestDeterministicEncoding(t *testing.T) {
	k := wiretest.NewKey("r")
	e1, _ := wire.Seal(k, "c", wire.KindCheckpoint, []byte("x"))
	e2, _ := wire.Seal(k, "c", wire.KindCheckpoint, []byte("x"))
	b1, _ := e1.Marshal()
	b2, _ := e2.Marshal()
	if !bytes.Equal(b1, b2) {
		t.Fatal("same envelope encoded differently")
	}
}

func TestVerifyBatchReportsFailures(t *testing.T) {
	k := wiretest.NewKey("r")
	reg := wiretest.NewRegistry(k)
	var es []*wire.Envelope
	for i := 0; i < 5; i++ {
		e, _ := wire.Seal(k, "c", wire.KindRequest, []byte{byte(i)})
		es = append(es, e)
	}
	es[1].Sig = append([]byte{}, es[1].Sig...)
	es[1].Sig[3] ^= 0xff
	es[4] = &wire.Envelope{ChainID: es[4].ChainID, Kind: es[4].Kind, Author: es[4].Author, Payload: []byte("changed"), Sig: es[4].Sig}
	var be *wire.BatchError
	if err := reg.VerifyBatch(es); !errors.As(err, &be) || len(be.Failed) != 2 || be.Failed[0] != 1 || be.Failed[1] != 4 {
		t.Fatalf("VerifyBatch = %v", err)
	}
}

func FuzzDecodeEnvelope(f *testing.F) {
	k := wiretest.NewKey("r")
	for _, kind := range []wire.Kind{wire.KindPrePrepare, wire.KindRequest, wire.KindViewChange} {
		e, _ := wire.Seal(k, "chain", kind, []byte("some payload"))
		e.Body = []byte{1, 2, 3}
		b, _ := e.Marshal()
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0x87})
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := wire.DecodeEnvelope(data)
		if err != nil {
			return
		}
		if e.CheckShape() != nil {
			t.Fatal("decoded envelope fails its own shape check")
		}
		b, err := e.Marshal()
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		e2, err := wire.DecodeEnvelope(b)
		if err != nil {
			t.Fatalf("decode of re-encoded envelope: %v", err)
		}
		if e2.ID() != e.ID() || !bytes.Equal(e2.Sig, e.Sig) || !bytes.Equal(e2.Body, e.Body) || e2.Resend != e.Resend {
			t.Fatal("round trip changed the envelope")
		}
	})
}

func BenchmarkEnvelopeEncode(b *testing.B) {
	k := wiretest.NewKey("r")
	e, _ := wire.Seal(k, "chain", wire.KindPrepare, make([]byte, 100))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Marshal(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEnvelopeDecode(b *testing.B) {
	k := wiretest.NewKey("r")
	e, _ := wire.Seal(k, "chain", wire.KindPrepare, make([]byte, 100))
	data, _ := e.Marshal()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := wire.DecodeEnvelope(data); err != nil {
			b.Fatal(err)
		}
	}
}

func TestDigestDecodeIsStrict(t *testing.T) {
	type holder struct {
		_ struct{} `cbor:",toarray"`
		D wire.Digest
	}
	good, err := wire.Marshal(&holder{D: wire.Digest{1, 2, 3}})
	if err != nil {
		t.Fatal(err)
	}
	var h holder
	if err := wire.Unmarshal(good, &h); err != nil || h.D != (wire.Digest{1, 2, 3}) {
		t.Fatalf("round trip: %v %v", err, h.D)
	}
	short := []byte{0x81, 0x42, 1, 2}
	long := append([]byte{0x81, 0x58, 33}, make([]byte, 33)...)
	for _, bad := range [][]byte{short, long, {0x81, 0x01}} {
		if err := wire.Unmarshal(bad, &h); err == nil {
			t.Errorf("decoded %x into a digest", bad)
		}
	}
}
