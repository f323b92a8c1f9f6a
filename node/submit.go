package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/p2pbft/p2pbft/node/statesync"
	"github.com/p2pbft/p2pbft/p2p"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// Client requests. A request reaches the node from a client over the p2p request protocol (handleRequest)
// or from the node's own API (Submit, SubmitAsync). Either way its signature is checked off the event loop
// (by the p2p host's verifier, or here on the verifier pool), then the loop proposes it to the engine (a
// backup forwards it to the primary), and the caller waits until this replica executed it and signed its
// reply. A request that repeats one the replica executed (same client and timestamp) gets the cached reply.

// ErrRequestRejected wraps the engine's reason for refusing a request (stale timestamp, malformed, pending
// set full, ...).
var ErrRequestRejected = errors.New("request rejected")

type proposal struct {
	env *wire.Envelope
	res chan error
}

type waitKey struct {
	client string
	ts     uint64
}

type waiter struct {
	ch    chan *wire.Envelope
	start time.Time
}

// waiterTable holds the callers waiting for the replies of their requests.
type waiterTable struct {
	mu sync.Mutex
	m  map[waitKey][]*waiter
}

func (t *waiterTable) add(k waitKey) *waiter {
	w := &waiter{ch: make(chan *wire.Envelope, 1), start: time.Now()}
	t.mu.Lock()
	t.m[k] = append(t.m[k], w)
	t.mu.Unlock()
	return w
}

func (t *waiterTable) remove(k waitKey, w *waiter) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ws := t.m[k]
	for i, x := range ws {
		if x == w {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(t.m, k)
	} else {
		t.m[k] = ws
	}
}

func (t *waiterTable) take(k waitKey) []*waiter {
	t.mu.Lock()
	defer t.mu.Unlock()
	ws := t.m[k]
	if ws != nil {
		delete(t.m, k)
	}
	return ws
}

// reply hands a reply the engine produced to the callers waiting for it. Replies nobody here waits for (the
// client talks to other replicas, or gave up) are not built at all.
func (n *Node) reply(r pbft.ReplyMessage) {
	ws := n.waiters.take(waitKey{string(r.Client), r.Timestamp})
	if len(ws) == 0 {
		return
	}
	env, err := r.Envelope()
	if err != nil {
		n.log.Warn("build reply", "err", err)
		return
	}
	deliver := func(env *wire.Envelope) {
		now := time.Now()
		for _, w := range ws {
			n.metrics.latency.Observe(now.Sub(w.start).Seconds())
			w.ch <- env
		}
	}
	if n.byz != nil {
		if env = n.byz.reply(r, env, deliver); env == nil {
			return
		}
	}
	deliver(env)
}

// propose hands a request to the engine (on the loop) and reports whether it was accepted.
func (n *Node) propose(p *proposal) {
	err := n.rep.Propose(p.env)
	var se *pbft.StepError
	if errors.As(err, &se) && se.Reason == pbft.ReasonDuplicate {
		// Already pending, or being executed: the reply will come.
		err = nil
	}
	n.metrics.proposed(err)
	if err != nil {
		err = fmt.Errorf("node: %w: %w", ErrRequestRejected, err)
	}
	p.res <- err
}

// checkRequest checks what can be checked of a request envelope without the engine (its shape, kind and
// chain) and reads its timestamp, which names the reply to wait for. The engine decodes and checks the
// whole payload when the request is proposed; a request it refuses fails Submit then.
func (n *Node) checkRequest(req *wire.Envelope) (waitKey, error) {
	if req == nil {
		return waitKey{}, errors.New("node: nil request")
	}
	if err := req.CheckShape(); err != nil {
		return waitKey{}, fmt.Errorf("node: %w: %w", ErrRequestRejected, err)
	}
	if req.Kind != wire.KindRequest {
		return waitKey{}, fmt.Errorf("node: %w: a %s envelope is not a request", ErrRequestRejected, req.Kind)
	}
	if req.ChainID != n.chainID {
		return waitKey{}, fmt.Errorf("node: %w: request for chain %q, this node runs %q", ErrRequestRejected, req.ChainID, n.chainID)
	}
	ts, ok := requestTimestamp(req.Payload)
	if !ok {
		return waitKey{}, fmt.Errorf("node: %w: payload is not a request", ErrRequestRejected)
	}
	return waitKey{string(req.Author), ts}, nil
}

