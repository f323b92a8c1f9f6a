// Package pbft is a Practical Byzantine Fault Tolerance engine (Castro and Liskov, OSDI'99, the signature
// variant) written as a deterministic state machine in the style of etcd-io/raft: no goroutines, no clock,
// no I/O, no randomness. A driver (the node, or the simulator in pbft/sim) feeds it inputs and carries out
// its outputs.
//
// Comments and tests here cite the mechanisms ("row N") and pitfalls ("pitfall N") listed in the
// repository's docs/design/pbft.md, the checklist the engine is built and tested against.
//
// # The driver loop
//
//	r, err := pbft.Restart(cfg, persisted, applied) // or pbft.New(cfg) for a fresh replica
//	for {
//		select {
//		case env := <-network:  r.Step(env)      // consensus messages; outer signature already verified
//		case req := <-clients:  r.Propose(req)   // client requests from the node's own API
//		case <-ticker:          r.Tick()         // the only notion of time: timeouts are counted in ticks
//		}
//		for r.HasReady() {
//			rd := r.Ready()
//			store(rd.HardState, rd.Entries, rd.Truncate) // durable, atomically, before anything leaves
//			send(rd.Messages)                           // To is a replica index or Broadcast
//			reply(rd.Replies)                           // rm.Envelope() builds each client's reply
//			for _, cb := range rd.Committed {          // strictly in sequence order, dense
//				results, digest := app.Execute(cb) // skip for cb.AlreadyApplied: use the stored outcome
//				r.Executed(cb.Seq, results, digest)
//			}
//			if rd.StateTransfer != nil { startStateTransfer(rd.StateTransfer) }
//			observe(rd.SoftState)
//			r.Advance()
//		}
//	}
//
// Executed may also come later (the application can run behind); calls must follow delivery order. Report a
// batch as executed once the application state after it is durable: Restart takes the application's applied
// index and never asks to execute at or below it again.
//
// The loop above persists synchronously. A driver may also persist asynchronously, as the node does: apply
// each Ready's writes at once (visible, ordered after the earlier ones), execute and Advance at once, and let
// the disk sync behind; then a Ready's Messages leave only once its writes and every earlier Ready's are
// durable, Executed is reported only for durable blocks, and a crash loses a suffix of whole Readys, with
// their unsent messages. Ready's documentation states this variant, exactly what it allows and requires,
// and why it is safe: a replica's promises are only the messages it sent.
//
// # API
//
//   - Config: chain ID, replica public keys in replica order (replica i is Replicas[i]; the primary of view v
//     is v mod n), the replica's wire.Signer, a wire.Verifier, checkpoint interval K (default 32), window L
//     (default 2K), batch limits (count, bytes, tick deadline), pipeline depth, request / new-view /
//     retransmission timeouts in ticks with exponential backoff, and bounds for every buffer. Validate
//     reports every problem; New and Restart call it.
//   - New(cfg), Restart(cfg, *Persisted, applied): build a replica, from nothing or from what its Readys
//     persisted (HardState and the log Entries, in order) plus the application's last durably applied
//     sequence number.
//   - Step(env) for messages from the network, Propose(req) for client requests from the node's API,
//     Tick(). Step and Propose return a *StepError (errors.Is ErrInvalid or ErrIgnored) saying why a
//     message was not used; Stats().Rejected counts them by Reason for metrics.
//   - HasReady, Ready, Advance: the output, in the order the driver handles it (see Ready).
//   - Executed(seq, results, appDigest): the outcome of a committed batch. The core updates the client
//     table, signs the replies and, every K sequence numbers, its CHECKPOINT.
//   - CheckSnapshot / InstallSnapshot(seq, appDigest, clientTable) and ApplyCommitted(seq, batch, cert):
//     the two ways a driver satisfies a StateTransfer (see below).
//   - Status() for the soft state, Stats() for counters and gauges (rejections by reason, view changes,
//     checkpoints, state transfers, fetches, safety alarms, buffer sizes).
//   - For clients: NewRequest, ReplyCollector (f+1 matching replies), OpenReply; every payload type has a
//     Decode function, and Entry, HardState and Snapshot have Marshal and Decode functions.
//   - The safety rules, pure and stated once, for the engine and everyone who checks its output (node,
//     client, tools, tests): QuorumsOf (Commit, Prepare and Weak vote counts), CheckCommitCert and
//     CheckCheckpointProof (certificate structure over a ReplicaSet; the caller verifies the signatures),
//     ClassifyRequest and ExactlyOnce (the exactly-once rule), ReplyLeafHash (the reply Merkle leaf).
//
// # Authentication contract
//
// Every message is a wire.Envelope signed by its author. The driver verifies the outer envelope's signature
// once (the gossip validator does it) before Step; Step checks the rest: chain ID, shape, kind, that the
// author's key is a replica (any key may author a request), the payload, and the signatures of every
// envelope embedded in it (client requests inside batches, prepared certificates and checkpoint proofs in
// VIEW-CHANGE and NEW-VIEW, commit certificates in fetch replies and ApplyCommitted) through the injected
// Verifier, batching with VerifyBatch. Verified signatures are cached (a wire.SigCache: bounded, keyed by envelope
// ID and signature bytes; the driver's own if it passes one in Config.VerifiedCache, so what it verified at
// ingress is not verified again), and pending requests remember that they were verified, so a request verified at ingress is not
// verified again when it shows up in a pre-prepare. A replica's identity is always the key that signed,
// never a field of the payload; quorums count distinct keys.
//
// # Messages
//
// Payload types (all deterministic CBOR arrays, see package wire): Request (timestamp, op), PrePrepare,
// Prepare, Commit (view, seq, digest), Checkpoint (seq, digest), ViewChange, NewView, Fetch, FetchReply,
// ReplyHeader. A pre-prepare's batch travels in the envelope's unsigned Body (EncodeBatch: the request
// envelopes in order), bound by the batch digest in the signed payload: BatchDigest = sha256 over a tag,
// the count and the request envelope IDs, so certificates embed pre-prepares WithoutBody and stay small.
// The null batch (empty body, NullDigest) fills gaps after a view change and still gets a sequence number,
// so block height equals sequence number.
//
// Replies are signed per batch, not per request: a replica signs one ReplyHeader (view, seq, replica,
// count, Merkle root over the batch's (client, timestamp, result) leaves) and each client's copy carries its
// leaf and Merkle path in Body (ReplyProof). OpenReply checks the path; ReplyCollector also checks the
// signature and that the signer is the replica the reply names, and accepts f+1 matching results.
//
// # Persistence
//
// Ready.HardState (view, whether the view was entered, the stable checkpoint and its proof, the Snapshot
// of the core's state at the last stable checkpoint it holds — application digest and encoded client table
// — and the own VIEW-CHANGE or entered NEW-VIEW) replaces the stored one; Ready.Entries are appended to a
// log; Ready.Truncate drops log entries with Seq <= Truncate. Log entries are the consensus messages the
// replica accepted or authored (pre-prepares with their batch), batch bodies learned later, and batches
// committed by certificate. All of it must be durable before the Ready's messages leave, so a restarted
// replica holds exactly the pre-prepares, prepares, commits, checkpoints and view changes it sent, never
// signs a conflicting one, and resends its stored VIEW-CHANGE instead of signing a new one. Under
// asynchronous persistence (see Ready) the same holds with "the writes of this Ready and of every earlier
// one" for "all of it": a restart may find fewer of the Readys written than were handed out, but always a
// prefix of them that covers every message sent.
//
// Restart replays the log into its slots, then hands batches between the snapshot and the application's
// applied index back with AlreadyApplied set: the driver must not execute them but report the results and
// digest it stored with those blocks (a node stores results with its blocks), so the core rebuilds its
// client table. Batches above the applied index are delivered normally. An application behind the core's
// snapshot is an error (ErrAppBehind).
//
// # Protocol
//
// Normal case: the primary cuts a batch when it has MaxBatchRequests requests or MaxBatchBytes, or when the
// oldest has waited BatchTimeout ticks (0: as soon as the pipeline has room, so batches grow with load),
// while fewer than PipelineDepth batches are in flight and the sequence number is inside the window (h, H].
// Backups check each pre-prepare completely (docs/design/pbft.md row 2). Prepared means the pre-prepare and quorum-1
// matching prepares from distinct backups; committed-local means prepared plus a quorum of matching commits,
// own included (quorum = 2f+1 for n = 3f+1; Quorum(n) in general). Committed batches leave in sequence
// order, exactly once, with their commit certificate; requests a client already executed are filtered by the
// client table (last timestamp and result per client), which is part of every checkpoint digest:
// CheckpointDigest = sha256(tag, seq, application digest, ClientTableDigest). Votes that arrive before their
// pre-prepare are kept (one per replica per slot), and messages for a view not yet entered are buffered,
// bounded per sender.
//
// Checkpoints: every K executed sequence numbers a replica multicasts CHECKPOINT; a quorum of matching ones
// makes it stable, the window moves to (h, h+L], and everything at or below h is discarded except the proof
// and the committed batches of the last window (kept to serve lagging peers). A replica that learns a stable
// checkpoint it has not reached catches up by itself (fetched commit certificates) if it is less than 2L
// behind, and asks for a state transfer otherwise or if that takes more than three retransmission periods.
// The watermarks never move without the state following (pitfall 5).
//
// View change (OSDI'99 with signatures): a replica's request timer watches the oldest request it knows that
// has not executed and restarts only when that request executes, never on other traffic. On expiry the
// replica multicasts VIEW-CHANGE(v+1) with its stable checkpoint proof and the highest prepared certificate
// of every sequence number above it. Once a quorum of replicas is at view v+1 or beyond, it waits
// NewViewTimeout for the NEW-VIEW (and then, in the new view, RequestTimeout for an execution); if that
// fails it moves to the next view, and both timeouts double with each consecutive failure (MaxBackoff caps
// the doubling), returning to their base on the first execution. A replica never times out of a view
// alone, so correct replicas cannot chase each other through the views; f+1 VIEW-CHANGEs for higher views
// make a replica join the smallest of them at once. The new primary sends one NEW-VIEW per view, built from
// a quorum of valid VIEW-CHANGEs: min-s is their highest stable checkpoint, and each sequence number up to
// the highest prepared one gets the batch prepared in the highest view (null if none). Backups check every
// VIEW-CHANGE and recompute the NEW-VIEW; entering the view they adopt min-s (state transfer if needed),
// prepare every pre-prepare (even for batches they executed, without executing them again), and fetch
// bodies they lack. A NEW-VIEW or certificate that contradicts a committed batch cannot happen with at
// most f faulty replicas; the core counts it in Stats().SafetyAlarms.
//
// Repair: when execution stalls for RetransmitTimeout ticks while later sequence numbers are known, a
// replica resends its own messages for the stuck ones (with a new Resend counter, so content-addressed
// gossip does not swallow them) and asks one peer in turn with a KindFetch; the peer answers with commit
// certificates and batches (committing the asker at once), or its own votes, or batch bodies, plus its
// stable checkpoint proof if the asker is behind it, and its NEW-VIEW if the asker missed it. Replicas also
// resend an unstable checkpoint and, while changing views, their VIEW-CHANGE; an idle replica probes a
// peer with exponentially growing intervals, so one that missed the end of the traffic still catches up.
// Fetch answers are rate-limited per peer and bounded in size.
//
// State transfer: Ready.StateTransfer names a certified checkpoint (sequence number, digest and its quorum
// proof) and the last executed sequence number. The driver either fetches a snapshot (application state plus
// the client table a peer's core exported in its HardState.Snapshot), checks it with CheckSnapshot, installs
// the application part and calls InstallSnapshot, which errors (ErrSnapshotMismatch) if it does not match the
// certified digest so the driver tries another peer; or it fetches the committed blocks after Applied and
// hands each in with ApplyCommitted, which checks the commit certificate and the batch digest.
//
// # Bounds
//
// Memory is bounded under any flood: slots only inside the window (and the catch-up range below it),
// checkpoint votes per replica, buffered future-view messages per sender (MaxFutureMessages), pending client
// requests (MaxPendingRequests, one per client), the verified-signature cache (VerifiedCacheSize, or the
// bound of the driver's cache when it passes one), batch bodies per slot, and fetch answers. Messages
// outside (h, H] are not accepted.
package pbft
