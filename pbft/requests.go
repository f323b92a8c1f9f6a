package pbft

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/p2pbft/p2pbft/wire"
)

// Client requests: ingress checks, the pending set, forwarding and the request timer (docs/design/pbft.md rows 1, 7, 12).

type pendingReq struct {
	req      *request
	order    uint64
	arrived  uint64
	queued   bool // in the primary's queue (not assigned to a batch of the current view)
	assigned bool
}

// pendingSet holds the requests a replica knows that have not executed: at most one per client (the newest).
// queue is the primary's FIFO of unassigned requests; all is every pending request in arrival order (for the
// request timer). Both delete lazily.
type pendingSet struct {
	byID     map[wire.Digest]*pendingReq
	byClient map[string]*pendingReq
	queue    []*pendingReq
	qhead    int
	qlen     int
	qbytes   int
	all      []*pendingReq
	ahead    int
	order    uint64
}

func newPendingSet() *pendingSet {
	return &pendingSet{byID: make(map[wire.Digest]*pendingReq), byClient: make(map[string]*pendingReq)}
}

func (p *pendingSet) len() int { return len(p.byID) }

func (p *pendingSet) add(req *request, now uint64) *pendingReq {
	if old := p.byClient[req.client]; old != nil {
		p.remove(old)
	}
	p.order++
	pr := &pendingReq{req: req, order: p.order, arrived: now}
	p.byID[req.id] = pr
	p.byClient[req.client] = pr
	p.all = append(p.all, pr)
	p.enqueue(pr)
	return pr
}

func (p *pendingSet) enqueue(pr *pendingReq) {
	if pr.queued {
		return
	}
	pr.queued = true
	pr.assigned = false
	p.queue = append(p.queue, pr)
	p.qlen++
	p.qbytes += pr.req.size
}

func (p *pendingSet) dequeue(pr *pendingReq) {
	if pr.queued {
		pr.queued = false
		p.qlen--
		p.qbytes -= pr.req.size
	}
}

func (p *pendingSet) remove(pr *pendingReq) {
	if p.byID[pr.req.id] != pr {
		return
	}
	delete(p.byID, pr.req.id)
	if p.byClient[pr.req.client] == pr {
		delete(p.byClient, pr.req.client)
	}
	p.dequeue(pr)
	p.compact()
}

// removeExecuted drops the client's pending request if its timestamp is at most ts; it reports whether the
// dropped request was `target`.
func (p *pendingSet) removeExecuted(client string, ts uint64) (removed *pendingReq) {
	pr := p.byClient[client]
	if pr == nil || pr.req.ts > ts {
		return nil
	}
	p.remove(pr)
	return pr
}

// compact drops deleted entries from the two FIFOs once they make up most of them, so that a request that
// stays pending at the head cannot make them grow without bound.
func (p *pendingSet) compact() {
	if len(p.queue)-p.qhead > 2*p.qlen+64 {
		kept := make([]*pendingReq, 0, p.qlen)
		for _, pr := range p.queue[p.qhead:] {
			if pr != nil && pr.queued && p.byID[pr.req.id] == pr {
				kept = append(kept, pr)
			}
		}
		p.queue, p.qhead = kept, 0
	}
	if len(p.all)-p.ahead > 2*len(p.byID)+64 {
		kept := make([]*pendingReq, 0, len(p.byID))
		for _, pr := range p.all[p.ahead:] {
			if pr != nil && p.byID[pr.req.id] == pr {
				kept = append(kept, pr)
			}
		}
		p.all, p.ahead = kept, 0
	}
}

// front returns the oldest queued request, skipping deleted entries.
func (p *pendingSet) front() *pendingReq {
	for p.qhead < len(p.queue) {
		pr := p.queue[p.qhead]
		if pr.queued && p.byID[pr.req.id] == pr {
			return pr
		}
		p.queue[p.qhead] = nil
		p.qhead++
	}
	p.queue = p.queue[:0]
	p.qhead = 0
	return nil
}

