package statesync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/p2pbft/p2pbft/node/app"
	"github.com/p2pbft/p2pbft/node/store"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// Fetcher reaches the other replicas.
type Fetcher interface {
	// Replicas returns the connected replicas (their indexes), in a stable order.
	Replicas() []int
	// Fetch signs req, sends it to replica p and returns p's answer, unchecked (the Syncer checks its kind
	// and decodes it). ctx bounds the exchange.
	Fetch(ctx context.Context, p int, req *Request) (*wire.Envelope, error)
}

// Installer changes the replica's state. It is called from the transfer's goroutine. ApplyBlocks and
// Install hand their argument to the replica's event loop and return its verdict, or ctx's error if ctx
// ends first (unless the loop answered meanwhile).
type Installer interface {
	// ApplyBlocks hands checked, contiguous blocks to the engine, which executes them like committed
	// batches.
	ApplyBlocks(ctx context.Context, blocks []*Block) error
	// Restore starts restoring the application snapshot at seq, whose state must have digest appDigest.
	// Until the restore is finished or aborted the application does not execute; the returned restore's
	// methods must be safe to call beside the replica's execution.
	Restore(seq uint64, appDigest wire.Digest) (app.SnapshotRestore, error)
	// Install finishes the restore of s and installs s: the application's switch, the chain's jump to
	// s.Block and the engine's new state, atomically. An error wrapping app.ErrDigestMismatch says that the
	// restored state does not have the certified digest (the peers that sent chunks are skipped next).
	Install(ctx context.Context, s *Snapshot) error
}

// Replica is what the Syncer asks of the replica's engine. It is called from the event loop only (from
// Start and Tick).
type Replica interface {
	// View is the current view (logged when a transfer starts).
	View() uint64
	// Needs reports whether the replica still needs a transfer to seq: it is syncing and has not executed
	// up to seq.
	Needs(seq uint64) bool
}

// Metrics counts what the transfers do.
type Metrics interface {
	// Transfer counts a transfer's outcome: method "snapshot" or "blocks", result "ok" or "failed".
	Transfer(method, result string)
	// Bytes counts snapshot bytes fetched (client table and application chunks).
	Bytes(n int)
	// Blocks counts blocks fetched and handed to the engine.
	Blocks(n int)
}

// Clock is the transfer's time.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

type noMetrics struct{}

func (noMetrics) Transfer(string, string) {}
func (noMetrics) Bytes(int)               {}
func (noMetrics) Blocks(int)              {}

// Options configures a Syncer. Fetcher, CertCheck, Installer and Replica are required.
type Options struct {
	// Quorums are the replica set's vote counts (pbft.QuorumsOf(n)): f+1 manifests must agree.
	Quorums pbft.Quorums
	// BlockSyncMax is how far behind (in blocks) a replica fetches blocks rather than a snapshot.
	BlockSyncMax uint64
	// RequestTimeout bounds one request to a peer.
	RequestTimeout time.Duration
	// ChunkBytes is the most data asked for in one response.
	ChunkBytes int

	Fetcher   Fetcher
	CertCheck store.CertCheck
	Installer Installer
	Replica   Replica
	// Metrics, Clock and Log default to none, the system clock and slog.Default().
	Metrics Metrics
	Clock   Clock
	Log     *slog.Logger
}

// Syncer runs the state transfers the engine asks for, one at a time. Its methods are called from the
// replica's event loop only.
type Syncer struct {
	o    Options
	cur  *transfer
	next *pbft.StateTransfer // a newer transfer asked for while a snapshot copy kept its target
}

