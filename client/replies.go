package client

import (
	"bytes"
	"sync"

	"github.com/p2pbft/p2pbft/pbft"
)

// onPush handles what replica r pushed on a link: a reply bundle or a notice. It runs on the link's reader.
func (c *Client) onPush(r int, data []byte) {
	if len(data) == 0 {
		return
	}
	switch data[0] {
	case pbft.PushReplies:
		c.onBundle(r, data[1:])
	case pbft.PushNotice:
		nt, err := pbft.DecodeNotice(data[1:])
		if err != nil {
			c.metrics.badReplies.Add(1)
			return
		}
		if cl := c.callFor(nt.Client, nt.Timestamp); cl != nil {
			c.log.Debug("replica refused a request", "replica", r, "timestamp", nt.Timestamp, "reason", nt.Reason)
			select {
			case cl.refused <- refusal{replica: r, reason: nt.Reason, final: nt.Final}:
			default:
			}
		}
	default:
		c.metrics.badReplies.Add(1)
	}
}

// callFor returns the call in flight for a session key and timestamp, or nil.
func (c *Client) callFor(key []byte, ts uint64) *call {
	si, ok := c.keyIndex[string(key)]
	if !ok {
		return nil
	}
	cl := c.calls[si].Load()
	if cl == nil || cl.ts != ts {
		return nil
	}
	return cl
}

// onBundle checks a reply bundle from replica r: the header's signature (once per batch and replica, then
// cached), and the proof of each reply the client still waits for.
func (c *Client) onBundle(r int, data []byte) {
	b, err := pbft.DecodeReplyBundle(data)
	if err != nil {
		c.metrics.badReplies.Add(1)
		c.log.Debug("malformed reply bundle", "replica", r, "err", err)
		return
	}
	if b.Envelope.ChainID != c.chainID || !bytes.Equal(b.Envelope.Author, c.pubs[r]) || int(b.Header.Replica) != r {
		c.metrics.badReplies.Add(1)
		c.log.Debug("reply bundle not signed by the replica it came from", "replica", r)
		return
	}
	// Only a bundle with a reply the client still waits for is worth its checks: the replies of the
	// replicas beyond the first f+1 usually find their calls done.
	wanted := make([]*call, len(b.Leaves))
	any := false
	for i := range b.Leaves {
		l := &b.Leaves[i]
		if cl := c.callFor(l.Client, l.Timestamp); cl != nil && !cl.answered(r) {
			wanted[i], any = cl, true
		}
	}
	if !any {
		return
	}
	if err := c.headers.Verify(b.Envelope); err != nil {
		c.metrics.badReplies.Add(1)
		c.log.Warn("reply bundle with a bad signature", "replica", r, "err", err)
		return
	}
	if err := b.Verify(); err != nil {
		c.metrics.badReplies.Add(1)
		c.log.Warn("reply bundle rejected", "replica", r, "err", err)
		return
	}
	for i, cl := range wanted {
		if cl != nil {
			cl.offer(r, b.Reply(i), c.quorum.Weak())
		}
	}
}

// refusal is a replica's notice that it refused a request.
type refusal struct {
	replica int
	reason  string
	final   bool // every correct replica refuses it alike (pbft.Notice.Final)
}

// call is one request in flight: the replies counted so far.
type call struct {
	ts      uint64
	done    chan struct{} // closed once f+1 replicas sent matching replies
	refused chan refusal  // replicas that refused the request (notices)

	mu      sync.Mutex
	replies []*pbft.Reply // per replica
	result  *pbft.Reply
}

func newCall(ts uint64, n int) *call {
	return &call{ts: ts, done: make(chan struct{}), refused: make(chan refusal, 4*n), replies: make([]*pbft.Reply, n)}
}

// answered reports whether replica r's reply is in.
func (cl *call) answered(r int) bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.replies[r] != nil
}

// offer counts replica r's verified reply; the call is done once quorum replies match.
func (cl *call) offer(r int, rep *pbft.Reply, quorum int) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.replies[r] != nil || cl.result != nil {
		return
	}
	cl.replies[r] = rep
	n := 0
	for _, o := range cl.replies {
		if o != nil && bytes.Equal(o.Result, rep.Result) {
			n++
		}
	}
	if n >= quorum {
		cl.result = rep
		close(cl.done)
	}
}
