package p2p

import (
	"sync/atomic"
	"testing"

	"github.com/p2pbft/p2pbft/wire"
)

// countVerifier counts the signatures it checks.
type countVerifier struct {
	wire.Verifier
	n atomic.Int64
}

func (c *countVerifier) Verify(e *wire.Envelope) error { c.n.Add(1); return c.Verifier.Verify(e) }

func (c *countVerifier) VerifyBatch(es []*wire.Envelope) error {
	c.n.Add(int64(len(es)))
	return c.Verifier.VerifyBatch(es)
}

// The validator verifies a signature once: through a cache of its own in front of a plain verifier, or
// through the cache of a wire.CachedVerifier it is given, which then also takes the host's own messages.
func TestValidatorSignatureCache(t *testing.T) {
	h, keys := fuzzHost(t)
	inner := &countVerifier{Verifier: h.verifier}
	h.verifier = inner
	h.val = newValidator(h)
	e, _ := wire.Seal(keys[1], "fuzz-chain", wire.KindPrepare, []byte("p"))
	for range 3 {
		if !h.val.verify(e) {
			t.Fatal("valid signature rejected")
		}
	}
	if ok := h.val.verifyBatch([]*wire.Envelope{e}); !ok[0] {
		t.Fatal("valid signature rejected in a batch")
	}
	if n := inner.n.Load(); n != 1 {
		t.Fatalf("own cache: %d verifications, want 1", n)
	}

	shared := wire.NewSigCache(64)
	h.verifier = wire.NewCachingVerifier(inner, shared)
	h.val = newValidator(h)
	if h.val.verifier.Cache() != shared {
		t.Fatal("the validator did not take the verifier's cache")
	}
	own, _ := wire.Seal(keys[0], "fuzz-chain", wire.KindCommit, []byte("c"))
	h.val.trustOwn(own)
	notOwn, _ := wire.Seal(keys[2], "fuzz-chain", wire.KindCommit, []byte("c"))
	h.val.trustOwn(notOwn)
	if !shared.HasEnvelope(own) || shared.HasEnvelope(notOwn) {
		t.Fatal("trustOwn: own message not in the shared cache, or another's is")
	}
	before := inner.n.Load()
	if !h.val.verify(own) || inner.n.Load() != before {
		t.Fatal("own message verified again")
	}
}
