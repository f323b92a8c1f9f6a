package sim

import (
	"container/heap"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"

	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
	"github.com/p2pbft/p2pbft/wire/wiretest"
)

// Time is virtual: one tick of every replica is tickEvery time units; messages take 1..baseDelay units.
const (
	tickEvery = 10
	baseDelay = 12
	chainID   = "sim"
)

// Cluster is one simulated network: replicas (some Byzantine, maybe twins), clients, and a network, all
// driven by one event queue on a virtual clock and one random source. Nothing runs concurrently.
type Cluster struct {
	opt   Options
	rng   *rand.Rand
	keys  []*wiretest.Key
	pubs  [][]byte
	reg   *wiretest.Registry
	nodes []*node
	byIdx [][]*node

	clients []*client
	now     int64
	evSeq   uint64
	events  eventQueue
	healAt  int64
	stopped bool

	net    network
	split  *certSplit // the certsplit schedule, and the count of NEW-VIEWs with certificates from different views
	slow   slowPhase
	tamper tampering
	obs    *observer
	cfgs   []pbft.Config
	trace  io.Writer
	// Configure, if set, adjusts every replica's configuration (tests use it).
	Configure func(*pbft.Config)
}

type event struct {
	at  int64
	seq uint64
	fn  func()
}

type eventQueue []*event

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(*event)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return e
}

// at schedules fn at absolute time t.
func (c *Cluster) at(t int64, fn func()) {
	c.evSeq++
	heap.Push(&c.events, &event{at: t, seq: c.evSeq, fn: fn})
}

// after schedules fn d time units from now.
func (c *Cluster) after(d int64, fn func()) { c.at(c.now+d, fn) }

func (c *Cluster) tracef(format string, args ...any) {
	if c.trace != nil {
		fmt.Fprintf(c.trace, "%7d  %s\n", c.now, fmt.Sprintf(format, args...))
	}
}

// NewCluster builds the cluster of a run. trace, if not nil, receives a line per notable event.
func NewCluster(opt Options, trace io.Writer) *Cluster {
	c := &Cluster{opt: opt, rng: rand.New(rand.NewPCG(uint64(opt.Seed), 0xc1a5)), trace: trace}
	c.obs = newObserver(c)
	c.healAt = int64(opt.FaultTicks) * tickEvery
	for i := 0; i < opt.N; i++ {
		k := wiretest.NewKey(fmt.Sprintf("replica-%d", i))
		c.keys = append(c.keys, k)
		c.pubs = append(c.pubs, k.PublicKey())
	}
	c.reg = wiretest.NewRegistry(c.keys...)
	c.byIdx = make([][]*node, opt.N)
	for i := 0; i < opt.N; i++ {
		twins := 1
		if opt.Byzantine[i] == FaultTwins {
			twins = 2
		}
		for t := 0; t < twins; t++ {
			n := &node{c: c, idx: i, twin: t, name: fmt.Sprintf("r%d", i), app: newCounterApp(),
				blocks: map[uint64]pbft.CommittedBatch{}, coreSnaps: map[uint64]*pbft.Snapshot{}}
			if twins == 2 {
				n.name = fmt.Sprintf("r%d%c", i, 'a'+t)
			}
			if b, ok := opt.Byzantine[i]; ok {
				n.byz = newByzantine(c, n, b)
			}
			c.nodes = append(c.nodes, n)
			c.byIdx[i] = append(c.byIdx[i], n)
		}
	}
	c.net = newNetwork(c)
	c.split = newCertSplit(c)
	c.slow = newSlowPhase(c)
	c.tamper = newTampering(c)
	for i := 0; i < opt.Clients; i++ {
		c.clients = append(c.clients, newClient(c, i))
	}
	return c
}

// config returns replica i's configuration.
func (c *Cluster) config(i int) pbft.Config {
	if c.cfgs == nil {
		for j := 0; j < c.opt.N; j++ {
			c.cfgs = append(c.cfgs, c.makeConfig(j))
		}
	}
	return c.cfgs[i]
}

func (c *Cluster) makeConfig(i int) pbft.Config {
	cfg := pbft.Config{
		ChainID:            chainID,
		Replicas:           c.pubs,
		Signer:             c.keys[i],
		Verifier:           c.reg,
		CheckpointInterval: c.opt.CheckpointInterval,
		Window:             c.opt.Window,
		MaxBatchRequests:   8,
		RequestTimeout:     40,
		NewViewTimeout:     40,
		MaxBackoff:         4,
		RetransmitTimeout:  6,
		MaxPendingRequests: 64,
		MaxFutureMessages:  64,
		VerifiedCacheSize:  4096,
		FetchBatch:         8,
		PipelineMinBatch:   c.opt.PipelineMinBatch,
	}
	if c.Configure != nil {
		c.Configure(&cfg)
	}
	return cfg.WithDefaults()
}

