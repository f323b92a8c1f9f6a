package p2p

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2pbft/p2pbft/wire"
)

// Verdict is a Filter's decision.
type Verdict int

// Verdicts.
const (
	// Pass lets the message go on to the signature check.
	Pass Verdict = iota
	// Ignore drops the message without penalising the peer that forwarded it: for messages our own
	// state makes uninteresting (stale view or sequence, far future, already have it).
	Ignore
	// Reject drops the message and penalises the forwarder: only for messages that are provably invalid
	// whoever sends them (a payload that cannot decode, say). Never for lateness.
	Reject
)

// Filter is the driver's cheap check on a decoded envelope from a known author, run before the
// signature check so that stale, far-future or duplicate messages cost no cryptography. author is the
// replica index of the envelope's author, or -1 for a client key. The envelope's signature is not yet
// verified, so the filter must not change state because of it. It is called concurrently from many
// goroutines and must be fast and safe for concurrent use.
type Filter func(e *wire.Envelope, author int) Verdict

// Path says how a message reached the host.
type Path int

// Paths.
const (
	ViaGossip Path = iota
	ViaDirect
	ViaRequest
	ViaLink // a client link (link.go)
)

func (p Path) String() string {
	switch p {
	case ViaGossip:
		return "gossip"
	case ViaDirect:
		return "direct"
	case ViaRequest:
		return "request"
	case ViaLink:
		return "link"
	}
	return "unknown"
}

// Delivery is a verified envelope handed to the application.
type Delivery struct {
	// Envelope has been decoded and its signature verified; its chain ID is the host's, and a replica
	// kind's author is a replica.
	Envelope *wire.Envelope
	// Author is the replica index of the envelope's author, or -1 if a client key signed it.
	Author int
	// From is the peer that handed the message over: the gossip forwarder (not necessarily the author)
	// or the remote of a direct stream.
	From peer.ID
	// FromReplica is From's replica index, or -1.
	FromReplica int
	// Via says which path the message took.
	Via Path
}

// validator holds the checks shared by the gossip topic validator and the direct-stream handlers.
type validator struct {
	h *Host
	// verified caches signatures already verified, keyed by sha256(signing bytes || signature): a message
	// that arrives again (a rebroadcast with a new Resend, or once by gossip and once by stream) is not
	// verified twice. Bounded; a miss only costs a verification.
	verified *lru.Cache[[32]byte, struct{}]
}

const verifiedCacheSize = 1 << 14

func newValidator(h *Host) (*validator, error) {
	c, err := lru.New[[32]byte, struct{}](verifiedCacheSize)
	if err != nil {
		return nil, err
	}
	return &validator{h: h, verified: c}, nil
}

// check runs the checks cheapest first: size, decode, chain ID, shape and kind, membership, the driver's
// filter, then (unless cached) the signature. It returns the decoded envelope, the author's replica
// index (-1 for a client) and the outcome.
func (v *validator) check(data []byte, from peer.ID, via Path) (*wire.Envelope, int, Result, Reason) {
	e, author, r, reason := v.precheck(data, from, via)
	if r != Accepted {
		return e, author, r, reason
	}
	if !v.verify(e) {
		return nil, author, Rejected, ReasonSignature
	}
	return e, author, Accepted, ReasonNone
}

// precheck runs every check of check but the signature: Accepted means the envelope may go on to the
// signature check (verify, or verifyBatch for many at once).
func (v *validator) precheck(data []byte, from peer.ID, via Path) (*wire.Envelope, int, Result, Reason) {
	h := v.h
	fromReplica := h.replicaIndex(from)
	limit := h.cfg.MaxMessageSize
	if fromReplica < 0 && via != ViaGossip {
		limit = h.cfg.MaxClientMessageSize
	}
	if len(data) > limit {
		return nil, -1, Rejected, ReasonOversized
	}
	e := new(wire.Envelope)
	if err := wire.Unmarshal(data, e); err != nil {
		return nil, -1, Rejected, ReasonMalformed
	}
	if e.ChainID != h.chainID {
		return nil, -1, Rejected, ReasonChain
	}
	if !e.Kind.Valid() {
		return nil, -1, Rejected, ReasonKind
	}
	if err := e.CheckShape(); err != nil {
		return nil, -1, Rejected, ReasonMalformed
	}
	author, member := h.genesis.IndexOfKey(e.Author)
	if !member {
		author = -1
		if e.Kind.IsReplicaKind() {
			return nil, -1, Rejected, ReasonNonMember
		}
		if via == ViaGossip && !h.cfg.AcceptClientRequests {
			return nil, -1, Rejected, ReasonKind
		}
	}
	if f := h.cfg.Filter; f != nil {
		switch f(e, author) {
		case Ignore:
			return nil, author, Ignored, ReasonFilter
		case Reject:
			return nil, author, Rejected, ReasonFilter
		}
	}
	return e, author, Accepted, ReasonNone
}

func (v *validator) verify(e *wire.Envelope) bool {
	key := sigCacheKey(e)
	if _, ok := v.verified.Get(key); ok {
		return true
	}
	if v.h.verifier.Verify(e) != nil {
		return false
	}
	v.verified.Add(key, struct{}{})
	return true
}

// verifyBatch verifies the signatures of es with one batch verification (the host's verifier, which may
// cache) and reports which are valid. It is for client traffic, whose signatures are new: it skips the
// host's own cache.
func (v *validator) verifyBatch(es []*wire.Envelope) []bool {
	ok := make([]bool, len(es))
	err := v.h.verifier.VerifyBatch(es)
	if err == nil {
		for i := range ok {
			ok[i] = true
		}
		return ok
	}
	var be *wire.BatchError
	if !errors.As(err, &be) {
		return ok // the verifier failed as a whole (shutting down): nothing is valid
	}
	for i := range ok {
		ok[i] = true
	}
	for _, j := range be.Failed {
		ok[j] = false
	}
	return ok
}

func sigCacheKey(e *wire.Envelope) [32]byte {
	h := sha256.New()
	h.Write(e.SigningBytes())
	h.Write(e.Sig)
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// trustOwn marks an envelope this host is about to send as verified: the node signed it with its own key,
// so checking it again on the local gossip publish would only burn CPU. Envelopes authored by other keys
// (relayed client requests) are still verified.
func (v *validator) trustOwn(e *wire.Envelope) {
	if bytes.Equal(e.Author, v.h.cfg.Key.PublicKey()) {
		v.verified.Add(sigCacheKey(e), struct{}{})
	}
}

// observe counts a checked message.
func (v *validator) observe(source string, from peer.ID, r Result, reason Reason, start time.Time) {
	v.h.metrics.count(source, from, r, reason)
	if r == Accepted {
		v.h.metrics.addValidationTime(time.Since(start))
	}
}
