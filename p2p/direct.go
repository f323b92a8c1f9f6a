package p2p

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/wire"
)

// RequestHandler answers a request that arrived on the request protocol. The request is verified like
// any other message (Delivery says by whom and from which peer); the handler returns the response
// envelope, signed by this node, or an error the requester receives as a *RemoteError. ctx ends after
// Config.RequestTimeout or when the host closes.
type RequestHandler func(ctx context.Context, req Delivery) (*wire.Envelope, error)

// ErrQueueFull is returned by SendTo when the peer's send queue is full; the message is dropped and counted.
var ErrQueueFull = errors.New("p2p: send queue full")

// senderIdle is how long a per-peer sender goroutine (and its stream) lives without traffic.
const senderIdle = time.Minute

// SetRequestHandler installs the handler for inbound requests. Until one is set, requests get an error.
func (h *Host) SetRequestHandler(fn RequestHandler) { h.reqHandler.Store(&fn) }

// enter registers a goroutine that Close must wait for; it returns false once the host is closing.
func (h *Host) enter() bool {
	h.closeMu.Lock()
	defer h.closeMu.Unlock()
	if h.closing {
		return false
	}
	h.wg.Add(1)
	return true
}

// acceptStream registers an inbound stream's handler with the host (Close waits for it) and applies the
// stream limits (admit). It returns the function the handler defers, or nil after resetting the stream
// when the host is closing or the peer is over its limits.
func (h *Host) acceptStream(s network.Stream, remote peer.ID) (done func()) {
	if !h.enter() {
		s.Reset()
		return nil
	}
	release := h.admit(remote)
	if release == nil {
		h.wg.Done()
		h.metrics.drop(DropStreamLimit)
		s.Reset()
		return nil
	}
	return func() {
		release()
		h.wg.Done()
	}
}

// admit applies the stream limits for peers that are not replicas. It returns a release function, or
// nil if the stream must be refused.
func (h *Host) admit(p peer.ID) func() {
	if h.replicaIndex(p) >= 0 {
		return func() {}
	}
	h.streamsMu.Lock()
	defer h.streamsMu.Unlock()
	if h.clientStreams >= h.cfg.MaxClientStreams || h.clientStreamsPer[p] >= h.cfg.MaxClientStreamsPerPeer {
		return nil
	}
	h.clientStreams++
	h.clientStreamsPer[p]++
	return func() {
		h.streamsMu.Lock()
		h.clientStreams--
		if h.clientStreamsPer[p]--; h.clientStreamsPer[p] <= 0 {
			delete(h.clientStreamsPer, p)
		}
		h.streamsMu.Unlock()
	}
}

func (h *Host) frameLimit(p peer.ID) int {
	if h.replicaIndex(p) >= 0 {
		return h.cfg.MaxMessageSize
	}
	return h.cfg.MaxClientMessageSize
}

// handleMsgStream reads the frames of an inbound message stream, checks each like a gossip message and
// delivers the valid ones. Backpressure: while the application does not take deliveries, the stream is not
// read, and flow control slows the sender.
func (h *Host) handleMsgStream(s network.Stream) {
	remote := s.Conn().RemotePeer()
	done := h.acceptStream(s, remote)
	if done == nil {
		return
	}
	defer done()
	stop := context.AfterFunc(h.ctx, func() { s.Reset() })
	defer stop()
	source := string(h.msgProto)
	limit := h.frameLimit(remote)
	for {
		_ = s.SetReadDeadline(time.Now().Add(h.cfg.StreamIdleTimeout))
		n, err := readFrameHeader(s, limit)
		if err != nil {
			if errors.Is(err, ErrFrameTooLarge) || errors.Is(err, errEmptyFrame) {
				reason := ReasonOversized
				if errors.Is(err, errEmptyFrame) {
					reason = ReasonMalformed
				}
				h.metrics.count(source, remote, Rejected, reason)
				h.log.Debug("direct stream: bad frame, resetting", "peer", remote, "err", err)
				s.Reset()
				return
			}
			if !errors.Is(err, io.EOF) {
				s.Reset()
			} else {
				s.Close()
			}
			return
		}
		_ = s.SetReadDeadline(time.Now().Add(h.cfg.StreamTimeout))
		body, err := readFrameBody(s, n)
		if err != nil {
			h.metrics.count(source, remote, Rejected, ReasonMalformed)
			s.Reset()
			return
		}
		start := time.Now()
		e, author, r, reason := h.val.check(body, remote, ViaDirect)
		h.val.observe(source, remote, r, reason, start)
		if r != Accepted || !h.firstDelivery(contentID(body)) {
			continue
		}
		d := Delivery{Envelope: e, Author: author, From: remote, FromReplica: h.replicaIndex(remote), Via: ViaDirect}
		select {
		case h.deliveries <- d:
		case <-h.ctx.Done():
			return
		}
	}
}