// Run runs the simulation to its end and returns the result.
func (c *Cluster) Run() *Result {
	for _, n := range c.nodes {
		n.start(nil, 0)
	}
	c.net.schedule()
	for _, cl := range c.clients {
		cl.start()
	}
	c.scheduleCrashes()
	c.scheduleWipes()
	c.at(tickEvery, c.tick)
	c.at(c.healAt, c.heal)
	deadline := c.healAt + int64(c.opt.LivenessTicks)*tickEvery
	for c.events.Len() > 0 && !c.stopped {
		e := heap.Pop(&c.events).(*event)
		if e.at > deadline {
			break
		}
		c.now = e.at
		e.fn()
	}
	c.obs.finish()
	return c.obs.result()
}

// tick ticks every running replica, lets Byzantine replicas act, and checks whether the run is over.
func (c *Cluster) tick() {
	for _, n := range c.nodes {
		if n.up {
			if n.byz != nil {
				n.byz.onTick()
			}
			n.rep.Tick()
			n.process()
		}
	}
	for _, n := range c.nodes {
		if n.up {
			c.obs.checkBounds(n)
		}
	}
	if c.now > c.healAt && c.obs.done() {
		c.stopped = true
		return
	}
	c.after(tickEvery, c.tick)
}

// heal ends the fault period: the network becomes reliable and crashed replicas restart.
func (c *Cluster) heal() {
	c.tracef("heal")
	c.net.healAll()
	for _, n := range c.nodes {
		n.crashMidReady = false
		if !n.up && !n.silent() {
			n.restart()
		}
	}
	c.beginSlow()
}

// scheduleCrashes plans crashes and restarts inside the fault period.
func (c *Cluster) scheduleCrashes() {
	if !c.opt.has(FaultCrash) {
		return
	}
	crashes := 1 + c.rng.IntN(3)
	for k := 0; k < crashes; k++ {
		n := c.nodes[c.rng.IntN(len(c.nodes))]
		at := c.rng.Int64N(c.healAt)
		down := int64(20+c.rng.IntN(300)) * tickEvery / 10
		midReady := c.rng.IntN(3) == 0
		c.at(at, func() {
			if !n.up {
				return
			}
			if midReady {
				n.crashMidReady = true // crashes after persisting its next Ready, before sending it
				return
			}
			n.crash()
		})
		c.at(min(at+down*10, c.healAt), func() {
			if !n.up && !n.silent() {
				n.restart()
			}
		})
	}
}

// scheduleWipes plans restarts from an empty disk: a correct replica crashes, loses its store, its
// application state and the blocks and snapshots it kept, and restarts later (at the latest when the faults
// heal) with nothing but its signed mark. It must catch up from the others without contradicting a vote it
// signed before.
func (c *Cluster) scheduleWipes() {
	if !c.opt.has(FaultWipe) {
		return
	}
	var correct []*node
	for _, n := range c.nodes {
		if n.correct() {
			correct = append(correct, n)
		}
	}
	// One replica, wiped once or twice: a wiped replica counts against f until it caught up (Plan).
	n := correct[c.rng.IntN(len(correct))]
	for k := 1 + c.rng.IntN(2); k > 0; k-- {
		at := c.rng.Int64N(c.healAt)
		down := int64(20+c.rng.IntN(300)) * tickEvery
		c.at(at, func() {
			n.wipeNext = true
			if n.up {
				n.crash()
			}
		})
		c.at(min(at+down, c.healAt), func() {
			if !n.up {
				n.restart()
			}
		})
	}
}

// wipe empties the replica's disk and application state; only its signed mark survives, and the engine is
// given it.
func (n *node) wipe() {
	n.c.tracef("%s wiped (signed mark view %d seq %d)", n.name, n.mark.View, n.mark.Seq)
	n.wipeNext = false
	n.wipes++
	n.store = memStore{}
	n.app = newCounterApp()
	n.blocks = map[uint64]pbft.CommittedBatch{}
	n.coreSnaps = map[uint64]*pbft.Snapshot{}
	n.armed = n.mark
	// The empty replica delivers from the start again (or from a snapshot it installs).
	n.c.obs.next[n] = 1
}

// node is one replica instance.
type node struct {
	c     *Cluster
	idx   int
	twin  int
	name  string
	rep   *pbft.Replica
	store memStore
	app   *counterApp
	up    bool
	byz   *byzantine

	crashMidReady bool
	blocks        map[uint64]pbft.CommittedBatch
	coreSnaps     map[uint64]*pbft.Snapshot
	st            *pbft.StateTransfer
	stBusy        bool
	restarts      int
	low           uint64 // the replica's low watermark as of its last Ready

	// mark is the highest view and sequence number this replica signed in any of its lives (signed.go), as
	// the node's separately fsynced signed-state file keeps it; it survives wipes. wipeNext makes the next
	// restart one from an empty disk, and armed is the mark the engine was given at the last such restart:
	// the votes it covers are gone from the store for good, so every later restart is given it too.
	mark     pbft.Mark
	armed    pbft.Mark
	wipeNext bool
	wipes    int
}

