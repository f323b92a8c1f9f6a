package client

import (
	"sync"

	"github.com/p2pbft/p2pbft/wire"
)

// headerCache remembers verified reply headers (one per batch and replica, shared by all the replies of the
// batch): two generations of maps, the older dropped whole when the newer fills.
type headerCache struct {
	mu       sync.Mutex
	size     int
	cur, old map[headerKey]struct{}
}

type headerKey struct {
	id  wire.Digest
	sig [wire.SignatureSize]byte
}

func newHeaderCache(size int) *headerCache {
	return &headerCache{size: size, cur: make(map[headerKey]struct{})}
}

// verify checks e's signature unless a header with the same content and signature was verified before.
func (h *headerCache) verify(v wire.Verifier, e *wire.Envelope) error {
	var k headerKey
	k.id = e.ID()
	copy(k.sig[:], e.Sig)
	h.mu.Lock()
	_, hit := h.cur[k]
	if !hit {
		_, hit = h.old[k]
	}
	h.mu.Unlock()
	if hit {
		return nil
	}
	if err := v.Verify(e); err != nil {
		return err
	}
	h.mu.Lock()
	if len(h.cur) >= h.size {
		h.old, h.cur = h.cur, make(map[headerKey]struct{}, h.size)
	}
	h.cur[k] = struct{}{}
	h.mu.Unlock()
	return nil
}