// handleReqStream serves one request: read the request frame, check it, call the handler, write the
// response frame.
func (h *Host) handleReqStream(s network.Stream) {
	remote := s.Conn().RemotePeer()
	done := h.acceptStream(s, remote)
	if done == nil {
		return
	}
	defer done()
	stop := context.AfterFunc(h.ctx, func() { s.Reset() })
	defer stop()
	source := string(h.reqProto)
	_ = s.SetDeadline(time.Now().Add(h.cfg.StreamTimeout))
	body, err := readFrame(s, h.frameLimit(remote))
	if err != nil {
		if errors.Is(err, ErrFrameTooLarge) {
			h.metrics.count(source, remote, Rejected, ReasonOversized)
		} else {
			h.metrics.count(source, remote, Rejected, ReasonMalformed)
		}
		s.Reset()
		return
	}
	out, err := h.answerRequest(h.ctx, body, remote, source, nil)
	if err != nil {
		h.log.Warn("encode response", "peer", remote, "err", err)
		s.Reset()
		return
	}
	_ = s.SetWriteDeadline(time.Now().Add(h.cfg.StreamTimeout))
	if err := writeFrame(s, out); err != nil {
		s.Reset()
		return
	}
	s.Close()
}

// answerRequest checks one request frame body with the validator (counted under source), calls the
// request handler with a context bounded by RequestTimeout and parent, and appends the encoded response
// (or the error the requester gets as a *RemoteError) to dst. It is shared by the one-shot request
// protocol and by sessions (session.go), so both check, count and answer alike.
func (h *Host) answerRequest(parent context.Context, body []byte, remote peer.ID, source string, dst []byte) ([]byte, error) {
	start := time.Now()
	e, author, r, reason := h.val.check(body, remote, ViaRequest)
	h.val.observe(source, remote, r, reason, start)
	var resp *wire.Envelope
	var herr error
	switch {
	case r != Accepted:
		herr = fmt.Errorf("request %s: %s", r, reason)
	case h.reqHandler.Load() == nil:
		herr = errors.New("no request handler")
	default:
		ctx, cancel := context.WithTimeout(parent, h.cfg.RequestTimeout)
		d := Delivery{Envelope: e, Author: author, From: remote, FromReplica: h.replicaIndex(remote), Via: ViaRequest}
		resp, herr = (*h.reqHandler.Load())(ctx, d)
		cancel()
		if herr == nil && resp == nil {
			herr = errors.New("handler returned no response")
		}
	}
	out, err := appendResponse(dst, resp, herr)
	if err == nil && len(out)-len(dst) > h.cfg.MaxMessageSize+1 {
		out, err = appendResponse(dst, nil, fmt.Errorf("response of %d bytes exceeds the limit", len(out)-len(dst)))
	}
	return out, err
}

// Request sends a request envelope to a peer (a replica or any peer serving this chain's request
// protocol) and returns its response, verified: same chain, signed by the peer it came from. It dials the
// peer if needed. ctx bounds the whole exchange; without a deadline, RequestTimeout plus StreamTimeout
// applies.
func (h *Host) Request(ctx context.Context, to peer.ID, req *wire.Envelope) (*wire.Envelope, error) {
	if h.ctx.Err() != nil {
		return nil, ErrClosed
	}
	data, err := h.encodeOutbound(req)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.cfg.RequestTimeout+h.cfg.StreamTimeout)
		defer cancel()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopHost := context.AfterFunc(h.ctx, cancel)
	defer stopHost()
	s, err := h.lh.NewStream(ctx, to, h.reqProto)
	if err != nil {
		return nil, fmt.Errorf("p2p: request to %s: open stream: %w", to, err)
	}
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	deadline, _ := ctx.Deadline()
	_ = s.SetDeadline(deadline)
	if err := writeFrame(s, data); err != nil {
		s.Reset()
		return nil, fmt.Errorf("p2p: request to %s: %w", to, err)
	}
	_ = s.CloseWrite()
	body, err := readFrame(s, h.cfg.MaxMessageSize+1)
	if err != nil {
		s.Reset()
		if ctx.Err() != nil || !time.Now().Before(deadline) {
			// The stream deadline is the context's; report it as the context's error.
			return nil, fmt.Errorf("p2p: request to %s: %w", to, context.DeadlineExceeded)
		}
		return nil, fmt.Errorf("p2p: request to %s: read response: %w", to, err)
	}
	s.Close()
	resp, err := decodeResponse(body)
	if err != nil {
		return nil, err
	}
	if err := h.checkResponse(resp, to); err != nil {
		h.metrics.count(string(h.reqProto), to, Rejected, ReasonSignature)
		return nil, fmt.Errorf("p2p: response from %s: %w", to, err)
	}
	return resp, nil
}

// checkResponse accepts a response only from the key of the peer that sent it.
func (h *Host) checkResponse(e *wire.Envelope, from peer.ID) error {
	if e.ChainID != h.chainID {
		return fmt.Errorf("chain %q, want %q", e.ChainID, h.chainID)
	}
	pub, err := identity.PublicKeyFromPeerID(from)
	if err != nil {
		return err
	}
	if string(pub) != string(e.Author) {
		return errors.New("signed by another key than the responder's")
	}
	if !h.val.verify(e) {
		return wire.ErrBadSignature
	}
	return nil
}

