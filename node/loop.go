package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/p2pbft/p2pbft/p2p"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// maxDrain bounds the inputs the loop takes in one round before it handles the engine's output: enough to
// turn a burst into one Ready (one fsync, one batch of sends), few enough to keep ticks on time.
const maxDrain = 512

// statsEvery is how often the loop publishes the engine's counters for metrics and Status.
const statsEvery = 250 * time.Millisecond

// Run runs the replica until ctx ends or a fatal error (a failed disk write, an application error), then
// shuts down cleanly: it stops the state transfer, the p2p host and every goroutine it started, closes the
// store, and returns. It returns nil after a shutdown that ctx asked for. Run may be called once.
func (n *Node) Run(ctx context.Context) error {
	n.lifeMu.Lock()
	if n.runState != notRun {
		n.lifeMu.Unlock()
		return fmt.Errorf("node: Run: %w (a node runs once)", ErrStopped)
	}
	ctx, cancel := context.WithCancel(ctx)
	n.runState, n.cancelRun, n.runCtx = running, cancel, ctx
	n.lifeMu.Unlock()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.ingress(ctx)
	}()
	outDone := make(chan struct{})
	go func() {
		defer close(outDone)
		n.drv.runOutbox(ctx)
	}()
	replierDone := make(chan struct{})
	go func() {
		defer close(replierDone)
		n.replies.run()
	}()
	if n.byz != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.byz.run(ctx)
		}()
		n.log.Error("BYZANTINE EXPERIMENT: this replica misbehaves on purpose and must not be part of a real network",
			"byzantine_mode", n.byz.x.Mode, "delay", n.byz.x.Delay, "drop_rate", n.byz.x.DropRate, "seed", n.byz.x.Seed)
	}
	n.log.Info("replica started", "chain", n.chainID, "peer", n.key.PeerID(), "n", n.n, "f", n.quorum.F,
		"view", n.soft.View, "height", n.store.Head().Height, "addrs", n.host.Addrs())
	close(n.started)
	err := withStoreAdvice(n.loop(ctx), n.cfg.Home)
	if err != nil {
		n.log.Error("replica stopped by a fatal error", "err", err)
	}
	n.drv.out.close()
	close(n.replies.in)
	<-replierDone
	cancel()
	n.sync.Stop()
	wg.Wait()
	<-outDone

	n.lifeMu.Lock()
	n.runState = finished
	n.lifeMu.Unlock()
	close(n.stopped)
	n.closeOnce.Do(func() { n.closeErr = n.release() })
	n.log.Info("replica stopped", "height", n.store.Head().Height)
	close(n.runDone)
	return errors.Join(err, n.closeErr)
}

