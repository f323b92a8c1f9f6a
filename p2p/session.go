package p2p

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2pbft/p2pbft/wire"
)

// Sessions: pipelined requests on one long-lived stream ("/p2pbft/<chain>/session/1.0.0").
//
// The request protocol (Request, handleReqStream) opens a stream per request: under load, stream set-up
// and tear-down (yamux SYN/FIN and window updates, multistream negotiation, deadlines, a goroutine per
// stream) cost the replicas and the clients more CPU than the requests. A session opens one stream to a
// peer and keeps it: the client writes request frames back to back, from any number of callers, and the
// server answers each as it completes, in any order.
//
// Frames are those of the other direct streams (frame.go). A request frame's body is an 8-byte big-endian
// request number the client chose, then the request envelope; a response frame's body is the number of
// the request it answers, then a response as on the request protocol (appendResponse: a status byte,
// then the envelope or the error message). The server checks every request with the validator, exactly
// as the request protocol does, and answers a request it refuses with an error response; a frame that
// breaks the framing (empty, over the sender's limit, too short to hold a request number) resets the
// stream.

// sessionIDSize is the size of the request number in front of every session frame body.
const sessionIDSize = 8

// maxCoalesce bounds the bytes one write gathers from queued frames: one write, one muxer frame and one
// system call for many small responses (or requests) instead of one each.
const maxCoalesce = 64 << 10

// clientSessionQueue is the number of request frames a client session queues for its writer; callers
// block (within their contexts) when it is full.
const clientSessionQueue = 1024

// ErrSessionClosed is returned by Session.Send after Session.Close.
var ErrSessionClosed = errors.New("p2p: session closed")

// errShortSessionFrame is returned by splitSessionFrame for a body without a request number and content.
var errShortSessionFrame = errors.New("p2p: session frame too short")

// appendSessionID appends a request number.
func appendSessionID(dst []byte, id uint64) []byte { return binary.BigEndian.AppendUint64(dst, id) }

// splitSessionFrame splits a session frame body into its request number and its content, which is never
// empty.
func splitSessionFrame(b []byte) (uint64, []byte, error) {
	if len(b) <= sessionIDSize {
		return 0, nil, errShortSessionFrame
	}
	return binary.BigEndian.Uint64(b), b[sessionIDSize:], nil
}

// decodeSessionResponse splits a session's response frame body into the request number and the response
// (for decodeResponse, which the waiting caller runs). It checks only what the reader needs: a request
// number, and a known status.
func decodeSessionResponse(b []byte) (id uint64, resp []byte, err error) {
	id, resp, err = splitSessionFrame(b)
	if err != nil {
		return 0, nil, err
	}
	if resp[0] != statusOK && resp[0] != statusError {
		return 0, nil, fmt.Errorf("p2p: session response: unknown status %d", resp[0])
	}
	return id, resp, nil
}

// appendFrameTo appends one frame (length prefix and body) to dst.
func appendFrameTo(dst, body []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(body)))
	return append(dst, body...)
}

// isTimeout reports whether err is a deadline expiring.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// writeQueued writes the frame first and whatever else is queued on q right now (up to maxCoalesce
// bytes) in one write with a StreamTimeout deadline. It returns how many frames it wrote, the buffer for
// reuse, and whether q was found closed.
func (h *Host) writeQueued(st network.Stream, q <-chan []byte, first []byte, buf []byte) (int, []byte, bool, error) {
	buf = appendFrameTo(buf[:0], first)
	n := 1
	closed := false
gather:
	for len(buf) < maxCoalesce {
		select {
		case b, ok := <-q:
			if !ok {
				closed = true
				break gather
			}
			buf = appendFrameTo(buf, b)
			n++
		default:
			break gather
		}
	}
	_ = st.SetWriteDeadline(time.Now().Add(h.cfg.StreamTimeout))
	_, err := st.Write(buf)
	if cap(buf) > 4*maxCoalesce { // one huge response: do not keep its buffer
		buf = nil
	}
	return n, buf, closed, err
}

// sessionServer is the serving side of one inbound session stream.
type sessionServer struct {
	h      *Host
	st     network.Stream
	remote peer.ID
	source string
	ctx    context.Context // ends when the stream fails or the host closes; bounds the handlers
	cancel context.CancelFunc
	// slots holds a token per request read and not yet answered on the wire: the reader takes one before
	// it reads a frame (and so stops reading at the window), the writer returns them.
	slots chan struct{}
	// out carries encoded response frame bodies to the writer. Its capacity is the window, so a handler
	// never blocks on it.
	out      chan []byte
	handlers sync.WaitGroup
}

