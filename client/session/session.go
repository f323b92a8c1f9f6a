// Package session derives a client's session keys and hands out their timestamps. PBFT lets one client key
// have one request outstanding (a later timestamp supersedes an earlier one), so a client that wants many
// requests in flight signs each with its own session key, derived from its client key so that anyone holding
// the client key can derive the same sessions again (after a restart, or in the replica's HTTP API, which
// signs for the node's client key). Both package client and node/api use it; it needs no network.
package session

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

const sessionKeyTag = "p2pbft/client-session/v1\x00"

// DeriveKey returns session key i of a client key: the key itself for i = 0, otherwise an ed25519
// key whose seed is sha256(tag | seed of base | i). Anyone holding base can derive the same keys, and no
// one without it can.
func DeriveKey(base *identity.Key, i int) (*identity.Key, error) {
	if base == nil {
		return nil, errors.New("session: nil client key")
	}
	if i < 0 {
		return nil, fmt.Errorf("session: session %d: negative index", i)
	}
	if i == 0 {
		return base, nil
	}
	raw, err := base.LibP2P().Raw() // ed25519: 32-byte seed | 32-byte public key
	if err != nil || len(raw) < 32 {
		return nil, fmt.Errorf("session: client key bytes: %v", err)
	}
	h := sha256.New()
	h.Write([]byte(sessionKeyTag))
	h.Write(raw[:32])
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(i))
	h.Write(b[:])
	return identity.NewKeyFromSeed(h.Sum(nil))
}

// Session is one signing identity with its own timestamp sequence; it may have one request outstanding
// at a time. Sessions hand out strictly increasing, time-based timestamps (see package client).
type Session struct {
	index int
	key   *identity.Key
	now   func() time.Time

	mu     sync.Mutex
	lastTS uint64
}

// Index returns the session's index in its pool.
func (s *Session) Index() int { return s.index }

// Key returns the session's signing key.
func (s *Session) Key() *identity.Key { return s.key }

// NextTimestamp returns a timestamp larger than every one the session returned before:
// max(previous+1, wall clock in Unix nanoseconds).
func (s *Session) NextTimestamp() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := uint64(max(s.now().UnixNano(), 1))
	if ts <= s.lastTS {
		ts = s.lastTS + 1
	}
	s.lastTS = ts
	return ts
}

// NewRequest signs a request for op under the session's key with its next timestamp.
func (s *Session) NewRequest(chainID string, op []byte) (*wire.Envelope, uint64, error) {
	ts := s.NextTimestamp()
	env, err := pbft.NewRequest(s.key, chainID, ts, op)
	if err != nil {
		return nil, 0, fmt.Errorf("session: sign request: %w", err)
	}
	return env, ts, nil
}

// Pool is a pool of sessions derived from one client key. Acquire hands out a free session; Release
// returns it. It is safe for concurrent use. The HTTP API uses it too, to sign the operations it
// submits with the node's client key.
type Pool struct {
	all  []*Session
	free chan *Session
}

// NewPool derives n sessions from base (session 0 signs with base itself).
func NewPool(base *identity.Key, n int) (*Pool, error) {
	return newPool(base, n, time.Now)
}

func newPool(base *identity.Key, n int, now func() time.Time) (*Pool, error) {
	if n < 1 {
		return nil, fmt.Errorf("session: %d sessions: need at least 1", n)
	}
	p := &Pool{all: make([]*Session, n), free: make(chan *Session, n)}
	for i := range n {
		k, err := DeriveKey(base, i)
		if err != nil {
			return nil, err
		}
		s := &Session{index: i, key: k, now: now}
		p.all[i] = s
		p.free <- s
	}
	return p, nil
}

// Len returns the number of sessions.
func (p *Pool) Len() int { return len(p.all) }

// Session returns session i.
func (p *Pool) Session(i int) *Session { return p.all[i] }

// Acquire waits for a free session until done is closed; it returns nil if done closed first.
func (p *Pool) Acquire(done <-chan struct{}) *Session {
	select {
	case s := <-p.free:
		return s
	default:
	}
	select {
	case s := <-p.free:
		return s
	case <-done:
		return nil
	}
}

// TryAcquire returns a free session, or nil if all are busy.
func (p *Pool) TryAcquire() *Session {
	select {
	case s := <-p.free:
		return s
	default:
		return nil
	}
}

// Release returns a session to the pool. Release it only once its request is answered or abandoned.
func (p *Pool) Release(s *Session) { p.free <- s }

// Busy returns how many sessions are in use.
func (p *Pool) Busy() int { return len(p.all) - len(p.free) }
