package sim

import (
	"math/rand/v2"
	"slices"

	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// The asyncpersist fault: replicas handle their Readys the way the node does (node/outbox.go), under the
// asynchronous-persist variant of the Ready contract (pbft/ready.go). A Ready's writes are applied at once to
// the store a replica reads and serves from, its committed batches execute at once, and the engine is
// Advanced at once; the round's messages and the Executed reports of its blocks wait in a queue. Each round
// becomes durable after a simulated disk latency drawn per round within the seed's bounds (Options.SyncMin
// and SyncMax), never before an earlier round (syncs complete in commit order); a sync event then writes
// the due rounds to the durable store, in order, with the application state after each, and only then sends
// their messages and reports their blocks executed. A crash keeps the durable store and application state
// only: the rounds not yet durable are lost whole, with their queued messages and reports, none of which had
// left. A crash in the middle of a Ready (FaultCrash) here strikes between a sync and the sends it releases,
// and power cuts (schedulePowerCuts) crash a replica while a round of it with messages waits for its sync
// and bring it straight back.
//
// It is not a fault of the network or the replicas, but a way of driving them that every invariant must
// survive; it is drawn like one so that `--faults` chooses it and a seed replays it.

// asyncOneIn: one seed in asyncOneIn that allows the fault gets it.
const asyncOneIn = 2

// planAsync draws the asynchronous persistence and the seed's disk latency bounds, from a stream of their
// own so that the draws of Plan, and every seed recorded before the fault existed, replay as they did.
func planAsync(o *Options, allowed []Fault) {
	if !slices.Contains(allowed, FaultAsyncPersist) {
		return
	}
	rng := rand.New(rand.NewPCG(uint64(o.Seed), 0xa5c))
	if rng.IntN(asyncOneIn) != 0 {
		return
	}
	o.Faults = append(o.Faults, FaultAsyncPersist)
	// Messages take 1..baseDelay (12) time units and a tick is 10: a sync takes about as long as a hop, up
	// to several hops and retransmission periods.
	o.SyncMin = 1 + rng.Int64N(10)
	o.SyncMax = o.SyncMin + rng.Int64N(60)
}

// round is one Ready's output under asynchronous persistence, waiting for its sync.
type round struct {
	w         write
	msgs      []pbft.Message
	outs      []executedBlock
	sends     bool      // the Ready had messages (sent already by the broken driver)
	epoch     uint64    // node.epoch when its blocks executed
	app       *appState // the application state after the round, if the round changed it
	durableAt int64
}

// executedBlock is a block to report with Executed once durable.
type executedBlock struct {
	seq     uint64
	results [][]byte
	digest  wire.Digest
}

// asyncState is a replica's durable side under asynchronous persistence.
type asyncState struct {
	disk    memStore // what survives a crash; node.store is what the replica wrote
	diskApp appState // the application state as of the last durable round
	pending []*round
	last    int64    // when the last queued round becomes durable
	appAt   appState // the application state recorded with the last queued round (counters not kept)
	// lost counts the rounds crashes lost, lostMsgs those with messages; they survive wipes (node.wipe
	// resets the rest).
	lost, lostMsgs int
}

func (n *node) async() bool { return n.c.opt.has(FaultAsyncPersist) }

// readyAsync handles one Ready under asynchronous persistence, Advance included.
func (n *node) readyAsync(rd *pbft.Ready) {
	w, err := encodeWrite(rd)
	if err != nil {
		n.c.obs.violation("%s: persist: %v", n.name, err)
	}
	n.store.write(&w)
	n.onHardState(rd)
	r := &round{w: w, epoch: n.epoch, sends: len(rd.Messages) > 0}
	if n.c.opt.earlySend {
		n.send(rd.Messages) // the broken driver: the round's messages leave before its writes are durable
	} else {
		r.msgs = rd.Messages
	}
	for _, rm := range rd.Replies {
		n.c.net.sendReply(n, rm) // built only for blocks reported executed, so durable
	}
	for i := range rd.Committed {
		o, ok := n.run(&rd.Committed[i])
		if !n.up {
			return
		}
		if ok {
			r.outs = append(r.outs, o)
		}
	}
	if a := &n.as.appAt; a.seq != n.app.applied || a.digest != n.app.digest {
		s := n.app.snapshot()
		r.app = &s
		n.as.appAt = appState{seq: s.seq, digest: s.digest}
	}
	n.afterReady(rd)
	n.rep.Advance()
	if w.empty() && !r.sends && len(r.outs) == 0 && r.app == nil {
		return
	}
	r.durableAt = max(n.as.last, n.c.now)
	if !w.empty() || r.app != nil {
		r.durableAt = max(n.as.last, n.c.now+n.c.opt.SyncMin+n.c.disk.Int64N(n.c.opt.SyncMax-n.c.opt.SyncMin+1))
	}
	n.as.last = r.durableAt
	n.as.pending = append(n.as.pending, r)
	rep := n.rep
	n.c.at(r.durableAt, func() {
		if n.rep == rep && n.up {
			n.syncDue()
		}
	})
}

// syncDue makes the rounds whose sync completed durable, in order, then sends their messages and reports
// their blocks executed.
func (n *node) syncDue() {
	k := 0
	for k < len(n.as.pending) && n.as.pending[k].durableAt <= n.c.now {
		k++
	}
	if k == 0 {
		return
	}
	due := n.as.pending[:k]
	n.as.pending = slices.Clone(n.as.pending[k:])
	for _, r := range due {
		n.as.disk.write(&r.w)
		if r.app != nil {
			n.as.diskApp = *r.app
		}
	}
	if n.crashMidReady {
		n.crash() // durable, but nothing of it sent
		return
	}
	for _, r := range due {
		n.send(r.msgs)
		if r.epoch != n.epoch {
			continue // executed before a snapshot was installed: below it, forgotten by the engine
		}
		for _, o := range r.outs {
			if err := n.rep.Executed(o.seq, o.results, o.digest); err != nil {
				n.c.obs.violation("%s: Executed(%d): %v", n.name, o.seq, err)
			}
		}
	}
	n.process()
}

// loseVolatile is the asynchronous part of a crash: the store and the application go back to what is
// durable, and the rounds waiting for their sync are lost with their messages and reports.
func (n *node) loseVolatile() {
	if !n.async() {
		return
	}
	a := &n.as
	if len(a.pending) > 0 {
		n.c.tracef("%s loses %d rounds not yet durable", n.name, len(a.pending))
	}
	for _, r := range a.pending {
		a.lost++
		if r.sends {
			a.lostMsgs++
		}
	}
	a.pending, a.last = nil, 0
	n.store = a.disk.clone()
	d := a.diskApp.seq
	n.app.restore(a.diskApp)
	a.appAt = appState{seq: d, digest: a.diskApp.digest}
	if n.app.counters == nil {
		n.app.counters = map[string]uint64{} // nothing durable yet
	}
	for s := range n.app.history {
		if s > d {
			delete(n.app.history, s)
		}
	}
	for s := range n.app.snaps {
		if s > d {
			delete(n.app.snaps, s)
		}
	}
	for s := range n.blocks {
		if s > d {
			delete(n.blocks, s)
		}
	}
	for s := range n.coreSnaps {
		if s > d {
			delete(n.coreSnaps, s)
		}
	}
	// The replica delivers again from after its durable application state.
	n.c.obs.next[n] = d + 1
}

// schedulePowerCuts plans, under FaultAsyncPersist, one to three crashes that strike a correct replica while
// a round of it with messages waits for its sync, and restart it after one to ten ticks: a process or
// machine that fails and comes straight back, while the cluster is still where it left it and the replica
// is asked to act again in the slots whose records it lost. (The crash fault's restarts come after 20 to 320
// ticks, by when the cluster has mostly moved on.) The draws come from the disk's stream, so runs without
// the fault replay as they did.
func (c *Cluster) schedulePowerCuts() {
	if !c.opt.has(FaultAsyncPersist) {
		return
	}
	for k := 1 + c.disk.IntN(3); k > 0; k-- {
		at := c.disk.Int64N(c.healAt)
		down := int64(1+c.disk.IntN(10)) * tickEvery
		from := c.disk.IntN(len(c.nodes))
		var try func(left int)
		try = func(left int) {
			if c.now >= c.healAt {
				return
			}
			for i := range c.nodes {
				n := c.nodes[(from+i)%len(c.nodes)]
				if n.up && n.correct() && n.as.sending() {
					c.tracef("%s power cut", n.name)
					n.crash()
					c.after(down, func() {
						if !n.up && c.now < c.healAt {
							n.restart()
						}
					})
					return
				}
			}
			if left > 0 {
				c.after(1, func() { try(left - 1) })
			}
		}
		c.at(at, func() { try(1000) })
	}
}

// sending reports whether a round with messages waits for its sync.
func (a *asyncState) sending() bool {
	for _, r := range a.pending {
		if r.sends {
			return true
		}
	}
	return false
}
