package sim

import (
	"bytes"
	"fmt"

	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
	"github.com/p2pbft/p2pbft/wire/wiretest"
)

// clientTimeout is how long a client waits for f+1 matching replies before it sends its request to every
// replica (and again after each further timeout).
const clientTimeout = 25 * tickEvery

// client issues requests one at a time: first to the replica it believes is the primary, then, on timeout,
// to all. It accepts a result once f+1 replicas agree (pbft.ReplyCollector).
type client struct {
	c         *Cluster
	id        int
	key       *wiretest.Key
	pub       []byte
	ts        uint64
	done      int
	waiting   bool
	data      []byte
	coll      *pbft.ReplyCollector
	gen       int
	sentAt    int64
	acceptedT []int64
}

func newClient(c *Cluster, id int) *client {
	k := wiretest.NewKey(fmt.Sprintf("client-%d", id))
	c.reg.Add(k)
	cl := &client{c: c, id: id, key: k, pub: k.PublicKey()}
	cl.coll = pbft.NewReplyCollector(chainID, c.pubs, c.reg, cl.pub)
	return cl
}

func (c *Cluster) clientByKey(k []byte) *client {
	for _, cl := range c.clients {
		if bytes.Equal(cl.pub, k) {
			return cl
		}
	}
	return nil
}

func (cl *client) start() {
	cl.c.after(1+cl.c.rng.Int64N(5*tickEvery), cl.issue)
}

func (cl *client) issue() {
	cl.ts++
	op := []byte(fmt.Sprintf("k%d", cl.c.rng.IntN(4)))
	e, err := pbft.NewRequest(cl.key, chainID, cl.ts, op)
	if err != nil {
		panic(err)
	}
	cl.data, _ = e.Marshal()
	cl.coll.Await(cl.ts)
	cl.waiting = true
	cl.sentAt = cl.c.now
	cl.c.obs.onIssued(cl, cl.ts, op)
	cl.c.net.sendRequest(cl, int(cl.coll.View%uint64(cl.c.opt.N)), cl.data)
	cl.armTimer()
}

func (cl *client) armTimer() {
	cl.gen++
	gen := cl.gen
	cl.c.after(cl.c.slow.clientTimeout(), func() {
		if gen != cl.gen || !cl.waiting {
			return
		}
		for j := 0; j < cl.c.opt.N; j++ {
			cl.c.net.sendRequest(cl, j, cl.data)
		}
		cl.armTimer()
	})
}

func (cl *client) receive(data []byte) {
	e, err := wire.DecodeEnvelope(data)
	if err != nil {
		cl.c.obs.violation("client %d: undecodable reply: %v", cl.id, err)
		return
	}
	if !cl.waiting {
		return
	}
	r, err := cl.coll.Add(e)
	if err != nil || r == nil {
		return
	}
	cl.waiting = false
	cl.gen++
	cl.c.obs.onAccepted(cl, r)
	cl.done++
	if cl.done < cl.c.opt.RequestsPerClient && !cl.c.slow.hold(cl) {
		cl.c.after(1+cl.c.rng.Int64N(3*tickEvery), cl.issue)
	}
}

func (cl *client) finished() bool { return cl.done >= cl.c.opt.RequestsPerClient }