// oldest returns the oldest pending request.
func (p *pendingSet) oldest() *pendingReq {
	for p.ahead < len(p.all) {
		pr := p.all[p.ahead]
		if p.byID[pr.req.id] == pr {
			return pr
		}
		p.all[p.ahead] = nil
		p.ahead++
	}
	p.all = p.all[:0]
	p.ahead = 0
	return nil
}

// requeueAll puts every pending request back into the queue in arrival order, except those in skip.
func (p *pendingSet) requeueAll(skip map[wire.Digest]bool) {
	for _, pr := range p.queue[p.qhead:] {
		if pr != nil {
			p.dequeue(pr)
		}
	}
	p.queue = p.queue[:0]
	p.qhead = 0
	for _, pr := range p.all[p.ahead:] {
		if pr == nil || p.byID[pr.req.id] != pr {
			continue
		}
		if skip[pr.req.id] {
			pr.assigned = true
			continue
		}
		p.enqueue(pr)
	}
}

// RequestSize is the size of a request envelope that Config.MaxRequestBytes bounds (a client checks it
// before sending).
func RequestSize(e *wire.Envelope) int { return requestSize(e) }

// requestSize estimates the encoded size of a request envelope inside a batch.
func requestSize(e *wire.Envelope) int {
	return len(e.Payload) + len(e.ChainID) + len(e.Author) + len(e.Sig) + 16
}

// checkRequest checks a client request envelope's form and returns its parsed form (the pending one if this
// replica holds the same request). It does not check the signature.
func (r *Replica) checkRequest(e *wire.Envelope) (*request, error) {
	if e.Kind != wire.KindRequest || e.ChainID != r.cfg.ChainID {
		return nil, errors.New("not a request of this chain")
	}
	size := requestSize(e)
	if size > r.cfg.MaxRequestBytes {
		return nil, fmt.Errorf("request of %d bytes exceeds %d", size, r.cfg.MaxRequestBytes)
	}
	p, err := DecodeRequest(e.Payload)
	if err != nil {
		return nil, err
	}
	id := e.ID()
	if pr := r.pending.byID[id]; pr != nil && bytes.Equal(pr.req.env.Sig, e.Sig) {
		return pr.req, nil
	}
	return &request{env: e, id: id, client: string(e.Author), ts: p.Timestamp, op: p.Op, size: size}, nil
}

// verifiedRequest reports whether a request's signature is known to be valid: pending requests were
// verified when they arrived (by the driver or by Propose), others may be in the verified cache.
func (r *Replica) verifiedRequest(q *request) bool {
	if pr := r.pending.byID[q.id]; pr != nil && pr.req == q {
		return true
	}
	return r.vcache.HasEnvelope(q.env)
}

// stepRequest handles a client request from the network (driverVerified) or from Propose.
func (r *Replica) stepRequest(e *wire.Envelope, driverVerified, fromClient bool) error {
	req, err := r.checkRequest(e)
	if err != nil {
		return r.reject(wire.KindRequest, ReasonMalformed, err)
	}
	if !driverVerified && !r.verifiedRequest(req) {
		// Pending requests remember that they were verified; no need for the cache.
		if err := r.verify([]*wire.Envelope{e}, false); err != nil {
			return r.reject(wire.KindRequest, ReasonBadSignature, err)
		}
	}
	err = r.onRequest(req, fromClient)
	r.afterInput()
	return err
}