// ingress moves verified deliveries from the p2p host to the loop. On the way it verifies the client
// requests inside pre-prepares that are not verified yet (requests sent only to the primary), in batches on
// the verifier pool, so that the engine finds them in the signature cache instead of verifying them on the
// loop. That happens beside the stream of other messages (at most maxPreverify pre-prepares at a time),
// which therefore may overtake the pre-prepare; the engine keeps votes that arrive before their
// pre-prepare.
func (n *Node) ingress(ctx context.Context) {
	const maxPreverify = 8
	sem := make(chan struct{}, maxPreverify)
	var wg sync.WaitGroup
	defer wg.Wait()
	forward := func(m inMsg) bool {
		select {
		case n.inbox <- m:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		select {
		case d := <-n.host.Deliveries():
			if d.Envelope.Kind == wire.KindPrePrepare && len(d.Envelope.Body) > 0 {
				if reqs, err := pbft.DecodeBatch(d.Envelope.Body); err == nil && len(reqs) > 0 {
					select {
					case sem <- struct{}{}:
					case <-ctx.Done():
						return
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						defer func() { <-sem }()
						m := inMsg{d: d}
						if n.preverify(reqs) {
							m.reqs = reqs // the engine takes them as decoded and verified
						} // else the engine finds and reports the bad ones
						forward(m)
					}()
					continue
				}
			}
			if !forward(inMsg{d: d}) {
				return
			}
		case <-n.host.Events():
			// The host logs replicas coming and going; the engine's retransmissions and fetches repair what
			// a replica missed while away, so the loop needs no nudge. Reading keeps the host from counting
			// the events as dropped.
		case <-ctx.Done():
			return
		}
	}
}

// loop is the replica's event loop: it feeds the engine ticks, messages, client requests and the results of
// state transfer, and handles the engine's output after every round of inputs.
func (n *Node) loop(ctx context.Context) error {
	ticker := time.NewTicker(n.cfg.Consensus.Tick)
	defer ticker.Stop()
	for {
		if err := n.drv.runDeferred(); err != nil {
			return err
		}
		if err := n.processReady(); err != nil {
			return err
		}
		n.maybePublishStats()
		var err error
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
			n.rep.Tick()
			n.sync.Tick(n.runCtx)
		case m := <-n.inbox:
			n.step(m)
		case p := <-n.proposals:
			n.propose(p)
		case lb := <-n.linkReqs:
			n.proposeLinkBatch(lb)
		case ev := <-n.syncCh:
			err = n.onSyncEvent(ev)
		case eb := <-n.executedCh:
			err = n.drv.reportExecuted(eb)
		case err = <-n.fatalCh:
		}
		if err != nil {
			return err
		}
	drain:
		for range maxDrain {
			select {
			case m := <-n.inbox:
				n.step(m)
			case p := <-n.proposals:
				n.propose(p)
			case lb := <-n.linkReqs:
				n.proposeLinkBatch(lb)
			case eb := <-n.executedCh:
				if err := n.drv.reportExecuted(eb); err != nil {
					return err
				}
			default:
				break drain
			}
		}
	}
}

// preverify checks the signatures of a pre-prepare's requests, but for those this backup took from their
// author's own link (trusted, links.go), in one batch; it reports whether all are good.
func (n *Node) preverify(reqs []*wire.Envelope) bool {
	todo := make([]*wire.Envelope, 0, len(reqs))
	for _, e := range reqs {
		if k, ok := wire.SigKeyOf(e); ok && n.trusted.Has(k) {
			continue
		}
		todo = append(todo, e)
	}
	return len(todo) == 0 || n.pool.VerifyBatch(todo) == nil
}

// inMsg is a verified message for the loop; for a pre-prepare, the requests of its body as the ingress
// decoded and verified them (nil if it did not).
type inMsg struct {
	d    p2p.Delivery
	reqs []*wire.Envelope
}

// step hands the engine one verified message from a peer.
func (n *Node) step(m inMsg) {
	e := m.d.Envelope
	if n.hooks != nil && n.hooks.stepped != nil {
		n.hooks.stepped(e)
	}
	var err error
	if m.reqs != nil {
		err = n.rep.StepPrePrepare(e, m.reqs)
	} else {
		err = n.rep.Step(e)
	}
	n.metrics.stepped(e.Kind, err)
	n.traceStep(e, m.d.Author, err)
}

// processReady hands the engine's output to the driver (driver.go) until the engine has none.
func (n *Node) processReady() error {
	for n.rep.HasReady() {
		rd := n.rep.Ready()
		if err := n.drv.handle(&rd, nil); err != nil {
			return err
		}
		n.rep.Advance()
	}
	return nil
}

// send is the one place consensus messages leave the node (it runs on the outbox goroutine, once the
// message's round is durable): to one replica over a direct stream; to all of them over direct streams or
// gossip, by kind (p2p.broadcast, p2p.gossip_kinds). A Byzantine experiment (experiment.go) takes over
// here.
func (n *Node) send(m pbft.Message) {
	if n.hooks != nil && n.hooks.sent != nil {
		n.hooks.sent(m)
	}
	n.traceSent(m)
	if n.byz != nil {
		n.byz.send(m)
		return
	}
	n.transmit(m)
}

// transmit hands one message to the network.
func (n *Node) transmit(m pbft.Message) {
	var err error
	path := "direct"
	switch {
	case m.To != pbft.Broadcast:
		err = n.host.SendToReplica(m.To, m.Env)
	case n.gossipKinds[m.Env.Kind]:
		path = "gossip"
		err = n.host.Multicast(n.runCtx, m.Env)
	default:
		err = n.host.BroadcastDirect(m.Env)
	}
	n.metrics.sent(m.Env.Kind, path, err)
	if err != nil && n.runCtx.Err() == nil {
		n.log.Debug("send failed", "kind", m.Env.Kind, "to", m.To, "err", err)
	}
}