// requestTimestamp reads the timestamp of an encoded pbft.Request (a CBOR array of two items whose first
// is the timestamp, an unsigned integer in its shortest form) without decoding the rest: a full decode
// costs microseconds, and the engine does one anyway. It returns false for anything else.
func requestTimestamp(p []byte) (uint64, bool) {
	if len(p) < 2 || p[0] != 0x82 || p[1]>>5 != 0 {
		return 0, false
	}
	info := p[1] & 0x1f
	var ts uint64
	switch {
	case info < 24:
		ts = uint64(info)
	case info == 24 && len(p) >= 3:
		ts = uint64(p[2])
	case info == 25 && len(p) >= 4:
		ts = uint64(binary.BigEndian.Uint16(p[2:]))
	case info == 26 && len(p) >= 6:
		ts = uint64(binary.BigEndian.Uint32(p[2:]))
	case info == 27 && len(p) >= 10:
		ts = binary.BigEndian.Uint64(p[2:])
	default:
		return 0, false
	}
	return ts, ts > 0
}

// verifyRequest checks a request's signature on the verifier pool (a cache hit if it was seen before).
func (n *Node) verifyRequest(req *wire.Envelope) error {
	if err := n.pool.Verify(req); err != nil {
		if errors.Is(err, errVerifierClosed) {
			return ErrStopped
		}
		return fmt.Errorf("node: %w: %w", ErrRequestRejected, err)
	}
	return nil
}

// enqueue hands a request to the loop and waits for the engine's verdict.
func (n *Node) enqueue(ctx context.Context, req *wire.Envelope) error {
	p := &proposal{env: req, res: make(chan error, 1)}
	select {
	case n.proposals <- p:
	case <-ctx.Done():
		return ctx.Err()
	case <-n.stopped:
		return ErrStopped
	}
	select {
	case err := <-p.res:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-n.stopped:
		return ErrStopped
	}
}

// Submit orders a signed client request (a KindRequest envelope) and waits until this replica executed it:
// it verifies the signature, proposes the request (a backup forwards it to the primary) and returns this
// replica's signed KindReply. A repeat of an executed request returns the cached reply. One reply proves
// little to a client (a faulty replica may lie); clients that need proof collect f+1 matching replies from
// distinct replicas (pbft.ReplyCollector).
func (n *Node) Submit(ctx context.Context, req *wire.Envelope) (*wire.Envelope, error) {
	k, err := n.checkRequest(req)
	if err != nil {
		return nil, err
	}
	if err := n.verifyRequest(req); err != nil {
		return nil, err
	}
	return n.await(ctx, k, req)
}

// await proposes a verified request and waits for its reply.
func (n *Node) await(ctx context.Context, k waitKey, req *wire.Envelope) (*wire.Envelope, error) {
	w := n.waiters.add(k)
	defer n.waiters.remove(k, w)
	if err := n.enqueue(ctx, req); err != nil {
		return nil, err
	}
	select {
	case env := <-w.ch:
		return env, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("node: waiting for the request to execute: %w", ctx.Err())
	case <-n.stopped:
		return nil, ErrStopped
	}
}

// SubmitAsync verifies a signed client request and hands it to ordering; it returns once the replica
// accepted it (it does not wait for execution).
func (n *Node) SubmitAsync(req *wire.Envelope) error {
	if _, err := n.checkRequest(req); err != nil {
		return err
	}
	if err := n.verifyRequest(req); err != nil {
		return err
	}
	return n.enqueue(context.Background(), req)
}

// handleRequest serves the p2p request protocol: client requests (answered with this replica's reply once
// executed) and state-transfer requests from other replicas. The p2p host verified the envelope.
func (n *Node) handleRequest(ctx context.Context, d p2p.Delivery) (*wire.Envelope, error) {
	switch d.Envelope.Kind {
	case wire.KindRequest:
		k, err := n.checkRequest(d.Envelope)
		if err != nil {
			return nil, err
		}
		return n.await(ctx, k, d.Envelope)
	case wire.KindStateRequest:
		r, err := statesync.DecodeRequest(d.Envelope.Payload)
		if err != nil {
			return nil, err
		}
		return n.serveState(r)
	default:
		return nil, fmt.Errorf("node: a %s envelope is not a request this node answers", d.Envelope.Kind)
	}
}
