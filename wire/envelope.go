package wire

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Sizes of the envelope's fixed-size fields.
const (
	PublicKeySize = 32 // ed25519 public key
	SignatureSize = 64 // ed25519 signature
	MaxChainIDLen = 64
	// DomainTag starts every signed string; it separates p2pbft envelope signatures from any other use of
	// the same key.
	DomainTag = "p2pbft/envelope/v1\x00"
)

// Digest is a SHA-256 digest.
type Digest [32]byte

// String returns the first 8 bytes in hex, enough to tell digests apart in logs.
func (d Digest) String() string { return fmt.Sprintf("%x", d[:8]) }

// IsZero reports whether d is all zeroes.
func (d Digest) IsZero() bool { return d == Digest{} }

// Envelope is one signed message. See the package documentation for what the signature covers.
type Envelope struct {
	_ struct{} `cbor:",toarray"`
	// ChainID names the replica set (genesis) the message belongs to.
	ChainID string
	// Kind says how to decode Payload.
	Kind Kind
	// Author is the ed25519 public key of the signer. Receivers derive the sender's identity (replica index
	// or client) from this key after the signature checks out, never from a field inside the payload.
	Author []byte
	// Payload is the encoded message of type Kind, exactly as signed.
	Payload []byte
	// Sig is the ed25519 signature over SigningBytes().
	Sig []byte
	// Body is unsigned content bound by a digest inside Payload (for example the request batch of a
	// pre-prepare). Receivers must check it against that digest before using it. Empty for most kinds.
	Body []byte
	// Resend is an unsigned counter an author increments when it deliberately re-publishes the same signed
	// message, so that the gossip layer (whose message ID is a content hash) treats it as new.
	Resend uint32

	payloadDigest *Digest // cache; not encoded
}

// PayloadDigest returns sha256(Payload), computed once and cached. Do not modify Payload after calling it.
func (e *Envelope) PayloadDigest() Digest {
	if e.payloadDigest == nil {
		d := Digest(sha256.Sum256(e.Payload))
		e.payloadDigest = &d
	}
	return *e.payloadDigest
}

// SigningBytes returns the domain-separated string the author signs.
func (e *Envelope) SigningBytes() []byte {
	return SigningBytes(e.ChainID, e.Kind, e.Author, e.PayloadDigest())
}

// ID returns the digest of the signed content (sha256 of SigningBytes): it names the message independently
// of its unsigned fields and its signature. Two envelopes with the same ID say the same thing from the same
// author. It does not allocate for an envelope of valid shape (it runs several times per message: the
// verified-signature cache, the engine's checks).
func (e *Envelope) ID() Digest {
	var buf [maxSigningBytes]byte
	return sha256.Sum256(appendSigningBytes(buf[:0], e.ChainID, e.Kind, e.Author, e.PayloadDigest()))
}

// maxSigningBytes is the length of the signed string of an envelope with the longest chain ID and an ed25519
// author.
const maxSigningBytes = len(DomainTag) + 2 + MaxChainIDLen + 2 + 2 + PublicKeySize + len(Digest{})

// SigningBytes builds the domain-separated string for the given fields (see the package documentation).
func SigningBytes(chainID string, kind Kind, author []byte, payloadDigest Digest) []byte {
	b := make([]byte, 0, len(DomainTag)+2+len(chainID)+2+2+len(author)+len(payloadDigest))
	return appendSigningBytes(b, chainID, kind, author, payloadDigest)
}

// appendSigningBytes appends the signed string to b: the one definition of its layout.
func appendSigningBytes(b []byte, chainID string, kind Kind, author []byte, payloadDigest Digest) []byte {
	b = append(b, DomainTag...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(chainID)))
	b = append(b, chainID...)
	b = binary.BigEndian.AppendUint16(b, uint16(kind))
	b = binary.BigEndian.AppendUint16(b, uint16(len(author)))
	b = append(b, author...)
	b = append(b, payloadDigest[:]...)
	return b
}

