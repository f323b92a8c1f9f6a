package p2p

import (
	"bytes"
	"errors"
	"time"

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
	// verifier is the host's verifier with the verified-signature cache in front (wire.SigCache, keyed by
	// envelope ID and signature): a message that arrives again (a rebroadcast with a new Resend, or once by
	// gossip and once by stream) is not verified twice. A Config.Verifier that has a cache already
	// (wire.CachedVerifier: the node's pool, whose cache the engine shares) is used as it is; any other gets
	// a cache of the host's own. Bounded; a miss only costs a verification.
	verifier wire.CachedVerifier
}

// verifiedCacheSize is the generation size of the host's own cache (when Config.Verifier has none).
const verifiedCacheSize = 1 << 14

func newValidator(h *Host) *validator {
	cv, ok := h.verifier.(wire.CachedVerifier)
	if !ok || cv.Cache() == nil {
		cv = wire.NewCachingVerifier(h.verifier, wire.NewSigCache(verifiedCacheSize))
	}
	return &validator{h: h, verifier: cv}
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

// verify checks e's signature unless the cache holds it.
func (v *validator) verify(e *wire.Envelope) bool { return v.verifier.Verify(e) == nil }

// verifyBatch verifies the signatures of es that the cache does not hold with one batch verification and
// reports which are valid.
func (v *validator) verifyBatch(es []*wire.Envelope) []bool {
	ok := make([]bool, len(es))
	err := v.verifier.VerifyBatch(es)
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

// trustOwn marks an envelope this host is about to send as verified: the node signed it with its own key,
// so checking it again on the local gossip publish would only burn CPU. Envelopes authored by other keys
// (relayed client requests) are still verified.
func (v *validator) trustOwn(e *wire.Envelope) {
	if bytes.Equal(e.Author, v.h.cfg.Key.PublicKey()) {
		v.verifier.Cache().AddEnvelope(e)
	}
}

// observe counts a checked message.
func (v *validator) observe(source string, from peer.ID, r Result, reason Reason, start time.Time) {
	v.h.metrics.count(source, from, r, reason)
	if r == Accepted {
		v.h.metrics.addValidationTime(time.Since(start))
	}
}
