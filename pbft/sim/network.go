package sim

import (
	"fmt"

	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// network carries encoded envelopes between nodes and clients with delay, loss, duplication, reordering and
// partitions. The receiving side decodes and verifies the outer signature, as the p2p layer's gossip
// validator does, before the replica sees the message.
type network struct {
	c       *Cluster
	blocked map[[2]int]bool // directed replica links that are down
	side    []int           // for twins: which twin each other replica talks to
	healed  bool
}

func newNetwork(c *Cluster) network {
	nw := network{c: c, blocked: map[[2]int]bool{}, side: make([]int, c.opt.N)}
	for i := range nw.side {
		nw.side[i] = c.rng.IntN(2)
	}
	return nw
}

// schedule plans partitions and link failures inside the fault period.
func (nw *network) schedule() {
	c := nw.c
	if c.opt.has(FaultPartition) {
		for k := 0; k < 1+c.rng.IntN(3); k++ {
			start := c.rng.Int64N(c.healAt)
			end := min(start+int64(50+c.rng.IntN(400))*tickEvery, c.healAt)
			group := make([]bool, c.opt.N)
			for i := range group {
				group[i] = c.rng.IntN(2) == 0
			}
			c.at(start, func() {
				c.tracef("partition %v", group)
				for i := range group {
					for j := range group {
						if group[i] != group[j] {
							nw.blocked[[2]int{i, j}] = true
						}
					}
				}
			})
			c.at(end, func() {
				for i := range group {
					for j := range group {
						if group[i] != group[j] {
							delete(nw.blocked, [2]int{i, j})
						}
					}
				}
			})
		}
	}
	if c.opt.has(FaultAsym) {
		for k := 0; k < 1+c.rng.IntN(4); k++ {
			i, j := c.rng.IntN(c.opt.N), c.rng.IntN(c.opt.N)
			start := c.rng.Int64N(c.healAt)
			end := min(start+int64(50+c.rng.IntN(400))*tickEvery, c.healAt)
			c.at(start, func() { c.tracef("link %d->%d down", i, j); nw.blocked[[2]int{i, j}] = true })
			c.at(end, func() { delete(nw.blocked, [2]int{i, j}) })
		}
	}
	if c.opt.Byzantine != nil {
		for i, b := range c.opt.Byzantine {
			if b == FaultTwins {
				// The twins' split changes a few times.
				for k := 0; k < 3; k++ {
					c.at(c.rng.Int64N(c.healAt+1), func() {
						for j := range nw.side {
							nw.side[j] = c.rng.IntN(2)
						}
						c.tracef("twins of %d: new split %v", i, nw.side)
					})
				}
			}
		}
	}
}

func (nw *network) healAll() {
	nw.healed = true
	clear(nw.blocked)
}

// delay returns a message delay: short normally, sometimes long (reordering) during the fault period.
func (nw *network) delay() int64 {
	c := nw.c
	if c.slow.active {
		return c.slow.delay()
	}
	d := 1 + c.rng.Int64N(baseDelay)
	if !nw.healed && c.opt.has(FaultDelay) && c.rng.IntN(10) == 0 {
		d += c.rng.Int64N(20 * baseDelay)
	}
	return d
}

// faulty decides whether one transmission is lost, and how many copies arrive.
func (nw *network) copies() int {
	c := nw.c
	if nw.healed {
		return 1
	}
	if c.opt.Loss > 0 && c.rng.Float64() < c.opt.Loss {
		return 0
	}
	if c.opt.Dup > 0 && c.rng.Float64() < c.opt.Dup {
		return 2
	}
	return 1
}

// recipients returns the nodes that a message from src to replica j reaches (twins split the network).
func (nw *network) recipients(src *node, j int) []*node {
	if src != nil && len(nw.c.byIdx[src.idx]) == 2 && nw.side[j] != src.twin {
		return nil
	}
	nodes := nw.c.byIdx[j]
	if len(nodes) == 2 && src != nil {
		return nodes[nw.side[src.idx] : nw.side[src.idx]+1]
	}
	return nodes
}

// sendReplica sends a replica's outbound message, after the Byzantine behaviour (if any) had its way.
func (nw *network) sendReplica(src *node, m pbft.Message) {
	nw.c.split.onSend(src, m.Env)
	msgs := []pbft.Message{m}
	if src.byz != nil {
		msgs = src.byz.transform(m)
	}
	for _, m := range msgs {
		data, err := m.Env.Marshal()
		if err != nil {
			nw.c.obs.violation("%s: encode %s: %v", src.name, m.Env.Kind, err)
			continue
		}
		targets := []int{m.To}
		if m.To == pbft.Broadcast {
			targets = targets[:0]
			for j := 0; j < nw.c.opt.N; j++ {
				if j != src.idx {
					targets = append(targets, j)
				}
			}
		}
		cut := nw.c.split.cut(src, m.Env)
		for _, j := range targets {
			if !nw.healed && (nw.blocked[[2]int{src.idx, j}] || cut != nil && cut(j)) {
				continue
			}
			for _, dst := range nw.recipients(src, j) {
				for k := nw.copies(); k > 0; k-- {
					dst := dst
					nw.c.after(nw.delay(), func() { dst.receive(data) })
				}
			}
		}
	}
}

// receive decodes and validates an envelope, then steps the replica.
func (n *node) receive(data []byte) {
	if !n.up {
		return
	}
	e, err := wire.DecodeEnvelope(data)
	if err != nil {
		n.c.obs.dropped("undecodable")
		return
	}
	if err := n.c.reg.Verify(e); err != nil {
		n.c.obs.dropped("bad outer signature")
		return
	}
	if n.byz != nil {
		n.byz.observe(e)
	}
	// Like the node's ingress: a pre-prepare's requests decoded and verified beside the engine are handed
	// to it with the envelope (StepPrePrepare); a body that fails goes in plainly, for the engine to judge.
	if e.Kind == wire.KindPrePrepare && len(e.Body) > 0 && n.c.opt.DriverDecodes {
		if reqs, err := pbft.DecodeBatch(e.Body); err == nil && len(reqs) > 0 && n.c.reg.VerifyBatch(reqs) == nil {
			_ = n.rep.StepPrePrepare(e, reqs)
			n.process()
			return
		}
	}
	n.c.onStep(e, n.rep.Step(e))
	n.process()
}

// sendReply sends a reply to its client.
func (nw *network) sendReply(src *node, rm pbft.ReplyMessage) {
	env, err := rm.Envelope()
	if err != nil {
		nw.c.obs.violation("%s: reply envelope: %v", src.name, err)
		return
	}
	if src.byz != nil && (src.byz.kind == FaultForge || src.byz.kind == FaultEquivocate) {
		if bad := src.byz.badReply(env); bad != nil {
			env = bad
			nw.c.obs.forgedReplies++
		}
	}
	cl := nw.c.clientByKey(rm.Client)
	if cl == nil {
		nw.c.obs.violation("%s: reply to unknown client %x", src.name, rm.Client[:4])
		return
	}
	data, err := env.Marshal()
	if err != nil {
		return
	}
	for k := nw.copies(); k > 0; k-- {
		nw.c.after(nw.delay(), func() { cl.receive(data) })
	}
}

// sendRequest sends a client request to replica j (its node API, which calls Propose).
func (nw *network) sendRequest(cl *client, j int, data []byte) {
	for _, dst := range nw.recipients(nil, j) {
		for k := nw.copies(); k > 0; k-- {
			dst := dst
			nw.c.after(nw.delay(), func() {
				if !dst.up {
					return
				}
				e, err := wire.DecodeEnvelope(data)
				if err != nil {
					panic(fmt.Sprintf("client request does not decode: %v", err))
				}
				_ = dst.rep.Propose(e)
				dst.process()
			})
		}
	}
}
