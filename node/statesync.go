package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/p2pbft/p2pbft/node/api/apitypes"
	"github.com/p2pbft/p2pbft/node/app"
	"github.com/p2pbft/p2pbft/node/statesync"
	"github.com/p2pbft/p2pbft/node/store"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// State transfer, the driving side (package statesync has the protocol). When the engine asks for the
// state at a certified checkpoint (Ready.StateTransfer), the loop starts a syncer goroutine that fetches it
// from peers, checking everything against the certificate, and hands the result back to the loop:
//
//   - blocks, when the replica is at most state_sync.block_sync_max blocks behind: pages of blocks, each
//     checked against its commit certificate off the loop; the loop hands them to the engine
//     (ApplyCommitted) and executes them like any committed batch, so the chain stays complete;
//   - otherwise a snapshot: manifests from all peers (f+1 agreeing on the anchor block), the client table,
//     then the application's chunks, applied as they arrive; the loop finishes the restore and jumps the
//     chain in one atomic batch with the engine's new state (InstallSnapshot).
//
// A peer that fails a check or does not answer is skipped and the next one asked; an attempt that fails
// altogether is retried with backoff, by snapshot if blocks failed. While a snapshot restore is in progress
// the application cannot execute, so batches the engine delivers meanwhile are held back and executed after
// an aborted restore, or dropped after an installed one (the engine forgets them then).

// pageBlocks bounds the blocks asked for in one request.
const pageBlocks = 64

// syncEvent is what the syncer hands to the loop: *blocksEvent or *snapshotEvent.
type syncEvent any

type blocksEvent struct {
	blocks []*checkedBlock
	res    chan error
}

type snapshotEvent struct {
	seq       uint64
	appDigest wire.Digest
	table     []byte
	block     *store.Block
	restore   app.SnapshotRestore
	res       chan error
}