// New returns a Syncer with no transfer running.
func New(o Options) *Syncer {
	if o.Metrics == nil {
		o.Metrics = noMetrics{}
	}
	if o.Clock == nil {
		o.Clock = systemClock{}
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Syncer{o: o}
}

// Progress is what a running transfer has done so far.
type Progress struct {
	// Target is the checkpoint the replica syncs to; Method "snapshot" or "blocks".
	Target  uint64
	Method  string
	Started time.Time
	// Bytes, Chunks and Blocks fetched so far; Peer the replica asked last (-1: none yet).
	Bytes  uint64
	Chunks uint64
	Blocks uint64
	Peer   int
}

// Progress returns the progress of the running transfer, or nil if none runs.
func (s *Syncer) Progress() *Progress {
	t := s.cur
	if t == nil || t.finished() {
		return nil
	}
	m, _ := t.method.Load().(string)
	return &Progress{Target: t.target.Seq, Method: m, Started: t.started, Bytes: t.bytes.Load(),
		Chunks: t.chunks.Load(), Blocks: t.blocks.Load(), Peer: int(t.peer.Load())}
}

// keepTransferFor is how long a snapshot transfer that has not failed keeps its target when the engine
// asks for a newer checkpoint. Under load checkpoints become stable faster than a snapshot copies; the
// engine installs a snapshot of any recent certified checkpoint and then catches up with blocks, while
// restarting the copy at every new checkpoint would never finish.
const keepTransferFor = 20 * time.Second

// Start starts (or retargets) the state transfer the engine asked for, under ctx.
func (s *Syncer) Start(ctx context.Context, st pbft.StateTransfer) {
	if t := s.cur; t != nil {
		if !t.finished() && t.target.Seq >= st.Seq {
			return // already on it
		}
		if !t.finished() && t.method.Load() == "snapshot" && t.failures.Load() == 0 && s.o.Clock.Now().Sub(t.started) < keepTransferFor {
			// Let the copy finish (see keepTransferFor); the newer target waits for it.
			s.next = &st
			return
		}
		s.Stop()
	}
	s.next = nil
	ctx, cancel := context.WithCancel(ctx)
	t := &transfer{o: &s.o, target: st, started: s.o.Clock.Now(), cancel: cancel, done: make(chan struct{}), bad: map[int]bool{}}
	t.peer.Store(-1)
	s.cur = t
	s.o.Log.Info("state transfer started", "view", s.o.Replica.View(), "target", st.Seq, "applied", st.Applied,
		"behind", st.Seq-st.Applied)
	go t.run(ctx)
}

// Tick starts, under ctx, the newer transfer the engine asked for while a snapshot copy kept its target
// (Start), once that copy ended without bringing the replica to the newer target, failed an attempt, or
// ran for keepTransferFor. The loop calls it on every tick.
func (s *Syncer) Tick(ctx context.Context) {
	next, t := s.next, s.cur
	if next == nil {
		return
	}
	if t != nil && !t.finished() && t.failures.Load() == 0 && s.o.Clock.Now().Sub(t.started) < keepTransferFor {
		return
	}
	if !s.o.Replica.Needs(next.Seq) {
		s.next = nil // caught up meanwhile (the engine asks again if it still needs a transfer)
		return
	}
	s.next = nil
	if t != nil {
		s.Stop()
	}
	s.Start(ctx, *next)
}

// Settled stops the transfer (if any) because the replica no longer syncs; executed is the replica's last
// executed height. A transfer whose target the replica reached counts as done.
func (s *Syncer) Settled(executed uint64) {
	t := s.cur
	if t == nil {
		return
	}
	if executed >= t.target.Seq {
		t.caughtUp.Store(true)
	}
	s.Stop()
}

// Stop cancels the running transfer and waits for its goroutine (which aborts an unfinished restore).
func (s *Syncer) Stop() {
	t := s.cur
	if t == nil {
		return
	}
	t.cancel()
	<-t.done
	s.cur = nil
}

// transfer is one state transfer, to one target, on its own goroutine.
type transfer struct {
	o       *Options
	target  pbft.StateTransfer
	method  atomic.Value // string
	started time.Time
	cancel  context.CancelFunc
	done    chan struct{}
	bytes   atomic.Uint64
	chunks  atomic.Uint64
	blocks  atomic.Uint64
	peer    atomic.Int64
	bad     map[int]bool // peers that failed a check in this transfer
	rot     int
	// caughtUp is set when the loop stops the transfer because the replica holds the target state (the
	// transfer delivered it, or the engine's own catching up overtook it).
	caughtUp atomic.Bool
	// failures counts failed attempts: a transfer that failed is replaced by a newer target at once.
	failures atomic.Int32
}

func (t *transfer) finished() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

func (t *transfer) since(start time.Time) time.Duration { return t.o.Clock.Now().Sub(start) }

func (t *transfer) run(ctx context.Context) {
	defer close(t.done)
	o := t.o
	st := t.target
	useBlocks := st.Seq-st.Applied <= o.BlockSyncMax
	backoff := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		method := "snapshot"
		if useBlocks {
			method = "blocks"
		}
		t.method.Store(method)
		var err error
		if useBlocks {
			err = t.syncBlocks(ctx)
		} else {
			err = t.syncSnapshot(ctx)
		}
		if err == nil || t.caughtUp.Load() {
			o.Metrics.Transfer(method, "ok")
			d := t.since(t.started)
			o.Log.Info("state transfer done", "target", st.Seq, "method", method, "blocks_behind", st.Seq-st.Applied,
				"seconds", fmt.Sprintf("%.2f", d.Seconds()), "bytes", t.bytes.Load(), "chunks", t.chunks.Load(), "blocks_fetched", t.blocks.Load(),
				"blocks_per_s", fmt.Sprintf("%.0f", float64(st.Seq-st.Applied)/d.Seconds()))
			return
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, pbft.ErrNotSyncing) || errors.Is(err, pbft.ErrStale) {
			// The replica caught up by itself, or syncs to a later checkpoint now (a new transfer follows).
			o.Log.Info("state transfer no longer needed", "target", st.Seq, "reason", err)
			return
		}
		t.failures.Add(1)
		o.Metrics.Transfer(method, "failed")
		o.Log.Warn("state transfer attempt failed", "target", st.Seq, "method", method, "attempt", attempt, "err", err)
		if useBlocks && attempt >= 2 {
			useBlocks = false // peers may lack the blocks (they copied a snapshot past them)
		}
		if len(t.bad) >= o.Quorums.N-1 {
			clear(t.bad) // everyone failed once: try them all again
		}
		select {
		case <-ctx.Done():
			return
		case <-o.Clock.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// peers returns the connected replicas to ask, starting with the next one in turn, good ones first.
func (t *transfer) peers() []int {
	conn := t.o.Fetcher.Replicas()
	if len(conn) == 0 {
		return nil
	}
	t.rot++
	var good, bad []int
	for i := range conn {
		p := conn[(i+t.rot)%len(conn)]
		if t.bad[p] {
			bad = append(bad, p)
		} else {
			good = append(good, p)
		}
	}
	return append(good, bad...)
}

// ask sends one state request to replica p and decodes its answer.
func (t *transfer) ask(ctx context.Context, p int, req *Request) (*Response, error) {
	ctx, cancel := context.WithTimeout(ctx, t.o.RequestTimeout)
	defer cancel()
	t.peer.Store(int64(p))
	resp, err := t.o.Fetcher.Fetch(ctx, p, req)
	if err != nil {
		return nil, err
	}
	if resp.Kind != wire.KindStateResponse {
		return nil, fmt.Errorf("replica %d answered with a %s", p, resp.Kind)
	}
	return DecodeResponse(resp.Payload, req.Type, req.Seq)
}