func (h *Host) encodeOutbound(e *wire.Envelope) ([]byte, error) {
	if e.ChainID != h.chainID {
		return nil, fmt.Errorf("p2p: envelope for chain %q, host is on %q", e.ChainID, h.chainID)
	}
	data, err := e.Marshal()
	if err != nil {
		return nil, fmt.Errorf("p2p: %w", err)
	}
	if len(data) > h.cfg.MaxMessageSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), h.cfg.MaxMessageSize)
	}
	return data, nil
}

// SendTo queues one envelope for a peer over a direct stream and returns at once. It does not dial: the
// peer must be connected (replicas are kept connected; a client is connected while it talks to us). If
// the peer's queue is full the message is dropped (ErrQueueFull); a message that cannot be written is
// dropped too. Both are counted. Messages to one peer arrive in order.
func (h *Host) SendTo(to peer.ID, e *wire.Envelope) error {
	if to == h.id {
		return errors.New("p2p: send to self")
	}
	data, err := h.encodeOutbound(e)
	if err != nil {
		return err
	}
	h.val.trustOwn(e)
	h.sendMu.Lock()
	defer h.sendMu.Unlock()
	if h.ctx.Err() != nil {
		return ErrClosed
	}
	s := h.senders[to]
	if s == nil {
		if !h.enter() {
			return ErrClosed
		}
		s = &sender{h: h, to: to, q: make(chan []byte, h.cfg.QueueSize)}
		h.senders[to] = s
		go s.run()
	}
	select {
	case s.q <- data:
		return nil
	default:
		h.metrics.drop(DropSendQueue)
		return fmt.Errorf("%w (peer %s)", ErrQueueFull, to)
	}
}

// SendToReplica is SendTo for replica i of the genesis.
func (h *Host) SendToReplica(i int, e *wire.Envelope) error {
	if i < 0 || i >= h.genesis.N() {
		return fmt.Errorf("p2p: no replica %d (n = %d)", i, h.genesis.N())
	}
	return h.SendTo(h.genesis.PeerID(i), e)
}

// BroadcastDirect sends one envelope to every other replica over direct streams: the alternative to
// Multicast for heavy messages (no forwarding, no duplicates; see the package benchmarks). It returns the
// errors of the replicas it could not queue for, joined.
func (h *Host) BroadcastDirect(e *wire.Envelope) error {
	var errs []error
	for i := 0; i < h.genesis.N(); i++ {
		if i == h.self {
			continue
		}
		if err := h.SendToReplica(i, e); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// sender owns the outbound message stream to one peer.
type sender struct {
	h  *Host
	to peer.ID
	q  chan []byte

	mu sync.Mutex // guards st against the reset on shutdown
	st network.Stream
}

func (s *sender) run() {
	h := s.h
	defer h.wg.Done()
	// On shutdown, reset the stream so that a write blocked on a slow peer returns at once.
	stop := context.AfterFunc(h.ctx, func() {
		s.mu.Lock()
		if s.st != nil {
			s.st.Reset()
		}
		s.mu.Unlock()
	})
	defer stop()
	idle := time.NewTimer(senderIdle)
	defer idle.Stop()
	defer s.closeStream(false)
	for {
		select {
		case data := <-s.q:
			if !s.write(data) && !s.write(data) { // one retry on a fresh stream: the peer may have restarted
				h.metrics.drop(DropSendFailed)
			}
			if !idle.Stop() {
				select {
				case <-idle.C:
				default:
				}
			}
			idle.Reset(senderIdle)
		case <-idle.C:
			h.sendMu.Lock()
			if len(s.q) == 0 {
				delete(h.senders, s.to)
				h.sendMu.Unlock()
				return
			}
			h.sendMu.Unlock()
			idle.Reset(senderIdle)
		case <-h.ctx.Done():
			return
		}
	}
}

func (s *sender) write(data []byte) bool {
	h := s.h
	s.mu.Lock()
	st := s.st
	s.mu.Unlock()
	if st == nil {
		ctx, cancel := context.WithTimeout(network.WithNoDial(h.ctx, "p2pbft direct send"), h.cfg.StreamTimeout)
		var err error
		st, err = h.lh.NewStream(ctx, s.to, h.msgProto)
		cancel()
		if err != nil {
			h.log.Debug("direct send: no stream", "peer", s.to, "err", err)
			return false
		}
		s.mu.Lock()
		s.st = st
		s.mu.Unlock()
		if h.ctx.Err() != nil { // shutdown began while we opened it
			s.closeStream(true)
			return false
		}
	}
	_ = st.SetWriteDeadline(time.Now().Add(h.cfg.StreamTimeout))
	if err := writeFrame(st, data); err != nil {
		h.log.Debug("direct send: write failed", "peer", s.to, "err", err)
		s.closeStream(true)
		return false
	}
	return true
}

func (s *sender) closeStream(reset bool) {
	s.mu.Lock()
	st := s.st
	s.st = nil
	s.mu.Unlock()
	if st == nil {
		return
	}
	if reset {
		st.Reset()
	} else {
		st.Close()
	}
}
