// Package store is the replica's crash-safe embedded database: the consensus records the engine needs to
// survive a crash, the chain of committed blocks, and the namespace in which the application keeps its
// state. It is built on cockroachdb/pebble.
//
// # What it holds
//
//   - Consensus records: a hard-state blob (Batch.SetHardState) and an append-only log of opaque records
//     keyed by sequence number (Batch.AppendRecord), truncated up to a sequence number at stable checkpoints
//     (Batch.TruncateLog, one range deletion). The store does not interpret them: the engine's record types
//     are its own business.
//   - The chain: one Block per committed batch, at height = PBFT sequence number (dense; a null batch is an
//     empty block), linked by hash to the one before, with the batch's request envelopes, the application
//     state digest after it and the commit certificate. Block.Verify checks everything the store can (height,
//     link, batch digest = pbft.BatchDigest of the request envelope IDs, envelope shapes and kinds) and then calls the
//     engine's certificate check, which is injected (CertCheck). Store.Block, Store.Head, Store.Blocks and
//     Store.VerifyChain read it.
//   - The application's namespace (Store.AppStorage, Batch.App): an ordered key space lent to the
//     application (see package app). The built-in key-value app keeps its versions and snapshots there.
//
// # Atomicity and durability
//
// Everything one step of the replica must make durable goes into one Batch: records, hard state, blocks and
// the application's writes for those blocks. Batch.Commit applies it atomically with one fsync of the
// write-ahead log. So a block and the application state after it are durable together or not at all, and a
// restarted replica finds the application exactly at the head of its chain: it neither re-executes nor loses
// a committed block. (An application that keeps its state elsewhere reports a lower height and the node
// replays the chain; see package app.) The store accepts batches from one writer (the node's event loop); a
// batch prepared against a head another batch has since moved fails with ErrConflict rather than fork the
// chain. The application may also commit batches of its own in its namespace (restore staging, snapshot
// records, garbage collection); pebble's single log keeps all writes in order, so a synced batch makes every
// earlier one durable too.
//
// TestCrashKill9 runs a child process that appends blocks (with key-value app writes, hard state and
// records) as fast as it can and reports each height once Commit returned, kills it with SIGKILL at seeded
// random moments, and checks after each of several rounds that every reported height is there, the chain
// verifies, the app is exactly at the head with the head's digest, and a replay of the chain reproduces
// every block's app digest. SIGKILL does not drop the kernel's page cache, so that test checks atomicity
// and recovery; surviving a power cut rests on pebble's fsync of its log, which Options.UnsafeNoSync turns
// off (for throwaway tests only).
//
// # State transfer
//
// A replica that installs a snapshot at checkpoint height c cannot have the blocks up to c: Batch.JumpTo
// moves the head to the certified (c, hash of block c) and the chain continues from there.
// Batch.BackfillBlock later adds the missing blocks downwards, each accepted only if it hashes to what the
// block above it (or the anchor) names. Snapshots themselves belong to the application (they must describe
// its state exactly at a checkpoint, which only it can do cheaply); the store provides the space and the
// atomic switch (the application's restore writes in the same batch as JumpTo).
//
// # Why pebble, not bbolt: the measurement
//
// BenchmarkEngine* writes the same data through both engines, one durable transaction per write: a block of
// 1,000 requests of ~200 bytes with a 3-signature certificate (211 KB encoded) plus the head record, and a
// consensus step of three 180-byte records plus a 64-byte hard state. bbolt runs with etcd's settings
// (NoFreelistSync, map freelist). On the 2-core development VM (AMD EPYC), shared with other engineers'
// builds and tests, so the figures are noisy; ranges over all runs of the session:
//
//	go test -run '^$' -bench Engine -benchtime 300x ./node/store/         (3 runs)
//	                 pebble                             bbolt
//	block            585-1,177 blocks/s, 123-248 MB/s   213-603 blocks/s, 45-127 MB/s
//	records          1,327-2,919 syncs/s                772-1,539 syncs/s
//
//	go test -run '^$' -bench Engine -benchtime 2000x -count 2 ./node/store/   (2 x 2 runs; 420 MB
//	written per run, so memtable flushes and compactions are included)
//	block            484-651 blocks/s, 102-137 MB/s     223-485 blocks/s, 47-102 MB/s
//	records          753-3,011 syncs/s (median 2,600)   1,478-1,892 syncs/s
//
// In every invocation pebble wrote blocks 1.3-2.7x faster than bbolt did in the same invocation, and its
// median rate of small synced writes was 1.4-2x bbolt's.
// Pebble commits with one fsync of its log; a bbolt commit writes the changed B+tree pages and then the meta
// page, fsyncing after each, and copies each 211 KB value into freshly allocated pages. The gap is largest on the small synced writes that sit on the consensus critical path
// (a replica persists before its messages leave). It also fits the rest of the job better: range deletions
// make log truncation and the application's garbage collection O(1) writes; iterators read a consistent
// point in time without holding a transaction open, so streaming a large snapshot to a peer does not pin
// old pages the way a long bbolt read transaction does (bbolt's file grows while one is open). bbolt's
// advantages (a single file, no background compactions, smaller code) matter less than these. Either engine
// is far from the ceiling the design sets elsewhere: per request, appending a block of 1,000 requests costs
// far less than verifying one signature (docs/design/measured-limits.md).
//
// The store's own path is measured by `go test -run '^$' -bench Store -benchtime 500x ./node/store/`:
// BenchmarkStoreAppendBlock (a block, encoding included, with the head, a hard state and two records in the
// same batch), BenchmarkStoreRecords (small fsynced batches) and BenchmarkStoreBlockWithKV (the node's whole
// commit path for 1,000 key-value puts: execute with digest update, block, app writes, one fsync). Their
// figures are in docs/design/measured-limits.md.
//
// # Key layout
//
//	m/genesis, m/head, m/hardstate, m/lognext     metadata
//	l | seq u64 | index u64                        consensus log records
//	b | height u64                                 blocks
//	a | height u64                                 anchors (state-transfer jump points)
//	x | ...                                        the application's namespace
package store