func (n *node) correct() bool { return n.byz == nil }
func (n *node) silent() bool  { return n.byz != nil && n.byz.kind == FaultSilent }

func (n *node) start(p *pbft.Persisted, applied uint64) {
	if n.silent() {
		return
	}
	cfg := n.c.config(n.idx)
	cfg.SignedMark = n.armed
	rep, err := pbft.Restart(cfg, p, applied)
	if err != nil {
		n.c.obs.violation("%s: restart failed: %v", n.name, err)
		return
	}
	n.rep = rep
	n.up = true
	n.slowRetransmit()
	n.low = rep.Status().Low
	n.process()
}

func (n *node) crash() {
	n.c.tracef("%s crash", n.name)
	n.obsStats()
	n.up = false
	n.rep = nil
	n.crashMidReady = false
	n.st, n.stBusy = nil, false
}

func (n *node) restart() {
	n.restarts++
	if n.wipeNext {
		n.wipe()
	}
	p, err := n.store.persisted()
	if err != nil {
		n.c.obs.violation("%s: persisted state does not decode: %v", n.name, err)
		return
	}
	if p != nil {
		n.c.tracef("%s restart (applied %d, %d log entries)", n.name, n.app.applied, len(p.Entries))
	}
	n.start(p, n.app.applied)
}

func (n *node) obsStats() {
	if n.rep != nil {
		n.c.obs.addStats(n.rep.Stats())
	}
}

// process handles the replica's Ready values the way a node must: persist, send, reply, execute, state
// transfer, in that order.
func (n *node) process() {
	for n.up && n.rep.HasReady() {
		rd := n.rep.Ready()
		high := n.low + n.c.opt.Window
		if rd.SoftState != nil {
			high = rd.SoftState.High
		}
		n.c.obs.checkEntries(n, &rd, n.low, high)
		if rd.SoftState != nil {
			n.low = rd.SoftState.Low
		}
		if err := n.store.apply(&rd); err != nil {
			n.c.obs.violation("%s: persist: %v", n.name, err)
		}
		if rd.HardState != nil {
			n.c.obs.onHardState(n, rd.HardState)
			if s := rd.HardState.Snapshot; s != nil && s.Seq > 0 {
				n.coreSnaps[s.Seq] = s
				for seq := range n.coreSnaps {
					if seq+4*n.c.opt.CheckpointInterval < s.Seq {
						delete(n.coreSnaps, seq)
					}
				}
			}
		}
		if n.crashMidReady {
			n.crash()
			return
		}
		for _, m := range rd.Messages {
			n.c.obs.onSent(n, m.Env)
			n.c.net.sendReplica(n, m)
		}
		for _, rm := range rd.Replies {
			n.c.net.sendReply(n, rm)
		}
		for i := range rd.Committed {
			n.execute(&rd.Committed[i])
			if !n.up {
				return
			}
		}
		if rd.StateTransfer != nil {
			n.c.tracef("%s state transfer to %d (applied %d)", n.name, rd.StateTransfer.Seq, rd.StateTransfer.Applied)
			n.st = rd.StateTransfer
			n.scheduleStateTransfer()
		}
		if rd.SoftState != nil && n.c.trace != nil {
			n.c.tracef("%s %+v", n.name, *rd.SoftState)
		}
		n.rep.Advance()
	}
}

func (n *node) execute(cb *pbft.CommittedBatch) {
	n.c.obs.onCommitted(n, cb)
	var results [][]byte
	var digest wire.Digest
	if cb.AlreadyApplied {
		o, ok := n.app.history[cb.Seq]
		if !ok {
			n.c.obs.violation("%s: replay of %d the application never applied", n.name, cb.Seq)
			return
		}
		results, digest = o.results, o.digest
	} else {
		var err error
		results, digest, err = n.app.execute(cb.Seq, cb.Execute)
		if err != nil {
			n.c.obs.violation("%s: %v", n.name, err)
			return
		}
		n.c.obs.onExecuted(n, cb, results)
	}
	n.blocks[cb.Seq] = *cb
	if err := n.rep.Executed(cb.Seq, results, digest); err != nil {
		n.c.obs.violation("%s: Executed(%d): %v", n.name, cb.Seq, err)
	}
	if cb.Seq%n.c.opt.CheckpointInterval == 0 {
		n.app.keepSnapshot(4)
	}
}

