// Package node joins the PBFT engine (package pbft), the network (p2p), the store (node/store) and the
// replicated application (node/app) into a running replica. New loads the node's home directory (key,
// genesis, configuration), opens its store and application, starts its libp2p host and restores its
// replica; Run runs it until its context ends.
//
// # The event loop
//
// One goroutine owns the engine. It takes, in rounds, ticks (consensus.tick), verified messages from the
// p2p host, client requests and the results of state transfer, up to a few hundred inputs per round, then
// hands everything the engine produced in one Ready to the Ready driver (readyDriver.handle, driver.go),
// which owns the state of Ready handling (batches held back during a restore, results replayed after a
// restart, the application snapshots kept, the outbox) and does the engine's order:
//
//  1. persist: the hard state, the log entries and the log truncation go into one store batch, durable
//     (fsynced) before any message of the Ready leaves (a restarted replica never contradicts what it
//     sent). The driver does not wait for the fsync: it commits the batch asynchronously and hands the
//     Ready's messages and executed blocks to its outbox (outbox.go), whose goroutine sends the messages
//     and hands the blocks back to the loop, for the driver to report to the engine, once the batch is
//     durable, in round order. The write-ahead log groups the syncs of the rounds committed while one
//     runs.
//  2. send: every consensus message leaves through Node.send, the one place a misbehaving-replica
//     experiment wraps (experiment.go): to one replica over a direct stream; to all over direct streams or
//     the gossip topic (p2p.broadcast).
//  3. replies: a reply goes to the in-process callers waiting for it (Submit) and, bundled per batch, to
//     the links of the clients that have one here (the replier, off the loop); replies nobody waits for
//     are not built.
//  4. execute: committed batches run through the application; each becomes a block (height = sequence
//     number, linked by hash, with its commit certificate) written in the round's store batch together with
//     the application's writes (app.Application.Commit) and the block's results, so a block and the state
//     after it are durable together. The batch is cut at checkpoint heights, where the application keeps a
//     snapshot (TakeSnapshot). Only once the blocks are durable is the engine told (Executed), which signs
//     the replies and the checkpoints of a later Ready.
//  5. state transfer: started when the engine asks (below).
//  6. soft state: view, mode and watermarks are logged and published for Status and metrics.
//
// The driver (with its outbox goroutine) reaches the rest of the node through narrow fields (store,
// application, metrics, tracer, signed state, the replier's and the loop's channels) and small interfaces:
// the engine's Executed, the sender (Node.send), and readyHost (waiters' replies, soft state, published
// height, served snapshots, state-transfer start). The Node's own fields are grouped by concern, each group
// saying which goroutine owns it (node.go).
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
// fails is retried with backoff; a newer target replaces an older one. Package statesync holds all of it
// but the node's own state: the wire format, the checks and the syncer (statesync.Syncer), which reaches
// the node through small interfaces that statesync.go implements (the network, the certificate check, and
// the loop, which applies the blocks and installs the snapshot).
//
// # Client requests
//
// Clients hold a link to every replica (p2p.Link) and send each request's first round to all of them
// (links.go). The primary verifies the signatures in batches, off the loop, and proposes a read batch at a
// time; a backup only remembers a first-round request that came on its author's own link (trusted: the
// hello routed the key there and the link authenticates its peer), so that its ingress need not verify it
// when the pre-prepare brings it. Retransmissions are verified and proposed by every replica (a backup
// forwards them to the primary and starts its request timer). Every replica answers every request it
// executes whose author has a link here: one reply bundle per executed batch and link (the replier, off the
// loop). The HTTP API submits in process (Submit waits for this replica's own reply); the one-shot request
// protocol (handleRequest) serves the API's relays and state transfer. A repeat of an executed request
// (same client and timestamp) gets the cached reply; an older one is refused (a notice on the link).
//
// # Signatures
//
// Every envelope is verified once per replica, and a client request's signature by the primary alone in
// the normal case (above). A replica has one verified-signature cache (a wire.SigCache, keyed by envelope
// ID and signature bytes), shared by the p2p host, the verifier pool and the engine. The p2p host verifies
// what arrives through the node's verifier pool, which batches whatever is queued and fills the cache (a
// batch of 32 or more is verified at once on the caller's goroutine); the host marks the messages it sends
// in the same cache. The requests inside a pre-prepare are decoded and verified (but for the trusted ones)
// by the ingress, beside the loop, and handed to the engine with the pre-prepare
// (pbft.Replica.StepPrePrepare), which then neither decodes nor checks them again. The engine consults the
// same cache first (pbft.Config.VerifiedCache), so on the loop only the rare unseen signature costs
// cryptography. The p2p filter drops stale normal-case messages and checkpoints (below the stable
// checkpoint or from an older view) before any signature check.
//
// # Measured
//
// The figures, and the commands that produce them, are in BENCHMARKS.md at the root of the repository; the
// history of the request path, step by step with paired before/after runs, in docs/perf-log.md. In one
// process: `go test -run '^$' -bench ClusterLinks -benchtime 30000x ./node/` runs four replicas and a
// client over links (a CPU profile of it shows the whole request path).
//
// Each round of the loop needs a synced write (what it cost on the machines measured is in
// docs/design/measured-limits.md; p2pbft_store_persist_seconds shows it on a running replica): throughput
// comes from batching (batches grow with the number of waiting requests) and pipelining, not
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
// Logs go through log/slog with the replica index on every line ("replica"; another replica a line is
// about is "peer_replica", so no key repeats) and the view on every consensus line: view changes and new
// views at warn and info, state transfers at info with progress, checkpoints at debug. Metrics
// (Prometheus, on Options.Registry, with the p2p host's; docs/metrics.md lists them, metrics.go says how
// they are named): blocks and requests executed, requests per block, commit latency of requests submitted
// here, persist and execute times, view changes, state transfers and their bytes and blocks, messages the
// engine accepted, ignored or rejected by kind and reason, the engine's own counters, signature
// verification and cache hits, height, view, mode, whether this replica is the primary, n and f, build and
// node info, and the Go runtime and process collectors. docs/prometheus/p2pbft.rules.yml holds alerting
// and recording rules on them (checked by promtool in TestPrometheusRules).
package node