type syncer struct {
	n       *Node
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

// keepTransferFor is how long a snapshot transfer that has not failed keeps its target when the engine
// asks for a newer checkpoint. Under load checkpoints become stable faster than a snapshot copies; the
// engine installs a snapshot of any recent certified checkpoint and then catches up with blocks, while
// restarting the copy at every new checkpoint would never finish.
const keepTransferFor = 20 * time.Second

func (s *syncer) finished() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func (s *syncer) status() *apitypes.SyncStatus {
	if s.finished() {
		return nil
	}
	m, _ := s.method.Load().(string)
	return &apitypes.SyncStatus{Target: s.target.Seq, Method: m, Started: s.started, Bytes: s.bytes.Load(),
		Blocks: s.blocks.Load(), Peer: int(s.peer.Load())}
}

// startSync starts (or retargets) the state transfer the engine asked for.
func (n *Node) startSync(st pbft.StateTransfer) {
	if s := n.sync; s != nil {
		if !s.finished() && s.target.Seq >= st.Seq {
			return // already on it
		}
		if !s.finished() && s.method.Load() == "snapshot" && s.failures.Load() == 0 && time.Since(s.started) < keepTransferFor {
			// Let the copy finish (see keepTransferFor); the newer target waits for it.
			n.syncNext = &st
			return
		}
		n.stopSync()
	}
	n.syncNext = nil
	ctx, cancel := context.WithCancel(n.runCtx)
	s := &syncer{n: n, target: st, started: time.Now(), cancel: cancel, done: make(chan struct{}), bad: map[int]bool{}}
	s.peer.Store(-1)
	n.sync = s
	n.log.Info("state transfer started", "view", n.soft.View, "target", st.Seq, "applied", st.Applied,
		"behind", st.Seq-st.Applied)
	go s.run(ctx)
}

// maybeRetargetSync starts the newer transfer the engine asked for while a snapshot copy kept its target
// (startSync), once that copy ended without bringing the replica to the newer target, failed an attempt,
// or ran for keepTransferFor. Called from the loop on every tick.
func (n *Node) maybeRetargetSync() {
	next, s := n.syncNext, n.sync
	if next == nil {
		return
	}
	if s != nil && !s.finished() && s.failures.Load() == 0 && time.Since(s.started) < keepTransferFor {
		return
	}
	if n.rep.Status().LastExecuted >= next.Seq || n.soft.Status != pbft.StatusSyncing {
		n.syncNext = nil // caught up meanwhile (the engine asks again if it still needs a transfer)
		return
	}
	n.syncNext = nil
	if s != nil {
		n.stopSync()
	}
	n.startSync(*next)
}

// stopSync cancels the running state transfer and waits for its goroutine (which aborts an unfinished
// restore). Called from the loop.
func (n *Node) stopSync() {
	s := n.sync
	if s == nil {
		return
	}
	s.cancel()
	<-s.done
	n.sync = nil
}

func (s *syncer) run(ctx context.Context) {
	defer close(s.done)
	n := s.n
	st := s.target
	useBlocks := st.Seq-st.Applied <= n.cfg.StateSync.BlockSyncMax
	backoff := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		method := "snapshot"
		if useBlocks {
			method = "blocks"
		}
		s.method.Store(method)
		var err error
		if useBlocks {
			err = s.syncBlocks(ctx)
		} else {
			err = s.syncSnapshot(ctx)
		}
		if err == nil || s.caughtUp.Load() {
			n.metrics.syncs.WithLabelValues(method, "ok").Inc()
			d := time.Since(s.started)
			n.log.Info("state transfer done", "target", st.Seq, "method", method, "blocks_behind", st.Seq-st.Applied,
				"seconds", fmt.Sprintf("%.2f", d.Seconds()), "bytes", s.bytes.Load(), "chunks", s.chunks.Load(), "blocks_fetched", s.blocks.Load(),
				"blocks_per_s", fmt.Sprintf("%.0f", float64(st.Seq-st.Applied)/d.Seconds()))
			return
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, pbft.ErrNotSyncing) || errors.Is(err, pbft.ErrStale) {
			// The replica caught up by itself, or syncs to a later checkpoint now (a new transfer follows).
			n.log.Info("state transfer no longer needed", "target", st.Seq, "reason", err)
			return
		}
		s.failures.Add(1)
		n.metrics.syncs.WithLabelValues(method, "failed").Inc()
		n.log.Warn("state transfer attempt failed", "target", st.Seq, "method", method, "attempt", attempt, "err", err)
		if useBlocks && attempt >= 2 {
			useBlocks = false // peers may lack the blocks (they copied a snapshot past them)
		}
		if len(s.bad) >= n.n-1 {
			clear(s.bad) // everyone failed once: try them all again
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// peers returns the connected replicas to ask, starting with the next one in turn, good ones first.
func (s *syncer) peers() []int {
	conn := s.n.host.ConnectedReplicas()
	if len(conn) == 0 {
		return nil
	}
	s.rot++
	var good, bad []int
	for i := range conn {
		p := conn[(i+s.rot)%len(conn)]
		if s.bad[p] {
			bad = append(bad, p)
		} else {
			good = append(good, p)
		}
	}
	return append(good, bad...)
}

// ask sends one state request to replica p and decodes its answer.
func (s *syncer) ask(ctx context.Context, p int, req *statesync.Request) (*statesync.Response, error) {
	n := s.n
	env, err := statesync.NewRequest(n.key, n.chainID, req)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.StateSync.RequestTimeout)
	defer cancel()
	s.peer.Store(int64(p))
	resp, err := n.host.Request(ctx, n.genesis.PeerID(p), env)
	if err != nil {
		return nil, err
	}
	if resp.Kind != wire.KindStateResponse {
		return nil, fmt.Errorf("replica %d answered with a %s", p, resp.Kind)
	}
	return statesync.DecodeResponse(resp.Payload, req.Type, req.Seq)
}

// toLoop hands an event to the loop and waits for its verdict.
func (s *syncer) toLoop(ctx context.Context, ev syncEvent, res chan error) error {
	select {
	case s.n.syncCh <- ev:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		select {
		case err := <-res: // the loop answered, then stopped the transfer (it is done)
			return err
		default:
			return ctx.Err()
		}
	}
}

// syncBlocks fetches the blocks after the applied height up to the target and hands them to the loop.
func (s *syncer) syncBlocks(ctx context.Context) error {
	n := s.n
	next := s.target.Applied + 1
	lastLog := time.Now()
	for next <= s.target.Seq {
		peers := s.peers()
		if len(peers) == 0 {
			return errors.New("no replica connected")
		}
		var page []*checkedBlock
		var lastErr error
		for _, p := range peers {
			req := &statesync.Request{Type: statesync.TypeBlocks, Seq: next, To: min(s.target.Seq, next+pageBlocks-1),
				MaxBytes: uint32(n.cfg.StateSync.ChunkBytes)}
			resp, err := s.ask(ctx, p, req)
			if err == nil {
				page, err = s.checkPage(resp, next)
			}
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				lastErr = fmt.Errorf("replica %d: %w", p, err)
				s.bad[p] = true
				continue
			}
			break
		}
		if page == nil {
			return fmt.Errorf("blocks from %d: %w", next, lastErr)
		}
		res := make(chan error, 1)
		if err := s.toLoop(ctx, &blocksEvent{blocks: page, res: res}, res); err != nil {
			return err
		}
		s.blocks.Add(uint64(len(page)))
		n.metrics.syncBlocks.Add(float64(len(page)))
		next += uint64(len(page))
		if time.Since(lastLog) >= 2*time.Second {
			lastLog = time.Now()
			el := time.Since(s.started).Seconds()
			n.log.Info("state transfer progress", "target", s.target.Seq, "at", next-1,
				"blocks_per_s", fmt.Sprintf("%.0f", float64(s.blocks.Load())/el))
		}
	}
	return nil
}

// checkPage verifies a page of blocks: contiguous from next, each with a valid certificate.
func (s *syncer) checkPage(resp *statesync.Response, next uint64) ([]*checkedBlock, error) {
	page := make([]*checkedBlock, 0, len(resp.Blocks))
	for i, data := range resp.Blocks {
		cb, err := s.n.verifyBlock(data, next+uint64(i))
		if err != nil {
			return nil, err
		}
		if cb.block.Height > s.target.Seq {
			break
		}
		page = append(page, cb)
	}
	if len(page) == 0 {
		return nil, errors.New("no block in the answer")
	}
	return page, nil
}

// manifest is a checked manifest and who sent it.
type manifest struct {
	peer int
	resp *statesync.Response
	blk  *checkedBlock
	hash wire.Digest
}

// syncSnapshot copies the snapshot at the target checkpoint.
func (s *syncer) syncSnapshot(ctx context.Context) error {
	n := s.n
	seq := s.target.Seq
	peers := s.peers()
	if len(peers) == 0 {
		return errors.New("no replica connected")
	}
	// Manifests from every connected peer, at once.
	var mu sync.Mutex
	var ms []manifest
	var errs []error
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := s.fetchManifest(ctx, p)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("replica %d: %w", p, err))
				return
			}
			ms = append(ms, *m)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	hashes := make([]wire.Digest, len(ms))
	for i, m := range ms {
		hashes[i] = m.hash
	}
	_, idx, ok := statesync.Agreement(hashes, n.quorum.Weak())
	if !ok {
		return fmt.Errorf("no %d replicas agree on the snapshot at %d (%d valid manifests; %w)", n.quorum.Weak(), seq, len(ms), errors.Join(errs...))
	}
	var providers []manifest
	for _, i := range idx {
		if !s.bad[ms[i].peer] {
			providers = append(providers, ms[i])
		}
	}
	for _, i := range idx {
		if s.bad[ms[i].peer] {
			providers = append(providers, ms[i])
		}
	}
	m0 := providers[0].resp
	n.log.Info("state transfer: snapshot found", "target", seq, "providers", len(providers),
		"table_bytes", m0.TableSize, "app_digest", m0.AppDigest)

	table, err := s.fetchTable(ctx, providers, m0)
	if err != nil {
		return err
	}

	n.appMu.Lock()
	restore, err := n.app.Restore(seq, m0.AppDigest)
	if err == nil {
		n.restoring.Store(true)
	}
	n.appMu.Unlock()
	if err != nil {
		return fmt.Errorf("start restore: %w", err)
	}
	installed := false
	defer func() {
		if installed {
			return
		}
		n.appMu.Lock()
		if err := restore.Abort(); err != nil {
			n.log.Warn("abort restore", "err", err)
		}
		n.restoring.Store(false)
		n.appMu.Unlock()
	}()
	used, err := s.fetchChunks(ctx, providers, restore)
	if err != nil {
		return err
	}
	res := make(chan error, 1)
	ev := &snapshotEvent{seq: seq, appDigest: m0.AppDigest, table: table, block: providers[0].blk.block,
		restore: restore, res: res}
	if err := s.toLoop(ctx, ev, res); err != nil {
		if errors.Is(err, app.ErrDigestMismatch) {
			for p := range used {
				s.bad[p] = true
			}
		}
		return err
	}
	installed = true
	return nil
}

