package node

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/p2pbft/p2pbft/node/app"
	"github.com/p2pbft/p2pbft/node/signstate"
	"github.com/p2pbft/p2pbft/node/store"
	"github.com/p2pbft/p2pbft/node/trace"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// readyDriver owns the handling of one pbft.Ready (handle): it persists the Ready's records and executes
// its committed batches into the same store batch, commits that batch without waiting for the fsync, and
// queues the Ready's messages and executed blocks on the outbox (outbox.go), which sends and reports them
// once the batch is durable. It holds the loop-owned state this needs (batches held back during a
// restore, the results of blocks replayed after a restart, the application snapshots kept, the execution
// epoch, the outbox) and reaches the rest of the node through narrow fields and small interfaces
// (executedReporter, messageSender, readyHost below).
//
// All its methods run on the loop goroutine, but runOutbox (and fatal), which run on the outbox goroutine
// and share only the outbox (and the fields set before Run) with the loop (outbox.go).
type readyDriver struct {
	// Dependencies, set by New and open; read-only afterwards.
	store     *store.Store
	app       app.Application
	appMu     *sync.Mutex  // serializes application calls with the state-transfer goroutine (Node.appMu)
	restoring *atomic.Bool // a snapshot restore is in progress: no execution (Node.restoring)
	engine    executedReporter
	host      readyHost
	sender    messageSender              // on the outbox goroutine
	signed    *signstate.File            // the signed high-water mark (signed.go); raised by the outbox goroutine
	pub       []byte                     // the replica's public key, to find its own votes (voteMark)
	executed  chan<- executedBlocks      // durable executed blocks, from the outbox to the loop
	fatalCh   chan<- error               // a failed sync or a simulated crash, from the outbox to the loop
	links     chan<- []pbft.ReplyMessage // the replier's input: replies for the clients' links (links.go)
	ckptK     uint64                     // checkpoint interval: the application keeps a snapshot there
	log       *slog.Logger
	metrics   *metrics
	tracer    *trace.Recorder // nil when tracing is off
	test      *testHooks      // the node's; its hooks are nil in production

	// Loop-owned state.
	deferred  []pbft.CommittedBatch     // committed batches held back while a restore is in progress
	replayed  map[uint64]*resultsRecord // results of blocks the engine will replay after a restart
	keptSnaps map[uint64]bool           // application snapshots taken and not released (checkpoint heights)
	// execEpoch counts installed snapshots: blocks executed in an older epoch are below the snapshot and
	// no longer reported to the engine.
	execEpoch uint64

	// out holds each round's messages and executed blocks until the round is durable (outbox.go).
	out outbox
}

// executedReporter is the engine as the driver sees it (pbft.Replica).
type executedReporter interface {
	Executed(seq uint64, results [][]byte, appDigest wire.Digest) error
}

// messageSender hands a durable round's consensus messages to the network (Node.send, loop.go); the
// outbox goroutine calls it.
type messageSender interface {
	send(m pbft.Message)
}

// readyHost is what the driver needs from the rest of the node (implemented by *Node).
type readyHost interface {
	// reply hands a reply to the in-process callers waiting for it (submit.go).
	reply(r pbft.ReplyMessage)
	// onSoftState logs and publishes a change of the replica's mode, view or watermarks (loop.go).
	onSoftState(s pbft.SoftState)
	// publish records the durable height and application digest for Status and the API (loop.go).
	publish(height uint64, digest wire.Digest)
	// serveSnapshot keeps the engine's snapshot for serving state transfers and returns the oldest
	// checkpoint still served (0: keep everything up to s), or !added if it was kept already (loop.go).
	serveSnapshot(s *pbft.Snapshot) (keep uint64, added bool)
	// startSync starts the state transfer the engine asks for (statesync.go).
	startSync(t pbft.StateTransfer)
}

// newReadyDriver returns a driver with its state allocated; New and open set its dependencies.
func newReadyDriver() *readyDriver {
	d := &readyDriver{replayed: make(map[uint64]*resultsRecord), keptSnaps: make(map[uint64]bool)}
	d.out.kick = make(chan struct{}, 1)
	return d
}

func (d *readyDriver) afterPersistHook() bool {
	return d.test.hooks != nil && d.test.hooks.afterPersist != nil
}

