// Package kv is p2pbft's built-in replicated application: a key-value store with put, get, delete and
// compare-and-set, whose state digest is maintained incrementally.
//
// # Operations
//
// A request's operation is an Op encoded with EncodeOp (deterministic CBOR, see package wire); its result is
// a Result encoded with EncodeResult. Operations of a batch apply in order, each seeing the ones before it.
// A malformed operation gets StatusInvalid and changes nothing; a compare-and-set whose expectation fails
// gets StatusConflict with the current value. Keys are 1 to MaxKeySize bytes, values at most MaxValueSize.
// Get through consensus is a linearizable read; KV.Get and KV.Query read the committed state of this
// replica without consensus (fast, possibly stale, and only as honest as the replica).
//
// # State digest: LtHash16
//
// The digest must change with every block yet cost O(changes), not O(state), to update. It is a
// homomorphic set hash: each (key, value) pair is mapped to a vector of 1024 16-bit lanes by BLAKE3's
// extendable output (keyed by a derived key for domain separation, over uvarint(len key)|key|value so the
// encoding is injective), and the state's checksum is the lane-wise sum mod 2^16 of the vectors of all live
// pairs. A put adds the new pair's vector and subtracts the old one's; a delete subtracts. The 32-byte
// digest is SHA-256 over a tag and the 2048-byte checksum. Because addition commutes, the digest depends only
// on the final set of pairs, never on the order or batching of the operations that produced it, which is
// also what lets a snapshot be checked after streaming it in arbitrary chunks.
//
// Why this hash. Simpler additive or XOR combinations of per-element hashes are not safe against an
// adversary who chooses keys (and here clients choose keys): XOR of hashes falls to Gaussian elimination,
// and a sum modulo a single 256-bit number falls to Wagner's generalized-birthday attack. LtHash (Bellare and
// Micciancio, "A New Paradigm for Collision-free Hashing", 1997) sums vectors in a lattice, where a collision
// means finding a short vector in a random lattice; Lewi, Kim, Maykov and Weis ("Securing Update Propagation
// with Homomorphic Hashing", 2019) estimate 200+ bits of security for 1024 lanes of 16 bits, the parameters
// Meta deploys, and Solana's accounts lattice hash uses the same 1024 x u16 shape over BLAKE3. The
// alternative with equal security, MuHash over a 3072-bit prime (Bitcoin Core's UTXO-set hash), costs a
// modular multiplication per update, and a Merkle tree costs O(log n) hashes and node writes per update and
// a tree in the database; LtHash costs two BLAKE3 XOF calls and two vector additions (see BenchmarkDigest*).
// What LtHash does not give is a proof that one pair is in the state: chunks received during state transfer
// can only be checked as a whole, at the end (app.SnapshotRestore.Finish).
//
// # Storage: versions, snapshots, garbage
//
// The state lives in the namespace the node lends the app (app.Storage), as versions: key|^height ->
// value or tombstone. Execute keeps the changes of executed blocks in memory; Commit writes them as new
// versions into the node's block batch, so a block and the state after it become durable together. A
// snapshot at a checkpoint height is one small record that keeps the versions it can read: reading the
// state at height s is, for every key, the newest version at or below s. Commit deletes a superseded version
// at once when no kept snapshot can read it (the usual case), and otherwise records it as garbage, which
// ReleaseSnapshot collects once no snapshot below the superseding height remains. So snapshots are exact,
// cost nothing to take, survive restarts, can be streamed while execution goes on, and storage stays within
// one version per key plus what kept snapshots need.
//
// Execute needs each key's current value (to subtract its pair from the checksum, to answer gets and
// compare-and-sets) and the height of its newest stored version (so Commit can delete or keep it). Reading
// them from the store is a seek through the database's memtables and tables, so the KV keeps them per key
// in memory: for every key written since the last commit, and, within bounds (1<<17 keys, 64 MiB), for
// keys read or committed earlier, dropped at random beyond that. Open loads it with one scan of the state;
// while it holds every stored key (the state fitted and nothing was evicted since), a key it does not hold
// does not exist, and even new keys need no read. The cache is exact, never a guess: it changes only
// together with the store (Commit, garbage collection, restore) and is rebuilt from the store by Open, so
// the durable state is still only what the store holds.
//
// A restore builds a new generation of the state beside the current one, chunk by chunk (checking every
// chunk's shape and key order), and switches to it with the meta record in the node's batch; a crash in
// between leaves the old state current and the partial one is dropped on the next Open.
package kv