// onSoftState logs and publishes a change of the replica's mode, view or watermarks.
func (n *Node) onSoftState(s pbft.SoftState) {
	old := n.soft
	n.soft = s
	switch {
	case s.Status == pbft.StatusViewChange && (old.Status != pbft.StatusViewChange || s.View != old.View):
		n.log.Warn("view change: suspecting the primary", "view", s.View, "from_view", old.View,
			"old_primary", old.Primary, "new_primary", s.Primary, "executed", s.LastExecuted)
	case s.Status != pbft.StatusViewChange && old.Status == pbft.StatusViewChange:
		n.log.Info("entered new view", "view", s.View, "primary", s.Primary, "executed", s.LastExecuted)
	case s.View != old.View:
		n.log.Info("moved to view", "view", s.View, "primary", s.Primary)
	}
	if s.Status == pbft.StatusSyncing && old.Status != pbft.StatusSyncing {
		n.log.Info("behind the stable checkpoint: syncing", "view", s.View, "stable", s.Stable, "executed", s.LastExecuted)
	}
	if s.Status != pbft.StatusSyncing {
		// Caught up (by the transfer, or by itself): a transfer still running has nothing left to do.
		n.sync.Settled(s.LastExecuted)
	}
	if s.Stable != old.Stable {
		n.log.Debug("checkpoint stable", "view", s.View, "seq", s.Stable, "window", fmt.Sprintf("(%d, %d]", s.Low, s.High))
	}
	n.publishSoft()
}

// serveSnapshot keeps the engine's snapshot s for serving state transfers (serve.go) with the last
// state_sync.keep_snapshots stable checkpoints and those above s, and returns the oldest checkpoint kept
// (0 when only s is kept), or !added when s was kept already (readyDriver.onHardState).
func (n *Node) serveSnapshot(s *pbft.Snapshot) (keep uint64, added bool) {
	n.snapMu.Lock()
	defer n.snapMu.Unlock()
	if _, ok := n.snaps[s.Seq]; ok {
		return 0, false
	}
	n.snaps[s.Seq] = s
	seqs := make([]uint64, 0, len(n.snaps))
	for seq := range n.snaps {
		if seq <= s.Seq {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	if kept := n.cfg.StateSync.KeepSnapshots; len(seqs) > kept {
		keep = seqs[len(seqs)-kept]
	} else if len(seqs) > 1 {
		keep = seqs[0]
	}
	for seq := range n.snaps {
		if seq < keep {
			delete(n.snaps, seq)
		}
	}
	return keep, true
}

// publish records the durable height and application digest for Status and the API.
func (n *Node) publish(height uint64, digest wire.Digest) {
	ps := &publicState{soft: n.soft, height: height, appDigest: digest}
	if old := n.state.Load(); old != nil {
		ps.stats, ps.sync = old.stats, old.sync
	}
	n.state.Store(ps)
	n.filterV.Store(&filterView{view: n.soft.View, active: n.soft.Status != pbft.StatusViewChange, stable: n.soft.Stable})
}

func (n *Node) publishSoft() {
	old := n.state.Load()
	n.publish(old.height, old.appDigest)
}

func (n *Node) maybePublishStats() {
	now := time.Now().UnixNano()
	if now-n.lastStatsPub < int64(statsEvery) {
		return
	}
	n.lastStatsPub = now
	n.adaptTimers()
	old := n.state.Load()
	ps := *old
	ps.stats = n.rep.Stats()
	if ps.stats.SafetyAlarms > old.stats.SafetyAlarms {
		n.log.Error("safety alarm: a NEW-VIEW or commit certificate contradicts a committed batch, so more than f replicas are faulty",
			"view", ps.soft.View, "alarms", ps.stats.SafetyAlarms)
	}
	if ps.stats.Divergences > old.stats.Divergences {
		n.log.Warn("own checkpoint contradicts the certified one: fetching the certified state", "view", ps.soft.View,
			"stable", ps.soft.Stable)
	}
	ps.sync = n.syncStatus()
	n.state.Store(&ps)
}
