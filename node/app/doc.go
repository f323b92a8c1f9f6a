// Package app defines the interface between a p2pbft replica and the replicated application it runs: the
// deterministic state machine that executes committed batches. The key-value store in package kv is the
// built-in application; experimenters plug in their own by implementing Application (see the example, and
// check it with package apptest).
//
// # The contract
//
// The node calls the application from its event loop, one block at a time in height order (height = PBFT
// sequence number; heights are dense, and a null batch is an empty block):
//
//  1. Execute(h, batch) applies the batch and returns one result per request and the state digest after it.
//     Execution must be deterministic: the same state and batch give the same results and digest on every
//     replica. A request the application cannot perform gets a result that says so; an error return is for
//     failures that must stop the node (a broken disk).
//  2. Commit(w) writes whatever makes the executed blocks durable into w, which the node commits in the
//     same atomic, fsynced batch as the blocks themselves (package store).
//  3. At checkpoint heights, TakeSnapshot(h) keeps the state at h readable while execution goes on; when a
//     later checkpoint is stable, ReleaseSnapshot drops it. Other replicas read it through OpenSnapshot and
//     Snapshot.ReadChunk, in chunks of bounded size, and install it with Restore.
//
// Info tells the node where the application's durable state is, so that a restarted replica replays exactly
// the blocks the application lacks and never executes one twice into the durable state.
//
// # Why this shape
//
// Durability is the part most designs get wrong, so the interface makes one rule explicit: the application
// is never ahead of the chain. It can be behind (the node replays the chain from Info().Height+1, checking
// each digest against the block), never ahead (nothing could bring it back). The simplest way to obey the
// rule, and the one Commit(w) offers, is to write the application's state in the node's own database batch,
// so a block and the state after it are durable together: a restarted replica finds the application exactly
// at the head and replays nothing. An application that keeps its state in memory writes nothing and reports
// height 0 after a restart; the node replays the whole chain (fine for experiments with small chains). We
// rejected two alternatives: an application that persists on its own after the block is stored (ABCI's
// Commit) needs a reconciliation handshake on every restart, with cases for each side being ahead, and costs
// a second fsync per block; and handing the application a database handle to write at will gives no
// atomicity at all.
//
// The storage the node lends (Storage) is an ordered key-value namespace with consistent point-in-time
// iterators, enough for an application to keep versioned state (package kv keeps every key's versions by
// height, which makes snapshots exact and free). Writes that must be atomic with blocks go through Commit's
// Writer; other writes (restore staging, snapshot records, garbage collection) go through Storage.NewBatch.
//
// Snapshots are the application's, not the node's, because only the application can describe its state at a
// height exactly and cheaply while execution continues, and only it knows how to split its state into chunks
// and check each chunk's shape. The cursor-based chunking (ReadChunk(cursor) on the serving side,
// SnapshotRestore.Cursor on the receiving side) makes a transfer resumable and lets it switch peers after any
// chunk. Chunks come from untrusted peers: Apply checks each chunk's shape and order, and Finish refuses a
// state whose digest is not the certified checkpoint digest. A restore changes nothing visible until Finish
// is committed, atomically with the chain's jump to the snapshot height (store.Batch.JumpTo).
//
// Reads that need no consensus go through the optional Querier interface: answers come from one replica's
// committed state, so they are fast but may be stale (and a faulty replica may lie); reads that must be
// linearizable go through consensus as ordinary requests.
//
// Exactly-once execution of client requests (PBFT's client table) is the engine's and the node's job, not
// the application's: the application executes what it is given.
package app
