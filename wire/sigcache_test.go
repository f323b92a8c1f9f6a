package wire_test

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/p2pbft/p2pbft/wire"
	"github.com/p2pbft/p2pbft/wire/wiretest"
)

// The ID is sha256 of exactly the signed bytes, and computing it allocates nothing.
func TestIDIsDigestOfSigningBytes(t *testing.T) {
	k := wiretest.NewKey("a")
	for _, chain := range []string{"c", string(make([]byte, wire.MaxChainIDLen))} {
		e, err := wire.Seal(k, chain, wire.KindRequest, []byte("op"))
		if err != nil {
			t.Fatal(err)
		}
		if e.ID() != sha256.Sum256(e.SigningBytes()) {
			t.Fatal("ID is not sha256(SigningBytes)")
		}
		if n := testing.AllocsPerRun(100, func() { _ = e.ID() }); n != 0 {
			t.Fatalf("ID: %v allocations", n)
		}
	}
	// An envelope of bad shape (longer fields) still gets the digest of its signed string.
	e := &wire.Envelope{ChainID: string(make([]byte, 2*wire.MaxChainIDLen)), Kind: wire.KindRequest,
		Author: make([]byte, 100), Payload: []byte("x")}
	if e.ID() != sha256.Sum256(e.SigningBytes()) {
		t.Fatal("ID of an oversized envelope is not sha256(SigningBytes)")
	}
}

