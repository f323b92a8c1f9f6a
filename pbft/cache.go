package pbft

import (
	"crypto/sha256"

	"github.com/p2pbft/p2pbft/wire"
)

// verifiedKey names a checked signature: the envelope ID (its signed content) and the signature bytes. The
// signature is part of the key so that an authentic statement carrying mangled signature bytes is not taken
// for verified and then embedded, as is, in a certificate this replica sends.
type verifiedKey struct {
	id  wire.Digest
	sig [wire.SignatureSize]byte
}

// verifiedCache is a bounded set of verified signatures: two generations of maps, the older dropped whole
// when the newer fills. Lookups and inserts are O(1) and memory stays below 2*size entries.
type verifiedCache struct {
	size     int
	cur, old map[verifiedKey]struct{}
}

func newVerifiedCache(size int) *verifiedCache {
	return &verifiedCache{size: size, cur: make(map[verifiedKey]struct{}, min(size, 1<<12))}
}

func keyOf(id wire.Digest, e *wire.Envelope) (verifiedKey, bool) {
	k := verifiedKey{id: id}
	if len(e.Sig) != wire.SignatureSize {
		return k, false
	}
	copy(k.sig[:], e.Sig)
	return k, true
}

func (c *verifiedCache) has(id wire.Digest, e *wire.Envelope) bool {
	k, ok := keyOf(id, e)
	if !ok {
		return false
	}
	if _, ok := c.cur[k]; ok {
		return true
	}
	_, ok = c.old[k]
	return ok
}

func (c *verifiedCache) add(id wire.Digest, e *wire.Envelope) {
	k, ok := keyOf(id, e)
	if !ok {
		return
	}
	if len(c.cur) >= c.size {
		c.old = c.cur
		c.cur = make(map[verifiedKey]struct{}, min(c.size, 1<<12))
	}
	c.cur[k] = struct{}{}
}

func (c *verifiedCache) len() int { return len(c.cur) + len(c.old) }

// envelopeID computes e.ID() without allocating: sha256 over the same signed string.
func envelopeID(e *wire.Envelope) wire.Digest {
	pd := e.PayloadDigest()
	var buf [len(wire.DomainTag) + 2 + wire.MaxChainIDLen + 2 + 2 + wire.PublicKeySize + 32]byte
	b := append(buf[:0], wire.DomainTag...)
	b = append(b, byte(len(e.ChainID)>>8), byte(len(e.ChainID)))
	b = append(b, e.ChainID...)
	b = append(b, byte(e.Kind>>8), byte(e.Kind))
	b = append(b, byte(len(e.Author)>>8), byte(len(e.Author)))
	b = append(b, e.Author...)
	b = append(b, pd[:]...)
	return sha256.Sum256(b)
}