// handleSessionStream serves one inbound session: it reads request frames, checks and handles each on
// its own goroutine (at most SessionWindow at once) and writes the responses from one writer. When the
// client closes its side or the stream is idle for StreamIdleTimeout, it finishes the requests it read,
// writes their responses and closes; on a framing error or a failed write it resets the stream.
func (h *Host) handleSessionStream(s network.Stream) {
	remote := s.Conn().RemotePeer()
	done := h.acceptStream(s, remote)
	if done == nil {
		return
	}
	defer done()
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	ss := &sessionServer{
		h: h, st: s, remote: remote, source: string(h.sessProto), ctx: ctx, cancel: cancel,
		slots: make(chan struct{}, h.cfg.SessionWindow),
		out:   make(chan []byte, h.cfg.SessionWindow),
	}
	stopReset := context.AfterFunc(ctx, func() { s.Reset() })
	writerDone := make(chan struct{})
	go ss.write(writerDone)
	clean := ss.read()
	if !clean {
		cancel() // the handlers' contexts end, and the stream is reset
	}
	ss.handlers.Wait()
	close(ss.out)
	<-writerDone
	if stopReset() && clean {
		s.Close()
	} else {
		s.Reset()
	}
}

// read reads and dispatches request frames until the client closes its side, the stream idles, or an
// error. It returns true if the session may end cleanly (the responses of what was read are owed).
func (ss *sessionServer) read() bool {
	h, s := ss.h, ss.st
	limit := h.frameLimit(ss.remote) + sessionIDSize
	for {
		select {
		case ss.slots <- struct{}{}:
		case <-ss.ctx.Done():
			return false
		}
		_ = s.SetReadDeadline(time.Now().Add(h.cfg.StreamIdleTimeout))
		n, err := readFrameHeader(s, limit)
		if err != nil {
			<-ss.slots
			switch {
			case errors.Is(err, ErrFrameTooLarge):
				h.metrics.count(ss.source, ss.remote, Rejected, ReasonOversized)
			case errors.Is(err, errEmptyFrame):
				h.metrics.count(ss.source, ss.remote, Rejected, ReasonMalformed)
			case errors.Is(err, io.EOF) || isTimeout(err):
				return true
			}
			h.log.Debug("session stream: read failed, resetting", "peer", ss.remote, "err", err)
			return false
		}
		_ = s.SetReadDeadline(time.Now().Add(h.cfg.StreamTimeout))
		body, err := readFrameBody(s, n)
		if err == nil {
			var id uint64
			var req []byte
			if id, req, err = splitSessionFrame(body); err == nil {
				ss.handlers.Add(1)
				go ss.serve(id, req)
				continue
			}
		}
		<-ss.slots
		h.metrics.count(ss.source, ss.remote, Rejected, ReasonMalformed)
		h.log.Debug("session stream: bad frame, resetting", "peer", ss.remote, "err", err)
		return false
	}
}

// serve answers one request and queues its response.
func (ss *sessionServer) serve(id uint64, req []byte) {
	defer ss.handlers.Done()
	out, err := ss.h.answerRequest(ss.ctx, req, ss.remote, ss.source, appendSessionID(nil, id))
	if err != nil {
		ss.h.log.Warn("encode response", "peer", ss.remote, "err", err)
		ss.cancel()
		<-ss.slots
		return
	}
	ss.out <- out // never blocks: at most SessionWindow requests hold a slot
}

// write writes the queued responses until out is closed; a failed write resets the stream (through the
// session's context) and the rest is discarded.
func (ss *sessionServer) write(done chan<- struct{}) {
	defer close(done)
	var buf []byte
	failed := false
	for first := range ss.out {
		if failed {
			<-ss.slots
			continue
		}
		n, b, closed, err := ss.h.writeQueued(ss.st, ss.out, first, buf)
		buf = b
		for range n {
			<-ss.slots
		}
		if err != nil {
			ss.h.log.Debug("session stream: write failed, resetting", "peer", ss.remote, "err", err)
			failed = true
			ss.cancel()
		}
		if closed {
			return
		}
	}
}

