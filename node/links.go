package node

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/p2pbft/p2pbft/p2p"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// Client links (p2p/link.go) carry the requests of clients that hold a link to every replica, and this
// replica's answers to them. A client sends a request's first round to every replica. The primary verifies
// the signatures (in batches, off the loop) and proposes the requests, a read batch at a time. A backup
// proposes nothing in the first round: the primary's pre-prepare will bring the request, and the backup
// only remembers it (trusted) if it came on the link that the author's hello routed here: the hello, signed
// by the author's key, made the link's peer speak for that key, and the link's transport authenticates the
// peer, so the request is the author's whether or not its signature checks out, and the backup's ingress
// need not verify it when the pre-prepare carries it. The signature cost of a request thus falls on the
// primary alone in the normal case, instead of on every replica. The primary never trusts: it verifies
// every request it batches, so an honest primary's batches hold valid signatures only and no client can
// make correct backups disagree about one. Retransmissions (the client's later rounds) and requests from
// keys not routed to their link are verified and proposed by every replica (a backup forwards them to the
// primary and starts its request timer, PBFT's reaction to a client that had to retransmit).
//
// Every replica answers every request it executes whose client has a link here, whether the request came
// to this replica or only in a pre-prepare: the replies of one executed batch for the clients of one link
// go out as one bundle (pbft.EncodeReplyBundle: the signed header once, the leaves, a multiproof). A
// request the engine refuses gets a notice on its link, so that the client need not wait for its retry
// timer.

// linkBatch is one read batch of verified requests from a client link.
type linkBatch struct {
	from *p2p.ClientLink
	reqs []*wire.Envelope
}

// isPrimary reports whether this replica is, as the loop last published, the active primary.
func (n *Node) isPrimary() bool {
	ps := n.state.Load()
	return ps != nil && ps.soft.Primary == n.self && ps.soft.Status == pbft.StatusNormal
}

// handleLinkRequests is the p2p link handler (see above): it trusts or verifies the requests of one read
// batch and hands those to propose to the loop, blocking while the loop is busy (the link is then not read
// further).
func (n *Node) handleLinkRequests(from *p2p.ClientLink, lrs []p2p.LinkRequest) {
	primary := n.isPrimary()
	verify := make([]*wire.Envelope, 0, len(lrs))
	for _, lr := range lrs {
		e := lr.Envelope
		if _, err := n.checkRequest(e); err != nil {
			n.notify(from, e, err, true)
			continue
		}
		if !primary && lr.Routed && !lr.Retry {
			if k, ok := wire.SigKeyOf(e); ok {
				n.trusted.Add(k)
				n.metrics.linkTrusted.Inc()
			}
			continue
		}
		verify = append(verify, e)
	}
	if len(verify) == 0 {
		return
	}
	ok := n.host.VerifyBatch(verify)
	reqs := verify[:0]
	for i, e := range verify {
		if ok[i] {
			reqs = append(reqs, e)
		} else {
			n.notify(from, e, fmt.Errorf("node: %w: %w", ErrRequestRejected, wire.ErrBadSignature), true)
		}
	}
	if len(reqs) == 0 {
		return
	}
	select {
	case n.linkReqs <- linkBatch{from: from, reqs: reqs}:
	case <-from.Done():
	case <-n.stopped:
	}
}

// proposeLinkBatch proposes a batch of link requests (on the loop).
func (n *Node) proposeLinkBatch(lb linkBatch) {
	for _, req := range lb.reqs {
		err := n.rep.Propose(req)
		var se *pbft.StepError
		if errors.As(err, &se) && se.Reason == pbft.ReasonDuplicate {
			err = nil // pending or executing: the reply will come
		}
		n.metrics.proposed(err)
		if err != nil {
			n.notify(lb.from, req, err, pbft.FinalRefusal(err))
		}
	}
}

// notify pushes a notice that req was refused; final says every correct replica refuses it alike.
func (n *Node) notify(to *p2p.ClientLink, req *wire.Envelope, why error, final bool) {
	ts, _ := requestTimestamp(req.Payload)
	reason := why.Error()
	if len(reason) > 512 {
		reason = reason[:512]
	}
	data, err := wire.Marshal(&pbft.Notice{Client: req.Author, Timestamp: ts, Reason: strings.ToValidUTF8(reason, "?"), Final: final})
	if err != nil {
		return
	}
	to.Push(append([]byte{pbft.PushNotice}, data...))
}

// replier sends the replies of executed batches to the clients' links, off the loop: it groups each Ready's
// replies by batch and link and pushes one bundle per group.
type replier struct {
	n  *Node
	in chan []pbft.ReplyMessage
}

// run sends until in is closed.
func (r *replier) run() {
	for rs := range r.in {
		r.send(rs)
	}
}

func (r *replier) send(rs []pbft.ReplyMessage) {
	n := r.n
	start := time.Now()
	type group struct {
		link *p2p.ClientLink
		msgs []pbft.ReplyMessage
	}
	for len(rs) > 0 {
		// One run of replies of one batch (the engine emits a batch's replies together).
		k := 1
		for k < len(rs) && rs[k].SameBatch(rs[0]) {
			k++
		}
		run := rs[:k]
		rs = rs[k:]
		var groups []group
		index := map[*p2p.ClientLink]int{}
		for _, m := range run {
			l := n.host.LinkFor(m.Client)
			if l == nil {
				continue
			}
			i, ok := index[l]
			if !ok {
				i = len(groups)
				index[l] = i
				groups = append(groups, group{link: l})
			}
			groups[i].msgs = append(groups[i].msgs, m)
		}
		for _, g := range groups {
			data, err := pbft.EncodeReplyBundle(g.msgs)
			if err != nil {
				n.log.Warn("encode reply bundle", "err", err)
				continue
			}
			push := func(d []byte) {
				if g.link.Push(append([]byte{pbft.PushReplies}, d...)) {
					n.metrics.linkReplies.Add(float64(len(g.msgs)))
				}
			}
			if n.byz != nil {
				n.byz.bundle(g.msgs, data, push)
				continue
			}
			push(data)
		}
	}
	n.metrics.replySeconds.Observe(time.Since(start).Seconds())
}
