package sim

import (
	"math/rand/v2"
	"slices"
)

// The slow fault. The other network faults end at the heal, after which messages take 1..baseDelay units,
// far below the replicas' timeouts: an engine whose view-change timeout never grows (no backoff) passes
// them all. A slow run keeps the network slow after the heal instead: every message (between replicas, and
// between clients and replicas) takes 1.5 to 3 times the base view-change timeout, until a correct replica
// executes a request that no correct replica had executed before. The run then requires that progress
// within slowBound of the heal, which an engine with the backoff meets and one with a fixed timeout never
// does: committing a batch takes three message delays after a view starts (pre-prepare, prepare, commit),
// and a NEW-VIEW one more after the VIEW-CHANGEs, each longer than the base timeout, so a replica whose
// timeout stays at the base abandons every view before anything commits in it, forever. Progress counts
// only for a request issued after the heal: one issued before may still commit on messages sent while the
// network was fast. Once the progress is made the network is fast again, so that the run ends under the
// usual liveness check.

// slowOneIn: one seed in slowOneIn that allows the slow fault gets it. A slow run spends over a thousand
// ticks ramping the timeouts up, more than the rest of an average run, and the CPU that goes with them; one
// seed in twenty (56 in the CI budget, 7 under the race detector) is enough to catch an engine without the
// backoff, which fails every slow seed, and keeps `go test ./pbft/sim` within a few percent of its time.
const slowOneIn = 20

// planSlow draws the slow fault, from a stream of its own so that the draws of Plan, and every seed
// recorded before the fault existed, replay as they did.
func planSlow(o *Options, allowed []Fault) {
	if slices.Contains(allowed, FaultSlow) && rand.New(rand.NewPCG(uint64(o.Seed), 0x510e)).IntN(slowOneIn) == 0 {
		o.Faults = append(o.Faults, FaultSlow)
	}
}

// slowPhase is the state of the slow fault in one run.
type slowPhase struct {
	rng    *rand.Rand // a stream of its own: the cluster's draws stay as they were until the heal
	on     bool       // the run has the slow fault
	active bool       // the network is slow now
	begun  bool       // the heal happened
	base   int64      // the base view-change timeout, in time units
	lo, hi int64      // the range of message delays while slow, in time units
	bound  int64      // how long after the heal the first progress may take, in time units
	start  int64
	held   []*client
	issued map[clientTS]bool // the requests issued while slow
	// progress is how long after the heal the first progress came (-1: none yet).
	progress int64
}

func newSlowPhase(c *Cluster) slowPhase {
	s := slowPhase{on: c.opt.has(FaultSlow), progress: -1}
	if !s.on {
		return s
	}
	s.rng = rand.New(rand.NewPCG(uint64(c.opt.Seed), 0x510e2))
	s.issued = map[clientTS]bool{}
	return s
}

// slowBound is how long after the heal a correct engine may take to execute a new request when every
// message takes up to hop time units and the base timeouts are base. The engine doubles both timeouts
// (request and NEW-VIEW) with every view change that made no progress, up to base << maxBackoff, and goes
// back to the base on progress (pbft.Replica.timeout). A view in which a batch commits needs the NEW-VIEW to
// arrive within the NEW-VIEW timer (one hop) and then the pre-prepare, the prepares and the commits (three
// hops) within the request timer: at most 3 hops = 9 bases, so once the timeout reaches 16 bases (backoff 4,
// the simulator's MaxBackoff) every view with a correct primary commits. Getting there costs at most one
// failed view per doubling, each its timeout plus the VIEW-CHANGE and NEW-VIEW hops and a retransmission
// (3 hops); then up to f views with a Byzantine primary at the top timeout, and the successful view's
// 4 hops. The bound is twice that sum. Without backoff the timeout stays at one base, below a single hop,
// and no view ever commits: such an engine misses any bound.
func slowBound(base, hop int64, maxBackoff int) int64 {
	var ramp int64
	for k := 0; k <= maxBackoff; k++ {
		ramp += base<<k + 3*hop
	}
	top := base<<maxBackoff + 3*hop
	return 2 * (ramp + 2*top + 4*hop)
}

// delay returns the delay of a message while the network is slow.
func (s *slowPhase) delay() int64 { return s.lo + s.rng.Int64N(s.hi-s.lo+1) }

// hold keeps a client's last request until the heal, so that a slow run has requests to commit while the
// network is slow (clients usually finish during the fault period).
func (s *slowPhase) hold(cl *client) bool {
	if !s.on || s.begun || cl.done < cl.c.opt.RequestsPerClient-1 {
		return false
	}
	s.held = append(s.held, cl)
	return true
}

// beginSlow starts the slow phase at the heal: clients issue their held requests, and the bound is armed.
func (c *Cluster) beginSlow() {
	s := &c.slow
	if !s.on {
		return
	}
	s.begun, s.active, s.start = true, true, c.now
	// From the configuration as the replicas have it (tests may change it after NewCluster).
	cfg := c.config(0)
	s.base = int64(max(cfg.RequestTimeout, cfg.NewViewTimeout)) * tickEvery
	s.lo, s.hi = s.base*3/2, 3*s.base
	s.bound = slowBound(s.base, s.hi, cfg.MaxBackoff)
	c.tracef("slow network: messages take %d..%d units until a new request executes (bound %d ticks)", s.lo, s.hi, s.bound/tickEvery)
	for _, n := range c.nodes {
		n.slowRetransmit()
	}
	for _, cl := range s.held {
		c.after(1+s.rng.Int64N(3*tickEvery), cl.issue)
	}
	s.held = nil
	c.at(c.now+s.bound, func() {
		if s.active {
			c.obs.violation("liveness (slow network): no new request executed within %d ticks of the heal, with every message taking %d..%d ticks (base view-change timeout %d ticks)",
				s.bound/tickEvery, s.lo/tickEvery, s.hi/tickEvery, s.base/tickEvery)
		}
	})
}

// onIssued records a request a client issues.
func (s *slowPhase) onIssued(k clientTS) {
	if s.active {
		s.issued[k] = true
	}
}

// onFresh is called when a correct replica executes request k, which no correct replica executed before.
func (s *slowPhase) onFresh(c *Cluster, k clientTS) {
	if !s.active || !s.issued[k] {
		return
	}
	s.active = false
	s.progress = c.now - s.start
	c.tracef("slow network: progress %d ticks after the heal; the network is fast again", s.progress/tickEvery)
	for _, n := range c.nodes {
		n.slowRetransmit()
	}
}

// roundTrip is the longest round trip while the network is slow, in time units.
func (s *slowPhase) roundTrip() int64 { return 2 * s.hi }

// slowRetransmit sets the replica's retransmission timeout as its node would: above the round trips it
// measures while the network is slow (pbft.Replica.SetRetransmitTimeout), back to the configured one after.
// A replica that retransmitted every few ticks into a network that takes a hundred to deliver would flood
// it, and the simulator with it.
func (n *node) slowRetransmit() {
	if !n.up || n.rep == nil || !n.c.slow.on {
		return
	}
	rt := n.c.config(n.idx).RetransmitTimeout
	if n.c.slow.active {
		rt = max(rt, int(n.c.slow.roundTrip()/tickEvery)+1)
	}
	n.rep.SetRetransmitTimeout(rt)
}

// clientTimeout is how long a client waits before sending its request to every replica again: above the
// round trip while the network is slow, like the replicas' retransmissions.
func (s *slowPhase) clientTimeout() int64 {
	if s.active {
		return max(clientTimeout, s.roundTrip()+tickEvery)
	}
	return clientTimeout
}