// Session is a client's long-lived request stream to one peer: Send pipelines requests on it, from any
// number of goroutines, and each waits for its own response. The stream is opened on the first Send and
// opened again by the Send after it broke (the peer restarted, the connection dropped, the peer closed an
// idle session). Create it with Host.NewSession; Close it when done (Host.Close closes every session's
// stream too).
type Session struct {
	h      *Host
	to     peer.ID
	nextID atomic.Uint64 // request numbers, unique across the streams of the session

	mu      sync.Mutex // guards cur, opening and closed
	cur     *sessionConn
	opening chan struct{} // closed when the stream being opened is open or failed; nil if none is
	closed  bool
}

// NewSession returns a session with peer to. It opens nothing yet: the first Send dials the peer if
// needed and opens the stream.
func (h *Host) NewSession(to peer.ID) *Session { return &Session{h: h, to: to} }

// Peer returns the session's peer.
func (s *Session) Peer() peer.ID { return s.to }

// Close closes the session: its stream is reset and outstanding Sends return ErrSessionClosed. It waits
// for the stream's goroutines (a stream still being opened is closed by the Send opening it) and is safe
// to call more than once.
func (s *Session) Close() error {
	s.mu.Lock()
	s.closed = true
	c := s.cur
	s.cur = nil
	s.mu.Unlock()
	if c != nil {
		c.fail(ErrSessionClosed)
		c.wg.Wait()
	}
	return nil
}

// Send sends a request envelope on the session and returns the peer's response, verified as Request
// verifies it (same chain, signed by the peer). A response the peer refused comes back as a
// *RemoteError. ctx bounds the whole exchange; without a deadline, RequestTimeout plus StreamTimeout
// applies. If the stream is found broken before the request is queued, Send opens a new one once; a
// request whose stream breaks after it was queued fails (it may or may not have reached the peer).
func (s *Session) Send(ctx context.Context, req *wire.Envelope) (*wire.Envelope, error) {
	h := s.h
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
	frame := appendSessionID(make([]byte, 0, sessionIDSize+len(data)), 0)
	frame = append(frame, data...)
	for attempt := 0; ; attempt++ {
		c, err := s.conn(ctx)
		if err != nil {
			return nil, err
		}
		id := s.nextID.Add(1)
		binary.BigEndian.PutUint64(frame, id)
		ch := make(chan []byte, 1)
		if !c.register(id, ch) {
			if attempt == 0 {
				continue // the stream broke since we looked: open a new one
			}
			return nil, fmt.Errorf("p2p: session to %s: %w", s.to, c.failure())
		}
		select {
		case c.q <- frame:
		case <-c.dead:
			c.unregister(id)
			if attempt == 0 {
				continue
			}
			return nil, fmt.Errorf("p2p: session to %s: %w", s.to, c.failure())
		case <-ctx.Done():
			c.unregister(id)
			return nil, s.ctxErr(ctx)
		}
		select {
		case body := <-ch:
			return s.open(body)
		case <-c.dead:
			select { // the response may have arrived just before the stream broke
			case body := <-ch:
				return s.open(body)
			default:
			}
			return nil, fmt.Errorf("p2p: session to %s: %w", s.to, c.failure())
		case <-ctx.Done():
			c.unregister(id)
			return nil, s.ctxErr(ctx)
		}
	}
}

// ctxErr reports a context's end as Request does: a deadline is context.DeadlineExceeded.
func (s *Session) ctxErr(ctx context.Context) error {
	return fmt.Errorf("p2p: session request to %s: %w", s.to, ctx.Err())
}

// open decodes and verifies a response.
func (s *Session) open(body []byte) (*wire.Envelope, error) {
	resp, err := decodeResponse(body)
	if err != nil {
		return nil, err
	}
	if err := s.h.checkResponse(resp, s.to); err != nil {
		s.h.metrics.count(string(s.h.sessProto), s.to, Rejected, ReasonSignature)
		return nil, fmt.Errorf("p2p: response from %s: %w", s.to, err)
	}
	return resp, nil
}

