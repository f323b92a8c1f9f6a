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
//  1. persist: the hard state, the log entries and the log truncation go into one store batch, durable
//     (fsynced) before any message of the Ready leaves (a restarted replica never contradicts what it
//     sent). The loop does not wait for the fsync: it commits the batch asynchronously and hands the
//     Ready's messages and executed blocks to the outbox (outbox.go), which sends the messages and reports
//     the blocks to the engine once the batch is durable, in round order. The write-ahead log groups the
//     syncs of the rounds committed while one runs.
//  2. send: every consensus message leaves through Node.send, the one place a misbehaving-replica
//     experiment wraps (experiment.go): to one replica over a direct stream; to all over direct streams or
//     the gossip topic (p2p.broadcast).
//  3. replies: a reply goes to the callers waiting for it (see below); replies nobody here waits for are not
//     even built.
//  4. execute: committed batches run through the application; each becomes a block (height = sequence
//     number, linked by hash, with its commit certificate) written in the round's store batch together with
//     the application's writes (app.Application.Commit) and the block's results, so a block and the state
//     after it are durable together. The batch is cut at checkpoint heights, where the application keeps a
//     snapshot (TakeSnapshot). Only once the blocks are durable is the engine told (Executed), which signs
//     the replies and the checkpoints of a later Ready.
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
// # Measured
//
// On the 2-core development VM, shared with other engineers' builds, simulations and end-to-end tests (load
// average 6-11 during the runs), so wall-clock rates vary by 2-3x between runs:
//
//	go test -run '^$' -bench 'Cluster/fsync=true/clients=1024/broadcast=direct' -benchtime 10000x ./node/
//	  four in-process replicas (real libp2p on 127.0.0.1, pebble with fsync), 1024 closed-loop clients:
//	  650-3000 committed requests/s over the runs; 64-84 requests per block; CPU 540-555 µs per request for
//	  the whole process (four replicas and the clients), i.e. ~135 µs per replica and request, ~1.1
//	  signature verifications per request and replica.
//	go test -run '^$' -bench 'Cluster/fsync=true/clients=1024' -benchtime 10000x ./node/
//	  broadcast over direct streams beat gossip in every paired run (1.2x-2.6x), hence the default; view
//	  changes and new views still go by gossip (p2p.gossip_kinds) for its relaying.
//	go test ./node/ -run TestCatchUpLarge -catchup.requests 100000 -v
//	  a replica down for 100,352 requests (~1,400-1,500 blocks) caught up by snapshot (4.1 MB) in 1.3-2.5 s
//	  (40,000-79,000 requests/s); with -catchup.method blocks, replaying the blocks took 5.5 s (18,000
//	  requests/s, execution-bound).
//
// Each round of the loop costs one fsync, which on this shared disk took 4-20 ms (p2pbft_persist_seconds):
// throughput comes from batching (batches grow with the number of waiting requests) and pipelining, not
// from more rounds.
//
// # Experiments: Byzantine modes and partitions
//
// For fault-injection experiments a replica can misbehave on purpose (Options.Experiment, experiment.go):
// silent, equivocate (as primary), delay, drop or garbage. A mode needs an explicit opt-in
// (Experiment.AllowByzantine, which the CLI sets only for --experiment-byzantine): New refuses a mode
// without it, and a mode found only in the configuration file is ignored with a warning. The modes act on
// the way out (Node.send, the replies, state-transfer answers); the engine itself stays correct. A
// Byzantine replica logs an error-level warning at start and reports its mode in Status.
//
// Partition cuts a replica off from chosen replicas in both directions without a firewall (its p2p host's
// connection gater refuses dials and inbound connections and closes the open ones); Heal reconnects.
// The admin HTTP endpoint drives both.
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
