// Package wiretest provides a cheap, deterministic stand-in for ed25519 signatures, for tests, simulations and
// benchmarks that must not spend their time in crypto. A fake key is a secret seed; its "public key" is a
// hash of the seed, and a signature is SHA-512(seed || message). Only a Registry that knows the seeds can
// verify, so a simulated Byzantine replica that does not hold a key cannot forge that key's signatures.
package wiretest

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"sync"

	"github.com/p2pbft/p2pbft/wire"
)

// Key is a fake signing key. It implements wire.Signer.
type Key struct {
	seed [32]byte
	pub  []byte
}

// NewKey derives a fake key from a name (for example "replica-0" or "client-7").
func NewKey(name string) *Key {
	k := &Key{seed: sha256.Sum256([]byte("wiretest/seed/" + name))}
	p := sha256.Sum256(append([]byte("wiretest/pub/"), k.seed[:]...))
	k.pub = p[:]
	return k
}

// PublicKey returns the fake 32-byte public key.
func (k *Key) PublicKey() []byte { return k.pub }

// Sign returns SHA-512(seed || msg).
func (k *Key) Sign(msg []byte) ([]byte, error) {
	h := sha512.New()
	h.Write(k.seed[:])
	h.Write(msg)
	return h.Sum(nil), nil
}

// Registry verifies fake signatures of the keys registered with it. It implements wire.Verifier and is safe
// for concurrent use.
type Registry struct {
	mu   sync.RWMutex
	keys map[string]*Key
}

// NewRegistry returns a registry that knows the given keys.
func NewRegistry(keys ...*Key) *Registry {
	r := &Registry{keys: make(map[string]*Key)}
	for _, k := range keys {
		r.Add(k)
	}
	return r
}

// Add registers a key.
func (r *Registry) Add(k *Key) {
	r.mu.Lock()
	r.keys[string(k.pub)] = k
	r.mu.Unlock()
}

// Verify checks e.Sig against the registered key of e.Author.
func (r *Registry) Verify(e *wire.Envelope) error {
	r.mu.RLock()
	k := r.keys[string(e.Author)]
	r.mu.RUnlock()
	if k == nil {
		return fmt.Errorf("wiretest: unknown author %x: %w", e.Author, wire.ErrBadSignature)
	}
	want, _ := k.Sign(e.SigningBytes())
	if !bytes.Equal(want, e.Sig) {
		return fmt.Errorf("wiretest: %s from %x: %w", e.Kind, e.Author[:4], wire.ErrBadSignature)
	}
	return nil
}

// VerifyBatch verifies each envelope and reports the failures as a *wire.BatchError.
func (r *Registry) VerifyBatch(es []*wire.Envelope) error {
	var failed []int
	for i, e := range es {
		if r.Verify(e) != nil {
			failed = append(failed, i)
		}
	}
	if failed != nil {
		return &wire.BatchError{Failed: failed}
	}
	return nil
}