// Signer signs messages as one author. identity provides the ed25519 implementation; tests may fake it.
// Implementations must be deterministic (ed25519 is), so that the pbft core stays deterministic.
type Signer interface {
	// PublicKey returns the author's 32-byte ed25519 public key (Envelope.Author).
	PublicKey() []byte
	// Sign signs msg (an envelope's SigningBytes).
	Sign(msg []byte) ([]byte, error)
}

// Verifier checks envelope signatures against Envelope.Author. Implementations may cache parsed keys and
// results, and verify batches faster than one by one.
type Verifier interface {
	// Verify checks one envelope's signature. It does not check membership or the chain ID.
	Verify(e *Envelope) error
	// VerifyBatch checks every envelope and returns nil if all are valid. Otherwise it returns a
	// *BatchError that says which ones failed.
	VerifyBatch(es []*Envelope) error
}

// BatchError reports which envelopes of a VerifyBatch call failed.
type BatchError struct {
	// Failed holds the indexes (into the slice given to VerifyBatch) of the envelopes whose signature
	// is invalid, in increasing order.
	Failed []int
}

func (e *BatchError) Error() string {
	return fmt.Sprintf("wire: %d envelope signature(s) invalid, first at index %d", len(e.Failed), e.Failed[0])
}

// ErrBadSignature is returned (wrapped) by verifiers for a signature that does not verify.
var ErrBadSignature = errors.New("invalid signature")

// Seal builds and signs an envelope for payload.
func Seal(s Signer, chainID string, kind Kind, payload []byte) (*Envelope, error) {
	e := &Envelope{ChainID: chainID, Kind: kind, Author: s.PublicKey(), Payload: payload}
	if err := e.checkShape(false); err != nil {
		return nil, err
	}
	sig, err := s.Sign(e.SigningBytes())
	if err != nil {
		return nil, fmt.Errorf("wire: sign %s: %w", kind, err)
	}
	e.Sig = sig
	return e, nil
}

// Marshal encodes the envelope.
func (e *Envelope) Marshal() ([]byte, error) { return Marshal(e) }

// DecodeEnvelope decodes and shape-checks an envelope: a known kind, a chain ID of sane length, a 32-byte
// author and a 64-byte signature. It does not verify the signature.
func DecodeEnvelope(data []byte) (*Envelope, error) {
	e := new(Envelope)
	if err := Unmarshal(data, e); err != nil {
		return nil, err
	}
	if err := e.checkShape(true); err != nil {
		return nil, err
	}
	return e, nil
}

// CheckShape checks the envelope's fields for a known kind and well-formed sizes (not the signature).
func (e *Envelope) CheckShape() error { return e.checkShape(true) }

func (e *Envelope) checkShape(withSig bool) error {
	switch {
	case !e.Kind.Valid():
		return fmt.Errorf("wire: envelope: unknown kind %d", uint16(e.Kind))
	case len(e.ChainID) == 0 || len(e.ChainID) > MaxChainIDLen:
		return fmt.Errorf("wire: envelope: chain ID length %d not in [1,%d]", len(e.ChainID), MaxChainIDLen)
	case len(e.Author) != PublicKeySize:
		return fmt.Errorf("wire: envelope: author is %d bytes, want %d", len(e.Author), PublicKeySize)
	case withSig && len(e.Sig) != SignatureSize:
		return fmt.Errorf("wire: envelope: signature is %d bytes, want %d", len(e.Sig), SignatureSize)
	}
	return nil
}

// WithoutBody returns a shallow copy of e with Body and Resend cleared: the form certificates embed.
func (e *Envelope) WithoutBody() *Envelope {
	c := &Envelope{ChainID: e.ChainID, Kind: e.Kind, Author: e.Author, Payload: e.Payload, Sig: e.Sig}
	c.payloadDigest = e.payloadDigest
	return c
}