func (r *Replica) onRequest(req *request, fromClient bool) error {
	if ce := r.clients.get(req.client); ce != nil {
		switch ClassifyRequest(req.ts, ce.execTS) {
		case RequestStale:
			return r.reject(wire.KindRequest, ReasonStaleRequest, nil)
		case RequestRepeat:
			r.replyFromCache(req.client, ce)
			return nil
		}
		if ClassifyRequest(req.ts, ce.delivTS) != RequestNew {
			return r.reject(wire.KindRequest, ReasonDuplicate, errors.New("being executed"))
		}
	}
	if pr := r.pending.byID[req.id]; pr != nil {
		if fromClient && !r.isPrimary() && r.active {
			// The client retransmitted: the primary may not have it.
			r.send(r.primaryOf(r.view), req.env)
		}
		return r.reject(wire.KindRequest, ReasonDuplicate, nil)
	}
	if pr := r.pending.byClient[req.client]; pr != nil && pr.req.ts >= req.ts {
		return r.reject(wire.KindRequest, ReasonStaleRequest, errors.New("older than the pending one"))
	}
	if r.pending.len() >= r.cfg.MaxPendingRequests {
		return r.reject(wire.KindRequest, ReasonPendingFull, nil)
	}
	pr := r.pending.add(req, r.now)
	if !r.isPrimary() || !r.active {
		r.pending.dequeue(pr)
	}
	r.startRequestTimer()
	if fromClient && !r.isPrimary() && r.active {
		r.send(r.primaryOf(r.view), req.env)
	}
	return nil
}

// learnRequests adds the requests of an accepted batch to the pending set (a backup then waits for them to
// execute, and its timer covers them) and marks them assigned.
func (r *Replica) learnRequests(b *batch) {
	for _, req := range b.reqs {
		if pr := r.pending.byID[req.id]; pr != nil {
			r.pending.dequeue(pr)
			pr.assigned = true
			continue
		}
		if ce := r.clients.get(req.client); ce != nil && ClassifyRequest(req.ts, ce.delivTS) != RequestNew {
			continue
		}
		if pr := r.pending.byClient[req.client]; pr != nil && pr.req.ts >= req.ts {
			continue
		}
		if r.pending.len() >= r.cfg.MaxPendingRequests {
			return
		}
		pr := r.pending.add(req, r.now)
		r.pending.dequeue(pr)
		pr.assigned = true
	}
	r.startRequestTimer()
}

// replyFromCache answers a repeated request with the cached result of its execution.
func (r *Replica) replyFromCache(client string, ce *clientEntry) {
	if ce.reply == nil {
		b, err := newReplyBatch(r.cfg.Signer, r.cfg.ChainID, r.view, ce.seq, r.id, [][]byte{[]byte(client)},
			[]uint64{ce.execTS}, [][]byte{ce.result})
		if err != nil {
			r.stats.count(ReasonSignFailed)
			return
		}
		e, err := (ReplyMessage{batch: b}).Envelope()
		if err != nil {
			return
		}
		ce.reply = e
	}
	b := &replyBatch{header: ce.reply, levels: [][]wire.Digest{{}}, clients: [][]byte{[]byte(client)},
		stamps: []uint64{ce.execTS}, results: [][]byte{ce.result}}
	r.out.Replies = append(r.out.Replies, ReplyMessage{Client: []byte(client), Timestamp: ce.execTS, batch: b})
}

// The request timer (docs/design/pbft.md row 12) runs while a known request waits to execute. It watches one request,
// the oldest pending one when it starts; it stops when that request executes and restarts for the next
// oldest if any is left. Only execution resets it, never other traffic. On expiry the replica starts a view
// change.

func (r *Replica) startRequestTimer() {
	if r.reqTimer.running || !r.active {
		return
	}
	pr := r.pending.oldest()
	if pr == nil {
		return
	}
	r.reqTimer = requestTimer{running: true, deadline: r.now + r.timeout(r.cfg.RequestTimeout), target: pr.req.id}
}

func (r *Replica) stopRequestTimer() { r.reqTimer.running = false }

// requestExecuted updates the timer after request id left the pending set.
func (r *Replica) requestExecuted(id wire.Digest) {
	if r.reqTimer.running && r.reqTimer.target == id {
		r.reqTimer.running = false
		r.startRequestTimer()
	}
}