func (s *syncer) fetchManifest(ctx context.Context, p int) (*manifest, error) {
	seq := s.target.Seq
	resp, err := s.ask(ctx, p, &statesync.Request{Type: statesync.TypeManifest, Seq: seq})
	if err != nil {
		return nil, err
	}
	if !resp.CheckpointMatches(seq, s.target.Digest) {
		return nil, errors.New("manifest does not match the certified checkpoint")
	}
	blk, err := s.n.verifyBlock(resp.Block, seq)
	if err != nil {
		return nil, err
	}
	if blk.block.AppDigest != resp.AppDigest {
		return nil, errors.New("manifest block has another application digest")
	}
	return &manifest{peer: p, resp: resp, blk: blk, hash: blk.block.Hash()}, nil
}

// fetchTable fetches the client table from one provider after another until one sends a table with the
// certified digest.
func (s *syncer) fetchTable(ctx context.Context, providers []manifest, m *statesync.Response) ([]byte, error) {
	var lastErr error
	for _, pv := range providers {
		table := make([]byte, 0, m.TableSize)
		for {
			resp, err := s.ask(ctx, pv.peer, &statesync.Request{Type: statesync.TypeTable, Seq: s.target.Seq,
				Offset: uint64(len(table)), MaxBytes: uint32(s.n.cfg.StateSync.ChunkBytes)})
			if err != nil {
				lastErr = fmt.Errorf("replica %d: %w", pv.peer, err)
				break
			}
			if uint64(len(table)+len(resp.Data)) > m.TableSize || (len(resp.Data) == 0 && resp.More) {
				lastErr = fmt.Errorf("replica %d: client table larger than announced", pv.peer)
				break
			}
			table = append(table, resp.Data...)
			s.bytes.Add(uint64(len(resp.Data)))
			s.n.metrics.syncBytes.Add(float64(len(resp.Data)))
			if !resp.More {
				break
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if lastErr == nil && pbft.ClientTableDigest(table) == m.TableDigest && uint64(len(table)) == m.TableSize {
			return table, nil
		}
		if lastErr == nil {
			lastErr = fmt.Errorf("replica %d: client table does not match the certified digest", pv.peer)
		}
		s.bad[pv.peer] = true
	}
	return nil, lastErr
}

// fetchChunks streams the application snapshot into restore, switching provider on a failure (the cursor
// makes the transfer resumable). It returns the providers that contributed chunks.
func (s *syncer) fetchChunks(ctx context.Context, providers []manifest, restore app.SnapshotRestore) (map[int]bool, error) {
	n := s.n
	used := map[int]bool{}
	i := 0
	failures := 0
	chunks := 0
	lastLog := time.Now()
	for {
		pv := providers[i%len(providers)]
		n.appMu.Lock()
		cursor := restore.Cursor()
		n.appMu.Unlock()
		resp, err := s.ask(ctx, pv.peer, &statesync.Request{Type: statesync.TypeChunk, Seq: s.target.Seq,
			Cursor: cursor, MaxBytes: uint32(n.cfg.StateSync.ChunkBytes)})
		if err == nil {
			n.appMu.Lock()
			err = restore.Apply(resp.Data)
			n.appMu.Unlock()
			if err != nil {
				s.bad[pv.peer] = true
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			failures++
			if failures >= 2*len(providers) {
				return nil, fmt.Errorf("snapshot chunks: replica %d: %w", pv.peer, err)
			}
			n.log.Debug("state transfer: chunk failed, trying another replica", "peer_replica", pv.peer, "err", err)
			i++
			continue
		}
		failures = 0
		used[pv.peer] = true
		chunks++
		s.chunks.Add(1)
		s.bytes.Add(uint64(len(resp.Data)))
		n.metrics.syncBytes.Add(float64(len(resp.Data)))
		if time.Since(lastLog) >= 2*time.Second {
			lastLog = time.Now()
			el := time.Since(s.started).Seconds()
			n.log.Info("state transfer progress", "target", s.target.Seq, "chunks", chunks, "bytes", s.bytes.Load(),
				"mb_per_s", fmt.Sprintf("%.1f", float64(s.bytes.Load())/el/1e6), "from", pv.peer)
		}
		if !resp.More {
			return used, nil
		}
	}
}

// onSyncEvent handles what the syncer hands to the loop. Errors returned are fatal; a bad transfer is
// reported to the syncer through the event.
func (n *Node) onSyncEvent(ev syncEvent) error {
	switch ev := ev.(type) {
	case *blocksEvent:
		for _, b := range ev.blocks {
			err := n.rep.ApplyCommitted(b.block.Height, b.reqs, b.cert)
			if err != nil && !errors.Is(err, pbft.ErrStale) {
				ev.res <- err
				return nil
			}
		}
		ev.res <- nil
		return nil
	case *snapshotEvent:
		return n.installSnapshot(ev)
	}
	return fmt.Errorf("node: unknown sync event %T", ev)
}

// installSnapshot finishes a restored snapshot: the application's switch, the chain's jump to the anchor
// block and the engine's new state (hard state, log truncation) commit in one atomic batch.
func (n *Node) installSnapshot(ev *snapshotEvent) error {
	fail := func(err error) error {
		ev.res <- err
		return nil
	}
	if err := n.rep.CheckSnapshot(ev.seq, ev.appDigest, ev.table); err != nil {
		return fail(err)
	}
	head := n.store.Head()
	if head.Height >= ev.seq {
		return fail(fmt.Errorf("node: the chain is at %d, past the snapshot at %d", head.Height, ev.seq))
	}
	b := n.store.NewBatch()
	defer b.Close()
	n.appMu.Lock()
	err := ev.restore.Finish(b.App())
	if err == nil {
		n.restoring.Store(false)
	}
	n.appMu.Unlock()
	if err != nil {
		return fail(err) // the syncer aborts the restore
	}
	// The application switched in memory: from here on a failure stops the node.
	if err := b.JumpTo(store.Ref{Height: ev.seq, Hash: ev.block.Hash()}); err != nil {
		return fmt.Errorf("node: install snapshot %d: %w", ev.seq, err)
	}
	if err := n.rep.InstallSnapshot(ev.seq, ev.appDigest, ev.table); err != nil {
		return fmt.Errorf("node: install snapshot %d: %w", ev.seq, err)
	}
	n.deferred = nil
	n.execEpoch++ // blocks executed before, still on their way to disk, are below the snapshot
	for h := range n.replayed {
		if h <= ev.seq {
			delete(n.replayed, h)
		}
	}
	n.keptSnaps[ev.seq] = true
	n.publish(ev.seq, ev.appDigest)
	ev.res <- nil // installed: whatever fails from here on stops the node
	rd := n.rep.Ready()
	if err := n.handleReady(&rd, b); err != nil {
		return err
	}
	n.rep.Advance()
	// The anchor block itself, so this replica can serve manifests for this checkpoint.
	bf := n.store.NewBatch()
	defer bf.Close()
	if err := bf.BackfillBlock(ev.block); err != nil {
		n.log.Warn("store the snapshot's anchor block", "height", ev.seq, "err", err)
	} else if err := bf.Commit(); err != nil {
		return fmt.Errorf("node: store block %d: %w", ev.seq, err)
	}
	n.log.Info("snapshot installed", "view", n.soft.View, "seq", ev.seq, "app_digest", ev.appDigest,
		"table_bytes", len(ev.table))
	return nil
}
