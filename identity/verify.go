package identity

import (
	"fmt"
	"slices"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/oasisprotocol/curve25519-voi/primitives/ed25519"

	"github.com/p2pbft/p2pbft/wire"
)

// verifyOptions are the acceptance rules of every signature check in the project, single and batch alike.
//
// They are ZIP-215's rules (cofactored verification equation, non-canonical encodings of A and R accepted,
// S must be canonical), which make a signature's validity a property of the signature alone: single and
// batch verification cannot disagree, as they can with the cofactorless check of crypto/ed25519 (a
// signature whose R carries a small-order component passes a batch and fails crypto/ed25519). On top of
// ZIP-215 we reject small-order public keys: a signature under such a key verifies for many messages, so
// no honest author has one, and refusing them keeps every signature binding to one message.
var verifyOptions = &ed25519.Options{
	Verify: &ed25519.VerifyOptions{
		AllowSmallOrderA:   false,
		AllowSmallOrderR:   true,
		AllowNonCanonicalA: true,
		AllowNonCanonicalR: true,
	},
}

// minBatch is the smallest batch worth a batch verification. Measured (BenchmarkVerifyBatch against
// BenchmarkVerify, pre-expanded keys): a batch of 2 costs ~58 µs a signature against ~37 µs for single
// checks, a batch of 4 ~32 µs, 8 ~28 µs, 16 and more ~19-23 µs.
const minBatch = 4

// DefaultKeyCacheSize is how many parsed non-pinned (client) public keys a Verifier keeps. Each expanded key
// takes about 1.5 KiB.
const DefaultKeyCacheSize = 4096

// Verifier checks ed25519 envelope signatures. It implements wire.Verifier and is safe for concurrent use.
//
// Public keys are decompressed and expanded once (about 1.5 KiB each, which makes each later verification
// faster): the pinned keys (the replicas of the genesis) for the Verifier's lifetime, other keys (clients)
// in a bounded LRU cache. VerifyBatch uses batch verification, which costs a fraction of one verification
// per signature once a batch holds more than a few; when a batch fails it finds the bad signatures by
// checking them one by one, so its verdict on each envelope is exactly Verify's.
type Verifier struct {
	pinned map[string]*ed25519.ExpandedPublicKey // read-only after NewVerifier
	cache  *lru.Cache[string, *ed25519.ExpandedPublicKey]
}

var _ wire.Verifier = (*Verifier)(nil)

// NewVerifier returns a verifier that keeps the given keys (usually Genesis.PublicKeys) parsed for its
// lifetime and caches up to cacheSize others (DefaultKeyCacheSize if cacheSize <= 0).
func NewVerifier(pinned [][]byte, cacheSize int) (*Verifier, error) {
	if cacheSize <= 0 {
		cacheSize = DefaultKeyCacheSize
	}
	cache, err := lru.New[string, *ed25519.ExpandedPublicKey](cacheSize)
	if err != nil {
		return nil, fmt.Errorf("identity: key cache: %w", err)
	}
	v := &Verifier{pinned: make(map[string]*ed25519.ExpandedPublicKey, len(pinned)), cache: cache}
	for i, pub := range pinned {
		xk, err := expandKey(pub)
		if err != nil {
			return nil, fmt.Errorf("identity: pinned key %d: %w", i, err)
		}
		v.pinned[string(pub)] = xk
	}
	return v, nil
}

func expandKey(pub []byte) (*ed25519.ExpandedPublicKey, error) {
	if len(pub) != wire.PublicKeySize {
		return nil, fmt.Errorf("public key is %d bytes, want %d", len(pub), wire.PublicKeySize)
	}
	xk, err := ed25519.NewExpandedPublicKey(ed25519.PublicKey(pub))
	if err != nil {
		return nil, fmt.Errorf("public key is not a curve point: %w", err)
	}
	return xk, nil
}

// key returns the expanded form of pub from the pinned set or the cache, parsing it on a miss.
func (v *Verifier) key(pub []byte) (*ed25519.ExpandedPublicKey, error) {
	if xk, ok := v.pinned[string(pub)]; ok {
		return xk, nil
	}
	if xk, ok := v.cache.Get(string(pub)); ok {
		return xk, nil
	}
	xk, err := expandKey(pub)
	if err != nil {
		return nil, err
	}
	v.cache.Add(string(pub), xk)
	return xk, nil
}

// Verify checks e.Sig over e.SigningBytes() against e.Author. Errors wrap wire.ErrBadSignature. It does not
// check membership or the chain ID.
func (v *Verifier) Verify(e *wire.Envelope) error {
	if e == nil {
		return fmt.Errorf("identity: nil envelope: %w", wire.ErrBadSignature)
	}
	return v.VerifySignature(e.Author, e.SigningBytes(), e.Sig)
}

// VerifySignature checks an ed25519 signature over msg with the same rules as Verify.
func (v *Verifier) VerifySignature(pub, msg, sig []byte) error {
	if len(sig) != wire.SignatureSize {
		return fmt.Errorf("identity: signature is %d bytes, want %d: %w", len(sig), wire.SignatureSize, wire.ErrBadSignature)
	}
	xk, err := v.key(pub)
	if err != nil {
		return fmt.Errorf("identity: author key: %v: %w", err, wire.ErrBadSignature)
	}
	if !ed25519.VerifyExpandedWithOptions(xk, msg, sig, verifyOptions) {
		return fmt.Errorf("identity: signature by %x does not verify: %w", pub[:4], wire.ErrBadSignature)
	}
	return nil
}

// VerifyBatch checks all envelopes with one batch verification. It returns nil if every signature is
// valid, or a *wire.BatchError listing exactly the envelopes Verify would reject.
func (v *Verifier) VerifyBatch(es []*wire.Envelope) error {
	if len(es) < minBatch {
		var failed []int
		for i, e := range es {
			if v.Verify(e) != nil {
				failed = append(failed, i)
			}
		}
		if failed != nil {
			return &wire.BatchError{Failed: failed}
		}
		return nil
	}
	bv := ed25519.NewBatchVerifierWithCapacity(len(es))
	var failed []int
	idx := make([]int, 0, len(es)) // batch entry -> envelope index
	for i, e := range es {
		if e == nil || len(e.Sig) != wire.SignatureSize {
			failed = append(failed, i)
			continue
		}
		xk, err := v.key(e.Author)
		if err != nil {
			failed = append(failed, i)
			continue
		}
		bv.AddExpandedWithOptions(xk, e.SigningBytes(), e.Sig, verifyOptions)
		idx = append(idx, i)
	}
	if len(idx) > 0 {
		// A nil reader makes the batch draw its random coefficients from crypto/rand; the verdict does not
		// depend on them (a failed batch is resolved by single checks).
		allValid, valid := bv.Verify(nil)
		if !allValid {
			for j, ok := range valid {
				if !ok {
					failed = append(failed, idx[j])
				}
			}
		}
	}
	if len(failed) == 0 {
		return nil
	}
	slices.Sort(failed)
	return &wire.BatchError{Failed: failed}
}