func sealN(t testing.TB, k *wiretest.Key, n int) []*wire.Envelope {
	t.Helper()
	es := make([]*wire.Envelope, n)
	for i := range es {
		e, err := wire.Seal(k, "chain", wire.KindRequest, fmt.Appendf(nil, "op-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		es[i] = e
	}
	return es
}

func TestSigCacheKey(t *testing.T) {
	k, other := wiretest.NewKey("a"), wiretest.NewKey("b")
	e := sealN(t, k, 1)[0]
	c := wire.NewSigCache(16)
	if c.HasEnvelope(e) {
		t.Fatal("empty cache has the envelope")
	}
	c.AddEnvelope(e)
	if !c.HasEnvelope(e) {
		t.Fatal("added envelope missing")
	}
	// Unsigned fields are not part of what is signed: still a hit.
	wb := e.WithoutBody()
	wb.Body, wb.Resend = []byte("body"), 7
	if !c.HasEnvelope(wb) {
		t.Fatal("same signed content and signature, other unsigned fields: miss")
	}

	misses := map[string]*wire.Envelope{}
	sig := slices.Clone(e.Sig)
	sig[0] ^= 1
	misses["other signature bytes"] = &wire.Envelope{ChainID: e.ChainID, Kind: e.Kind, Author: e.Author, Payload: e.Payload, Sig: sig}
	misses["other payload"] = &wire.Envelope{ChainID: e.ChainID, Kind: e.Kind, Author: e.Author, Payload: []byte("op-x"), Sig: e.Sig}
	misses["other chain"] = &wire.Envelope{ChainID: "chain2", Kind: e.Kind, Author: e.Author, Payload: e.Payload, Sig: e.Sig}
	misses["other kind"] = &wire.Envelope{ChainID: e.ChainID, Kind: wire.KindPrepare, Author: e.Author, Payload: e.Payload, Sig: e.Sig}
	misses["other author"] = &wire.Envelope{ChainID: e.ChainID, Kind: e.Kind, Author: other.PublicKey(), Payload: e.Payload, Sig: e.Sig}
	misses["short signature"] = &wire.Envelope{ChainID: e.ChainID, Kind: e.Kind, Author: e.Author, Payload: e.Payload, Sig: e.Sig[:63]}
	misses["nil"] = nil
	for name, m := range misses {
		if c.HasEnvelope(m) {
			t.Errorf("%s: hit", name)
		}
	}
	if _, ok := wire.SigKeyOf(misses["short signature"]); ok {
		t.Error("key of a short signature")
	}
	if got, want := c.Hits(), uint64(2); got != want {
		t.Errorf("hits %d, want %d", got, want)
	}
	if got, want := c.Misses(), uint64(1+len(misses)); got != want {
		t.Errorf("misses %d, want %d", got, want)
	}
}

// The cache holds at most two generations: never more than 2*size entries, and the newest size entries
// always.
func TestSigCacheBounded(t *testing.T) {
	const size = 8
	c := wire.NewSigCache(size)
	es := sealN(t, wiretest.NewKey("a"), 5*size)
	for i, e := range es {
		c.AddEnvelope(e)
		if c.Len() > 2*size {
			t.Fatalf("after %d adds: %d entries", i+1, c.Len())
		}
		for _, recent := range es[max(0, i+1-size) : i+1] {
			if !c.HasEnvelope(recent) {
				t.Fatalf("after %d adds: a recent entry is gone", i+1)
			}
		}
	}
	if c.HasEnvelope(es[0]) {
		t.Fatal("the oldest entry survived 5 generations")
	}
	if wire.NewSigCache(0).Len() != 0 {
		t.Fatal("default cache not empty")
	}
}

// countingVerifier counts the signatures it checks.
type countingVerifier struct {
	v wire.Verifier
	n atomic.Int64
}

func (c *countingVerifier) Verify(e *wire.Envelope) error {
	c.n.Add(1)
	return c.v.Verify(e)
}

func (c *countingVerifier) VerifyBatch(es []*wire.Envelope) error {
	c.n.Add(int64(len(es)))
	return c.v.VerifyBatch(es)
}

func TestCachingVerifier(t *testing.T) {
	k := wiretest.NewKey("a")
	inner := &countingVerifier{v: wiretest.NewRegistry(k)}
	cv := wire.NewCachingVerifier(inner, wire.NewSigCache(64))
	es := sealN(t, k, 6)
	bad := &wire.Envelope{ChainID: es[1].ChainID, Kind: es[1].Kind, Author: es[1].Author, Payload: es[1].Payload, Sig: slices.Clone(es[1].Sig)}
	bad.Sig[5] ^= 1
	if err := cv.Verify(es[0]); err != nil {
		t.Fatal(err)
	}
	if err := cv.Verify(es[0]); err != nil || inner.n.Load() != 1 {
		t.Fatalf("second Verify: %v, %d checks", err, inner.n.Load())
	}
	if err := cv.Verify(bad); !errors.Is(err, wire.ErrBadSignature) {
		t.Fatalf("bad signature: %v", err)
	}
	if cv.Cache().HasEnvelope(bad) {
		t.Fatal("a bad signature was cached")
	}
	// es[0] cached; es[1] is authentic but bad carries mangled bytes of it; a short signature fails without
	// reaching the verifier.
	short := &wire.Envelope{ChainID: "chain", Kind: wire.KindRequest, Author: k.PublicKey(), Payload: []byte("s"), Sig: []byte{1}}
	batch := []*wire.Envelope{es[0], bad, es[2], short, es[3], es[1]}
	before := inner.n.Load()
	var be *wire.BatchError
	if err := cv.VerifyBatch(batch); !errors.As(err, &be) || !slices.Equal(be.Failed, []int{1, 3}) {
		t.Fatalf("VerifyBatch: %v", err)
	}
	if got := inner.n.Load() - before; got != 4 {
		t.Fatalf("VerifyBatch checked %d signatures, want 4 (all but the cached and the short one)", got)
	}
	before = inner.n.Load()
	if err := cv.VerifyBatch([]*wire.Envelope{es[0], es[1], es[2], es[3]}); err != nil || inner.n.Load() != before {
		t.Fatalf("all cached: %v, %d checks", err, inner.n.Load()-before)
	}
	if err := cv.VerifyBatch(nil); err != nil {
		t.Fatal(err)
	}
}

// Many goroutines looking up, adding and verifying through one cache (run it with -race): every lookup of a
// valid signature after its Add hits, no invalid one is ever taken for valid, and the bound holds.
func TestSigCacheConcurrent(t *testing.T) {
	k := wiretest.NewKey("a")
	const size, workers, perWorker = 64, 8, 200
	c := wire.NewSigCache(size)
	cv := wire.NewCachingVerifier(wiretest.NewRegistry(k), c)
	es := sealN(t, k, 3*size)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				e := es[(w*perWorker+i)%len(es)]
				switch i % 4 {
				case 0:
					c.AddEnvelope(e)
					if c.Len() > 2*size {
						t.Errorf("%d entries", c.Len())
						return
					}
				case 1:
					c.HasEnvelope(e)
				case 2:
					if err := cv.VerifyBatch(es[i%size : i%size+8]); err != nil {
						t.Error(err)
						return
					}
				case 3:
					bad := &wire.Envelope{ChainID: e.ChainID, Kind: e.Kind, Author: e.Author, Payload: e.Payload, Sig: slices.Clone(e.Sig)}
					bad.Sig[i%wire.SignatureSize] ^= 0x80
					if cv.Verify(bad) == nil || c.HasEnvelope(bad) {
						t.Error("a mangled signature passed")
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if c.Len() > 2*size {
		t.Fatalf("%d entries", c.Len())
	}
	if c.Hits()+c.Misses() == 0 {
		t.Fatal("no lookups counted")
	}
}