// scheduleStateTransfer fetches the wanted state from a peer after a delay, by snapshot or by blocks.
func (n *node) scheduleStateTransfer() {
	if n.stBusy {
		return
	}
	n.stBusy = true
	rep := n.rep
	n.c.after(20+n.c.rng.Int64N(80), func() {
		if n.rep != rep || !n.up {
			return
		}
		n.stBusy = false
		n.doStateTransfer()
	})
}

func (n *node) doStateTransfer() {
	st := n.st
	if st == nil || n.rep.Status().Status != pbft.StatusSyncing {
		n.st = nil
		return
	}
	peers := n.c.nodes
	p := peers[n.c.rng.IntN(len(peers))]
	if t := n.c.tamperPeer(n); t != nil {
		p = t
	}
	if p.idx == n.idx || !p.up {
		n.scheduleStateTransfer()
		return
	}
	if n.c.rng.IntN(2) == 0 && n.applyBlocks(p, st) {
		n.process()
		if n.up && n.rep.Status().Status == pbft.StatusSyncing {
			n.scheduleStateTransfer()
		}
		return
	}
	seq := st.Seq
	if n.c.rng.IntN(3) == 0 {
		// A copy that took longer than a checkpoint interval: the snapshot of an older checkpoint the
		// peer still holds, above what this replica executed (the core installs any recent certified one,
		// then catches up to the stable checkpoint).
		seq = p.olderSnapshot(n.rep.Status().LastExecuted, st.Seq)
	}
	as, ok1 := p.app.snaps[seq]
	cs, ok2 := p.coreSnaps[seq]
	if !ok1 || !ok2 {
		// The peer moved on: take its newer checkpoint proof, so the next transfer aims at what it holds.
		if hs, err := pbft.DecodeHardState(p.store.hs); err == nil && hs.StableSeq > st.Seq && len(hs.StableProof) > 0 {
			if err := n.rep.LearnCheckpoint(hs.StableProof); err == nil {
				n.c.tracef("%s learned checkpoint %d from %s", n.name, hs.StableSeq, p.name)
				n.process()
			}
		}
		n.scheduleStateTransfer()
		return
	}
	appDigest, table := cs.AppDigest, cs.ClientTable
	if p.tampers() {
		appDigest, table = p.tamperSnapshot(seq, appDigest, table)
	}
	err := n.rep.CheckSnapshot(seq, appDigest, table)
	if p.tampers() {
		n.c.countSnapshot(err)
	}
	if err != nil {
		if p.correct() && !errors.Is(err, pbft.ErrStale) && !errors.Is(err, pbft.ErrNotSyncing) {
			n.c.obs.violation("%s: snapshot %d from correct %s rejected: %v", n.name, seq, p.name, err)
		}
		n.scheduleStateTransfer()
		return
	}
	n.app.restore(as)
	if err := n.rep.InstallSnapshot(seq, appDigest, table); err != nil {
		n.c.obs.violation("%s: install snapshot %d: %v", n.name, seq, err)
		return
	}
	if seq < st.Seq {
		n.c.obs.olderSnapshots++
	}
	n.c.tracef("%s installed snapshot %d (asked for %d) from %s", n.name, seq, st.Seq, p.name)
	n.c.obs.onInstalled(n, seq)
	n.st = nil
	n.process()
}

// olderSnapshot returns the oldest checkpoint in (above, below) whose state p holds (application and
// core), or below if there is none.
func (p *node) olderSnapshot(above, below uint64) uint64 {
	best := below
	for s := range p.app.snaps {
		if _, ok := p.coreSnaps[s]; ok && s > above && s < best {
			best = s
		}
	}
	return best
}

// applyBlocks catches up by committed blocks from peer p, if it has them all.
func (n *node) applyBlocks(p *node, st *pbft.StateTransfer) bool {
	from := n.app.applied + 1
	if st.Seq < from || st.Seq-from > 64 {
		return false
	}
	for seq := from; seq <= st.Seq; seq++ {
		if _, ok := p.blocks[seq]; !ok {
			return false
		}
	}
	for seq := from; seq <= st.Seq && n.up; seq++ {
		b, tampered := p.tamperedBlock(seq)
		err := n.rep.ApplyCommitted(seq, b.Batch, b.Cert)
		if tampered {
			n.c.countBlock(err)
		}
		if err != nil {
			if errors.Is(err, pbft.ErrStale) {
				continue // delivered meanwhile (the previous block let committed slots through)
			}
			if p.correct() {
				n.c.obs.violation("%s: block %d from correct %s rejected: %v", n.name, seq, p.name, err)
			}
			return true
		}
		n.process()
	}
	n.c.tracef("%s applied blocks %d..%d from %s", n.name, from, st.Seq, p.name)
	return true
}
