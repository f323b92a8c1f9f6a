// Package identity holds who is who in a p2pbft network: ed25519 node and client keys and their files, the
// replica set of a chain (the genesis), and the signer and verifier of wire envelopes.
//
// # Keys
//
// A Key is an ed25519 key held through go-libp2p's crypto package. The same key is a replica's libp2p host
// identity (its peer ID derives from the public key) and the author key of every envelope it signs
// (wire.Envelope.Author is the raw 32-byte public key), so the replica set needs to list only peer IDs.
// Key implements wire.Signer; ed25519 signing is deterministic, which keeps the pbft core deterministic.
// Clients use the same Key type and files; what makes a key a replica's is only its place in the genesis.
//
// Key files are PKCS#8 PEM ("PRIVATE KEY", readable by openssl) with a comment naming the peer ID. SaveKey
// writes them with mode 0600 and never overwrites an existing file; LoadKey refuses a file other users can
// read or write and says how to fix it (chmod 600 <file>); GenerateOrLoadKey is the node's start-up call.
// A Key formats and logs as its peer ID only.
//
// # Genesis
//
// The genesis is a TOML file: a chain ID and the replicas in order, each with its peer ID and optional
// addresses (see genesisFile for the format). A replica's index is its position. f = (n-1)/3 is derived
// (n >= 3f+1 always holds); a file may state f, and then it must agree. Loading validates everything and
// every error names the entry: bad or non-ed25519 peer IDs, duplicate peer IDs or names, addresses that
// do not parse or name another peer, unknown keys, a bad chain ID. The chain ID is limited to
// [A-Za-z0-9._-] because p2p puts it in protocol IDs and topic names. Digest identifies the replica set
// (chain ID and keys in order) for certificates to commit to.
//
// # Verification
//
// Verifier checks envelope signatures with github.com/oasisprotocol/curve25519-voi. Single and batch
// verification use the same acceptance rules: ZIP-215 (cofactored equation, so a batch and a single check
// can never disagree; canonical S) and, in addition, no small-order public keys. crypto/ed25519 (and so
// libp2p's own key type) uses the cofactorless equation, which batch verification cannot reproduce; a
// test shows a signature the two disagree on, and that Verify and VerifyBatch agree on it and on the
// other edge cases. Parsed (expanded) public keys are cached: the replicas' for the verifier's lifetime,
// clients' in a bounded LRU.
//
// Signing, single and batch verification are measured by `go test -run - -bench . ./identity/` (256-byte
// payloads); the figures, per machine, are in the repository's docs/design/measured-limits.md. What held
// in every run: Verify with a cached expanded key is faster than crypto/ed25519 on the same inputs; a
// batch costs less per signature the larger it is, but a batch of 2 costs more than two single checks, so
// batches under 4 are checked singly (minBatch); a batch with one bad signature costs the batch and then
// single checks. Batching pays when there is a queue of signatures (client requests, the certificates in
// a view change); a lone message is checked singly.
package identity
