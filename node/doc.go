// Package node joins the PBFT engine (package pbft), the network (p2p), the store (node/store) and the
// replicated application (node/app) into a running replica. New loads the node's home directory (key,
// genesis, configuration), opens its store and application, starts its libp2p host and restores its
// replica; Run runs it until its context ends.
//
// # The event loop
//
// One goroutine owns the engine. It takes, in rounds, ticks (consensus.tick), verified messages from the
// p2p host, client requests and the results of state transfer, up to a few hundred inputs per round, then
// handles everything the engine produced in one Ready, in the engine's order:
//
//  1. persist: the hard state, the log entries and the log truncation go into one store batch, committed
//     with one fsync, before any message of the Ready leaves (a restarted replica never contradicts what it
//     sent). Draining many inputs per round turns a burst of messages into one fsync.
//  2. send: every consensus message leaves through Node.send, the one place a misbehaving-replica
//     experiment would wrap: to one replica over a direct stream; to all over direct streams or the
//     gossip topic (p2p.broadcast).
//  3. replies: a reply goes to the callers waiting for it (see below); replies nobody here waits for are not
//     even built.
//  4. execute: committed batches run through the application; each becomes a block (height = sequence
//     number, linked by hash, with its commit certificate) written in one store batch together with the
//     application's writes (app.Application.Commit) and the block's results, so a block and the state after
//     it are durable together. The batch is cut at checkpoint heights, where the application keeps a
//     snapshot (TakeSnapshot). Only then is the engine told (Executed), which signs the replies and the
//     checkpoints of the next Ready.
//  5. state transfer: started when the engine asks (below).
//  6. soft state: view, mode and watermarks are logged and published for Status and metrics.
//
// # Restart
//
// The store's consensus log holds the engine's entries and, written with each block, the block's results
// and application digest. A restarting replica hands the engine its persisted state and the application's
// durable height (pbft.Restart); batches between the engine's snapshot and that height come back marked
// AlreadyApplied, and the node reports their stored results instead of executing them again, so the engine
// rebuilds its client table exactly and nothing executes twice. An application that keeps its state in
// memory (Info().Height behind the chain) is brought to the head first by replaying the stored blocks,
// each digest checked against its block.
//
// # Snapshots and their lifetime
//
// At every checkpoint height the application keeps a snapshot; the engine's part (its client table) comes
// with the hard state once the checkpoint is stable. The node serves the last two stable checkpoints (so a
// peer that started copying the older one can finish) and releases older application snapshots.
//
// # State transfer
//
// When the engine finds itself behind a stable checkpoint it asks for a state transfer. A replica at most
// state_sync.block_sync_max blocks behind fetches the blocks, checks each against its commit certificate
// off the loop, and hands them to the engine (ApplyCommitted), which delivers them for execution like any
// committed batch: the chain stays complete. A replica further behind copies the snapshot: manifests from
// every connected replica (each must match the certified checkpoint digest; the anchor block's hash, which
// the checkpoint does not cover, is taken only when f+1 replicas agree on it), the client table (checked
// against its digest), and the application's chunks (applied as they arrive; the finished state must have
// the certified digest). The restore is finished, the chain jumps to the anchor and the engine installs the
// snapshot in one atomic store batch. A peer that fails a check is skipped for the next; an attempt that
// fails is retried with backoff; a newer target replaces an older one. Package statesync holds the wire
// format and the pure checks.
//
// # Client requests
//
// A client sends its signed request to the replicas with the p2p request protocol (or calls Submit in
// process). The signature is checked off the loop, the loop proposes the request (a backup forwards it to
// the primary), and the caller waits until this replica executed it and answers with its signed reply. A
// repeat of an executed request (same client and timestamp) gets the cached reply; an older one is
// refused. The client accepts f+1 matching replies from distinct replicas (pbft.ReplyCollector).
//
// # Signatures
//
// Every envelope is verified once per replica. The p2p host verifies what arrives through the node's
// verifier pool, which batches whatever is queued (client requests under load) and remembers every verified
// signature; client requests inside pre-prepares that this replica never saw are batch-verified on the pool
// before the pre-prepare reaches the loop. The engine's verifier consults the same memory first, so on the
// loop only the rare unseen signature costs cryptography. The p2p filter drops stale normal-case messages
// and checkpoints (below the stable checkpoint or from an older view) before any signature check.
//
// # Observability
//
// Logs go through log/slog with the replica index on every line and the view on every consensus line:
// view changes and new views at warn and info, state transfers at info with progress, checkpoints at
// debug. Metrics (Prometheus, on Options.Registry, with the p2p host's): blocks and requests executed,
// requests per block, commit latency of requests submitted here, persist and execute times, view changes,
// state transfers and their bytes and blocks, messages the engine accepted, ignored or rejected by kind and
// reason, the engine's own counters, signature verification and cache hits, height, view, mode.
package node
