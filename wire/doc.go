// Package wire defines the signed envelope that every p2pbft message travels in, the message kinds, the
// domain-separated string that authors sign, and the one CBOR codec the project uses on the wire.
//
// An envelope carries the encoded payload bytes, the author's ed25519 public key and a signature. The
// signature covers a fixed-layout string that is independent of the codec:
//
//	"p2pbft/envelope/v1" 0x00 | u16 len(chain ID) | chain ID | u16 kind | u16 len(author) | author | sha256(payload)
//
// Signing the payload digest rather than the payload keeps signing cost flat for large payloads and lets a
// message be checked later from its digest. Receivers verify over the bytes as received and never re-encode
// to verify. The envelope also has two unsigned fields: Body, content that the signed payload binds by digest
// (the batch of a pre-prepare travels there, so certificates that embed the pre-prepare stay small), and
// Resend, a counter an author bumps when it deliberately re-publishes the same signed message so that a
// content-hash gossip message ID does not swallow the rebroadcast.
//
// SigCache is the project's one verified-signature cache (bounded, safe for concurrent use), keyed by
// SigKey: the envelope ID, which is sha256 of exactly the signed string, and the signature bytes, so an entry
// never vouches for other signed bytes or other signature bytes. CachingVerifier puts one in front of any
// Verifier. A replica's p2p host, verifier pool and engine share one.
//
// The package imports nothing but the standard library and the CBOR library, so that pbft, p2p and identity
// can all depend on it.
//
// Encoding is deterministic CBOR (RFC 8949 core deterministic encoding) of structs encoded as arrays
// (`cbor:",toarray"`), so field order is the schema and adding a field is a new schema version. Decoding is
// strict and bounded: no indefinite lengths, no tags, bounded nesting, array and byte-string sizes, and a
// decode error for trailing bytes; every decoder in the project goes through Unmarshal and is fuzzed.
package wire
