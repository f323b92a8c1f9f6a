package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2pbft/p2pbft/wire"
)

// Key is an ed25519 node or client key. It implements wire.Signer, and its libp2p form (LibP2P) is the
// identity of the node's libp2p host, so a replica's peer ID and its envelope author key are one key.
//
// A Key never prints or logs its private half: String, GoString and LogValue show only the peer ID, and it
// has no exported fields for reflection-based encoders to find. The private key leaves the value only
// through MarshalKeyFile (the key file format) and LibP2P (for the libp2p host).
type Key struct {
	priv crypto.PrivKey
	pub  []byte // raw 32-byte ed25519 public key
	id   peer.ID
}

var _ wire.Signer = (*Key)(nil)

// GenerateKey creates a new random ed25519 key.
func GenerateKey() (*Key, error) { return generateKey(rand.Reader) }

func generateKey(r io.Reader) (*Key, error) {
	priv, _, err := crypto.GenerateEd25519Key(r)
	if err != nil {
		return nil, fmt.Errorf("identity: generate ed25519 key: %w", err)
	}
	return KeyFromLibP2P(priv)
}

// NewKeyFromSeed derives a key from a 32-byte ed25519 seed (RFC 8032). It is meant for tests and
// reproducible testnets; production keys come from GenerateKey or GenerateOrLoadKey.
func NewKeyFromSeed(seed []byte) (*Key, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("identity: ed25519 seed is %d bytes, want %d", len(seed), ed25519.SeedSize)
	}
	priv, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(seed))
	if err != nil {
		return nil, fmt.Errorf("identity: ed25519 key from seed: %w", err)
	}
	return KeyFromLibP2P(priv)
}

// KeyFromLibP2P wraps a libp2p private key. Only ed25519 keys are accepted: the envelope author is a raw
// ed25519 public key, and the public key must be recoverable from the peer ID.
func KeyFromLibP2P(priv crypto.PrivKey) (*Key, error) {
	if priv == nil {
		return nil, errors.New("identity: nil private key")
	}
	if priv.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("identity: key type %s is not supported, want Ed25519", priv.Type())
	}
	pub, err := priv.GetPublic().Raw()
	if err != nil {
		return nil, fmt.Errorf("identity: public key: %w", err)
	}
	if len(pub) != wire.PublicKeySize {
		return nil, fmt.Errorf("identity: ed25519 public key is %d bytes, want %d", len(pub), wire.PublicKeySize)
	}
	id, err := peer.IDFromPublicKey(priv.GetPublic())
	if err != nil {
		return nil, fmt.Errorf("identity: peer ID: %w", err)
	}
	return &Key{priv: priv, pub: pub, id: id}, nil
}

// PublicKey returns the raw 32-byte ed25519 public key (the envelope's Author). The caller must not
// modify the returned slice.
func (k *Key) PublicKey() []byte { return k.pub }

// Sign signs msg with ed25519. Signing is deterministic (RFC 8032), as wire.Signer requires.
func (k *Key) Sign(msg []byte) ([]byte, error) {
	sig, err := k.priv.Sign(msg)
	if err != nil {
		return nil, fmt.Errorf("identity: sign: %w", err)
	}
	return sig, nil
}

// PeerID returns the libp2p peer ID derived from the public key.
func (k *Key) PeerID() peer.ID { return k.id }

// LibP2P returns the libp2p form of the private key, for libp2p.Identity.
func (k *Key) LibP2P() crypto.PrivKey { return k.priv }

// Equal reports whether k and o hold the same key.
func (k *Key) Equal(o *Key) bool { return k != nil && o != nil && k.priv.Equals(o.priv) }

// String returns "ed25519 key <peer ID>"; it never includes private key material.
func (k Key) String() string { return "ed25519 key " + k.id.String() }

// GoString keeps %#v from printing private key material.
func (k Key) GoString() string { return "identity.Key{" + k.id.String() + "}" }

// LogValue makes slog log only the peer ID.
func (k Key) LogValue() slog.Value { return slog.StringValue(k.id.String()) }

// PublicKeyFromPeerID recovers the raw 32-byte ed25519 public key embedded in an ed25519 peer ID.
func PublicKeyFromPeerID(id peer.ID) ([]byte, error) {
	if err := id.Validate(); err != nil {
		return nil, fmt.Errorf("peer ID: %w", err)
	}
	pk, err := id.ExtractPublicKey()
	if err != nil {
		return nil, fmt.Errorf("peer ID %s does not embed its public key (not an ed25519 peer ID): %w", id, err)
	}
	if pk.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("peer ID %s is a %s key, want Ed25519", id, pk.Type())
	}
	raw, err := pk.Raw()
	if err != nil {
		return nil, fmt.Errorf("peer ID %s: public key: %w", id, err)
	}
	if len(raw) != wire.PublicKeySize {
		return nil, fmt.Errorf("peer ID %s: ed25519 public key is %d bytes, want %d", id, len(raw), wire.PublicKeySize)
	}
	return raw, nil
}

// PeerIDFromPublicKey returns the peer ID of a raw 32-byte ed25519 public key (an envelope's Author).
func PeerIDFromPublicKey(pub []byte) (peer.ID, error) {
	if len(pub) != wire.PublicKeySize {
		return "", fmt.Errorf("identity: ed25519 public key is %d bytes, want %d", len(pub), wire.PublicKeySize)
	}
	pk, err := crypto.UnmarshalEd25519PublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("identity: ed25519 public key: %w", err)
	}
	id, err := peer.IDFromPublicKey(pk)
	if err != nil {
		return "", fmt.Errorf("identity: peer ID: %w", err)
	}
	return id, nil
}
