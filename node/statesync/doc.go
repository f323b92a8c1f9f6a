// Package statesync brings a replica that fell behind up to a certified checkpoint: the messages replicas
// exchange for it, the pure checks on them, and the Syncer, which fetches the state from peers, checks it
// against the certificate and hands it to the replica, and Serve, which answers peers' requests from a
// Source (the replica's store, the engine's snapshots and the application's kept snapshots). The node
// (package node) wires both to its engine, store, application and network through the small interfaces
// below; this package never imports node, so both sides of state transfer can be read, tested and fuzzed
// here with fakes of those interfaces (the honest fake peers of the tests answer through Serve).
//
// # The protocol
//
// A replica syncing to the stable checkpoint (Seq, Digest), certified by a quorum of CHECKPOINT messages,
// asks its peers over the request/response protocol (p2p.Host.Request; one KindStateRequest envelope,
// one signed KindStateResponse envelope back):
//
//   - Manifest(Seq): the responder's snapshot at Seq: the application digest, the digest and size of the
//     engine's client table, and the block at Seq with its commit certificate. The manifest checks out
//     when CheckpointDigest(Seq, AppDigest, TableDigest) equals the certified Digest, and the block's
//     height, application digest, batch digest and certificate are right. The hash of that block (which
//     links to the blocks below it and anchors the syncing replica's chain) is not covered by the
//     checkpoint, so the replica uses it only once f+1 distinct replicas sent manifests with the same block
//     hash: one of them is correct.
//   - Table(Seq, Offset): the next part of the client table at Seq. The assembled table must hash to
//     TableDigest.
//   - Chunk(Seq, Cursor): the next chunk of the application snapshot at Seq after Cursor (see
//     app.Snapshot.ReadChunk). Chunks are applied as they come; the application refuses a malformed or
//     out-of-order chunk, and the finished state must have the certified application digest.
//   - Blocks(From, To): committed blocks with their commit certificates, from From up, contiguous, at
//     most To. A replica a few checkpoints behind replays these instead of copying the whole state; each
//     block is checked against its certificate (VerifyBlock) before it is executed.
//
// Every response is signed by the responder's node key and names the checkpoint it is about, so a
// replica can hold a peer to what it sent. Nothing a response claims is trusted beyond what the checks
// above prove; a peer whose response fails a check is skipped and another one asked.
//
// # The Syncer
//
// When the engine asks for the state at a certified checkpoint (pbft.Ready.StateTransfer), the node's
// event loop calls Syncer.Start, which runs one transfer on its own goroutine:
//
//   - blocks, when the replica is at most BlockSyncMax blocks behind: pages of blocks, each checked
//     against its commit certificate off the loop and handed to the replica (Installer.ApplyBlocks), which
//     executes them like any committed batch, so the chain stays complete;
//   - otherwise a snapshot: manifests from all peers (f+1 agreeing on the anchor block), the client table,
//     then the application's chunks, applied as they arrive to a restore the replica started
//     (Installer.Restore); the replica then finishes the restore and jumps its chain in one atomic batch
//     with the engine's new state (Installer.Install).
//
// A peer that fails a check or does not answer is skipped and the next one asked; an attempt that fails
// altogether is retried with backoff, by snapshot if blocks failed twice. A newer target replaces the
// running transfer, except that a snapshot copy which has not failed keeps its target for a while (under
// load checkpoints become stable faster than a snapshot copies); Tick starts the newer one later if it is
// still needed. Progress reports what a running transfer has fetched, for the replica's status; the
// transfer logs its start, progress (every two seconds), failures and end, and counts transfers, bytes and
// blocks through Metrics.
//
// # The interfaces, and why
//
// The Syncer needs five things of the replica, each an interface (or function) of its own so that a test
// can replace any of them:
//
//   - Fetcher: the connected replicas, and one request/response exchange with one of them. The node signs
//     the request with its key and sends it over its p2p host; the Syncer checks the answer's kind and
//     decodes it (DecodeResponse), so a fake peer exercises the same checks as a real one.
//   - store.CertCheck: the commit certificate check of a block (the node's, on its verifier pool);
//     VerifyBlock does the rest (height, batch digest).
//   - Installer: what changes the replica's state: applying checked blocks and installing a copied
//     snapshot (both on the replica's event loop, which owns the engine and the store: the calls wait for
//     its verdict), and starting the application's restore (which the node serializes with execution).
//   - Replica: what the loop knows of the engine (its view, for logs; whether it still needs a target).
//   - Metrics, Clock and a *slog.Logger: what the transfer counts, its time, and its logs.
//
// The Syncer itself holds no lock and owns no store: Start, Tick, Settled, Stop and Progress are called
// from the replica's event loop only, and the transfer goroutine reaches the replica only through
// Installer. This keeps the concurrency of state transfer where it was designed (the loop owns the engine)
// while the policy — whom to ask, what to check, when to retry — lives in one place.
package statesync
