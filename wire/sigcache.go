package wire

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
)

// SigKey names one verified signature: the envelope's ID (sha256 of exactly the bytes its author signed) and
// the signature bytes. Both are part of the key, so a cached entry vouches only for that signature over
// that signed content: different signed bytes (another chain, kind, author or payload) or different
// signature bytes (an authentic statement with mangled signature bytes, which a replica must not embed in a
// certificate it sends) miss. Unsigned fields (Body, Resend) are not part of it: they are not signed.
type SigKey struct {
	id  Digest
	sig [SignatureSize]byte
}

// SigKeyOf returns e's key, or false if e is nil or its signature is not SignatureSize bytes (such an
// envelope never verifies, so it is never cached).
func SigKeyOf(e *Envelope) (SigKey, bool) {
	var k SigKey
	if e == nil || len(e.Sig) != SignatureSize {
		return k, false
	}
	k.id = e.ID()
	copy(k.sig[:], e.Sig)
	return k, true
}

// SigCache is a bounded set of verified signatures (SigKey), safe for concurrent use: the one
// verified-signature cache of the project. The p2p host's validator, the node's verifier pool and the
// engine's verifications share one per replica, so a signature is checked once per replica whichever
// component meets it first.
//
// It holds two generations of maps; when the newer holds size entries the older is dropped whole and a new
// one started. Lookups and inserts are O(1), and it never holds more than 2*size entries. Whoever consults
// a cache takes a hit as proof: add only signatures that verified or that the caller made itself (a set of
// signatures trusted for another reason belongs in a cache of its own that no verifier consults).
type SigCache struct {
	size         int
	hits, misses atomic.Uint64

	mu       sync.Mutex
	cur, old map[SigKey]struct{}
}

// DefaultSigCacheSize is the generation size NewSigCache uses for size <= 0.
const DefaultSigCacheSize = 1 << 14

// NewSigCache returns an empty cache whose generations hold size entries each (DefaultSigCacheSize if
// size <= 0).
func NewSigCache(size int) *SigCache {
	if size <= 0 {
		size = DefaultSigCacheSize
	}
	return &SigCache{size: size, cur: make(map[SigKey]struct{}, min(size, 1<<12))}
}

// Has reports whether the signature k names was verified, counting a hit or a miss.
func (c *SigCache) Has(k SigKey) bool {
	c.mu.Lock()
	_, ok := c.cur[k]
	if !ok {
		_, ok = c.old[k]
	}
	c.mu.Unlock()
	if ok {
		c.hits.Add(1)
	} else {
		c.misses.Add(1)
	}
	return ok
}

// Add records that the signature k names is valid.
func (c *SigCache) Add(k SigKey) {
	c.mu.Lock()
	if len(c.cur) >= c.size {
		c.old, c.cur = c.cur, make(map[SigKey]struct{}, min(c.size, 1<<12))
	}
	c.cur[k] = struct{}{}
	c.mu.Unlock()
}

// HasEnvelope is Has(SigKeyOf(e)); false (a miss) for an envelope without a well-sized signature.
func (c *SigCache) HasEnvelope(e *Envelope) bool {
	k, ok := SigKeyOf(e)
	if !ok {
		c.misses.Add(1)
		return false
	}
	return c.Has(k)
}

// AddEnvelope is Add(SigKeyOf(e)); it ignores an envelope without a well-sized signature.
func (c *SigCache) AddEnvelope(e *Envelope) {
	if k, ok := SigKeyOf(e); ok {
		c.Add(k)
	}
}

// Len returns the number of entries held (at most 2*size).
func (c *SigCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cur) + len(c.old)
}

// Hits returns how many lookups found their signature.
func (c *SigCache) Hits() uint64 { return c.hits.Load() }

// Misses returns how many lookups did not.
func (c *SigCache) Misses() uint64 { return c.misses.Load() }

// CachedVerifier is a Verifier that consults and fills a SigCache: a caller that holds one can mark
// signatures it knows to be valid (its own) in Cache, and need not wrap the verifier in another cache.
type CachedVerifier interface {
	Verifier
	// Cache returns the cache the verifier consults and fills.
	Cache() *SigCache
}

// CachingVerifier verifies with another Verifier what its SigCache does not hold, and adds what verified.
// It is safe for concurrent use if the wrapped Verifier is.
type CachingVerifier struct {
	v     Verifier
	cache *SigCache
}

var _ CachedVerifier = (*CachingVerifier)(nil)

// NewCachingVerifier returns a verifier that checks signatures with v unless cache holds them.
func NewCachingVerifier(v Verifier, cache *SigCache) *CachingVerifier {
	return &CachingVerifier{v: v, cache: cache}
}

// Cache returns the verifier's cache.
func (c *CachingVerifier) Cache() *SigCache { return c.cache }

// Verify implements Verifier.
func (c *CachingVerifier) Verify(e *Envelope) error {
	k, ok := SigKeyOf(e)
	if ok && c.cache.Has(k) {
		return nil
	}
	if err := c.v.Verify(e); err != nil {
		return err
	}
	if ok {
		c.cache.Add(k)
	}
	return nil
}

// VerifyBatch implements Verifier: the signatures the cache does not hold are checked with one VerifyBatch
// call of the wrapped verifier.
func (c *CachingVerifier) VerifyBatch(es []*Envelope) error {
	var todo []*Envelope
	var idx []int
	var keys []SigKey
	var failed []int
	for i, e := range es {
		k, ok := SigKeyOf(e)
		if !ok {
			failed = append(failed, i)
			continue
		}
		if c.cache.Has(k) {
			continue
		}
		todo, idx, keys = append(todo, e), append(idx, i), append(keys, k)
	}
	if len(todo) > 0 {
		bad := map[int]bool{}
		if err := c.v.VerifyBatch(todo); err != nil {
			var be *BatchError
			if !errors.As(err, &be) {
				return err
			}
			for _, j := range be.Failed {
				bad[j] = true
			}
		}
		for j, i := range idx {
			if bad[j] {
				failed = append(failed, i)
			} else {
				c.cache.Add(keys[j])
			}
		}
	}
	if len(failed) == 0 {
		return nil
	}
	slices.Sort(failed)
	return &BatchError{Failed: failed}
}