// handle handles one Ready in the engine's order: persist, send, reply, execute, state transfer, soft
// state, with two refinements. The committed batches are executed (in memory) before the Ready's records
// are committed, so that their blocks become durable in the same fsync as the records. And the loop does
// not wait for that fsync: it commits the batch without waiting (store.Batch.CommitAsync) and queues the
// Ready's messages and executed blocks on the outbox, which sends the messages and reports the blocks to
// the engine (Executed) once the batch is durable (see outbox.go). Messages thus never leave before what
// they promise is durable, and the engine signs replies and checkpoints only for durable blocks, while
// the loop goes on with the next round. Replies go out at once: the engine builds them only for blocks
// already reported durable. If b is not nil, the Ready's writes go into it (the caller's writes commit
// atomically with them).
func (d *readyDriver) handle(rd *pbft.Ready, b *store.Batch) error {
	start := time.Now()
	traceQuorums(d.tracer, rd)
	if b == nil {
		b = d.store.NewBatch()
	}
	defer func() { b.Close() }()
	if err := writeRecords(rd, b); err != nil {
		return err
	}
	d.deferred = append(d.deferred, rd.Committed...)
	var durable []*store.Durable
	outs, err := d.executeInto(&b, &durable)
	if err != nil {
		return err
	}
	if !b.Empty() {
		dur, err := b.CommitAsync()
		if err != nil {
			return fmt.Errorf("node: persist: %w", err)
		}
		durable = append(durable, dur)
	}
	if rd.HardState != nil {
		d.onHardState(rd.HardState)
	}
	for _, r := range rd.Replies {
		d.host.reply(r)
	}
	if len(rd.Replies) > 0 {
		d.links <- rd.Replies
		traceReplies(d.tracer, rd.Replies)
	}
	if len(rd.Messages) > 0 || len(outs) > 0 || len(durable) > 0 {
		it := &outItem{durable: durable, msgs: rd.Messages, outs: outs, epoch: d.execEpoch, start: start}
		if d.afterPersistHook() {
			it.rd = rd
		}
		d.out.push(it)
	}
	if rd.SoftState != nil {
		d.host.onSoftState(*rd.SoftState)
	}
	if rd.StateTransfer != nil {
		d.host.startSync(*rd.StateTransfer)
	}
	return nil
}

// runDeferred executes batches held back during a restore that has ended without installing.
func (d *readyDriver) runDeferred() error {
	if len(d.deferred) == 0 || d.restoring.Load() {
		return nil
	}
	return d.handle(&pbft.Ready{}, nil)
}

// writeRecords writes the Ready's hard state, log entries and log truncation into b.
func writeRecords(rd *pbft.Ready, b *store.Batch) error {
	if rd.HardState != nil {
		data, err := rd.HardState.Marshal()
		if err != nil {
			return fmt.Errorf("node: encode hard state: %w", err)
		}
		if err := b.SetHardState(data); err != nil {
			return err
		}
	}
	for i := range rd.Entries {
		data, err := encodeEntry(&rd.Entries[i])
		if err != nil {
			return fmt.Errorf("node: encode log entry: %w", err)
		}
		if err := b.AppendRecord(rd.Entries[i].Seq, data); err != nil {
			return err
		}
	}
	if rd.Truncate > 0 {
		if err := b.TruncateLog(rd.Truncate); err != nil {
			return err
		}
	}
	return nil
}

// onHardState keeps the engine's snapshot for serving state transfers (readyHost.serveSnapshot) and
// releases the application snapshots no longer needed: the node keeps the last
// state_sync.keep_snapshots stable checkpoints and the checkpoints above them. Under load a checkpoint
// becomes stable every fraction of a second while a snapshot copy takes longer; a peer that started
// copying one of these finishes, and its engine accepts any of its last few certified checkpoints
// (pbft.Replica.CheckSnapshot).
func (d *readyDriver) onHardState(hs *pbft.HardState) {
	s := hs.Snapshot
	if s == nil || s.Seq == 0 {
		return
	}
	keep, added := d.host.serveSnapshot(s)
	if !added {
		return
	}
	if keep == 0 {
		keep = s.Seq
	}
	d.appMu.Lock()
	defer d.appMu.Unlock()
	for h := range d.keptSnaps {
		if h >= keep {
			continue
		}
		if err := d.app.ReleaseSnapshot(h); err != nil {
			d.log.Warn("release application snapshot", "height", h, "err", err)
			continue
		}
		delete(d.keptSnaps, h)
	}
}

// installed forgets what an installed snapshot at seq makes obsolete: the batches held back during the
// restore (the engine forgets them), the blocks executed before and still on their way to disk (below
// the snapshot: a new epoch), and the stored results below it; the application keeps the snapshot.
func (d *readyDriver) installed(seq uint64) {
	d.deferred = nil
	d.execEpoch++
	for h := range d.replayed {
		if h <= seq {
			delete(d.replayed, h)
		}
	}
	d.keptSnaps[seq] = true
}

// reportExecuted tells the engine about executed blocks whose batch is durable, in order. Blocks executed
// before a snapshot was installed (an older epoch) are below the snapshot: the engine has forgotten them.
func (d *readyDriver) reportExecuted(eb executedBlocks) error {
	if len(eb.outs) == 0 || eb.epoch != d.execEpoch {
		return nil
	}
	last := eb.outs[len(eb.outs)-1]
	d.host.publish(last.seq, last.digest)
	for _, o := range eb.outs {
		if err := d.engine.Executed(o.seq, o.results, o.digest); err != nil {
			return fmt.Errorf("node: %w", err)
		}
	}
	return nil
}