// conn returns the live stream of the session, opening one if there is none. One caller opens while the
// others wait for it, each within its own context: a dial to an unreachable peer (up to DialTimeout)
// does not hold up a caller whose context ends sooner.
func (s *Session) conn(ctx context.Context) (*sessionConn, error) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, ErrSessionClosed
		}
		if c := s.cur; c != nil {
			select {
			case <-c.dead:
				// Its goroutines end on their own; they are counted in the host's wait group.
				s.cur = nil
			default:
				s.mu.Unlock()
				return c, nil
			}
		}
		if wait := s.opening; wait != nil {
			s.mu.Unlock()
			select {
			case <-wait: // opened, or failed: look again (and try ourselves if it failed)
				continue
			case <-ctx.Done():
				return nil, s.ctxErr(ctx)
			}
		}
		opening := make(chan struct{})
		s.opening = opening
		s.mu.Unlock()

		c, err := s.dial(ctx)
		s.mu.Lock()
		s.opening = nil
		close(opening)
		closed := s.closed
		if err == nil && !closed {
			s.cur = c
		}
		s.mu.Unlock()
		if err != nil {
			return nil, err
		}
		if closed { // Close ran while we dialled
			c.fail(ErrSessionClosed)
			c.wg.Wait()
			return nil, ErrSessionClosed
		}
		return c, nil
	}
}

// dial opens a session stream and starts its reader and writer.
func (s *Session) dial(ctx context.Context) (*sessionConn, error) {
	h := s.h
	// Two goroutines (reader and writer) that Host.Close must wait for.
	if !h.enter() {
		return nil, ErrClosed
	}
	if !h.enter() {
		h.wg.Done()
		return nil, ErrClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	stopHost := context.AfterFunc(h.ctx, cancel)
	st, err := h.lh.NewStream(ctx, s.to, h.sessProto)
	stopHost()
	cancel()
	if err != nil {
		h.wg.Done()
		h.wg.Done()
		if h.ctx.Err() != nil {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("p2p: session to %s: open stream: %w", s.to, err)
	}
	c := &sessionConn{
		h: h, to: s.to, st: st,
		q:       make(chan []byte, clientSessionQueue),
		pending: make(map[uint64]chan []byte),
		dead:    make(chan struct{}),
	}
	c.stopHost = context.AfterFunc(h.ctx, func() { c.fail(ErrClosed) })
	c.wg.Add(2)
	go c.read()
	go c.write()
	return c, nil
}

// sessionConn is one stream of a client session.
type sessionConn struct {
	h        *Host
	to       peer.ID
	st       network.Stream
	q        chan []byte // request frame bodies for the writer
	stopHost func() bool
	wg       sync.WaitGroup // reader and writer

	mu      sync.Mutex
	pending map[uint64]chan []byte // response channels by request number; nil once the stream failed
	err     error

	dead     chan struct{}
	failOnce sync.Once
}

// register records a request awaiting its response; false if the stream already failed.
func (c *sessionConn) register(id uint64, ch chan []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending == nil {
		return false
	}
	c.pending[id] = ch
	return true
}

func (c *sessionConn) unregister(id uint64) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// failure returns why the stream failed.
func (c *sessionConn) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// fail marks the stream failed, resets it and wakes every caller waiting on it.
func (c *sessionConn) fail(err error) {
	c.failOnce.Do(func() {
		c.mu.Lock()
		c.err = err
		c.pending = nil
		c.mu.Unlock()
		close(c.dead)
		c.st.Reset()
		c.stopHost()
	})
}

// read delivers response frames to their callers until the stream fails.
func (c *sessionConn) read() {
	defer c.h.wg.Done()
	defer c.wg.Done()
	limit := c.h.cfg.MaxMessageSize + 1 + sessionIDSize
	for {
		body, err := readFrame(c.st, limit)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("stream closed by the peer")
			}
			c.fail(fmt.Errorf("read response: %w", err))
			return
		}
		id, resp, err := decodeSessionResponse(body)
		if err != nil {
			c.h.metrics.count(string(c.h.sessProto), c.to, Rejected, ReasonMalformed)
			c.fail(err)
			return
		}
		c.mu.Lock()
		ch := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if ch != nil { // nil: the caller gave up
			ch <- resp
		}
	}
}

// write writes queued request frames until the stream fails.
func (c *sessionConn) write() {
	defer c.h.wg.Done()
	defer c.wg.Done()
	var buf []byte
	for {
		select {
		case first := <-c.q:
			_, b, _, err := c.h.writeQueued(c.st, c.q, first, buf)
			buf = b
			if err != nil {
				c.fail(fmt.Errorf("write request: %w", err))
				return
			}
		case <-c.dead:
			return
		}
	}
}
