package sim

import (
	"container/heap"
	"fmt"
	"io"
	"math/rand/v2"

	"github.com/p2pbft/p2pbft/pbft"
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
	disk   *rand.Rand // draws the sync latencies under FaultAsyncPersist (persist.go), a stream of its own
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
	c.disk = rand.New(rand.NewPCG(uint64(opt.Seed), 0xd15c))
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
	c.schedulePowerCuts()
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
