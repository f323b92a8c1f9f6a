package p2p

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"

	"github.com/p2pbft/p2pbft/wire"
)

// Client links ("/p2pbft/<chain>/link/1.0.0"): the path of client requests and of the replicas' answers.
//
// A client host keeps one link to every replica: one long-lived stream, opened at once and reopened with
// backoff whenever it breaks, on which it writes request envelopes and the replica writes whatever it has
// for the client's keys, unasked and in any order (the node sends reply bundles and notices; p2p only
// routes them). So a client can send a request to the primary alone and still hear from every replica
// that executes it, as PBFT has it: all replicas reply, the client counts f+1.
//
// Routing rests on hellos. A client key K signs a wire.KindHello envelope whose payload is the client
// host's peer ID; the link writes the hellos of all the keys it serves first on every stream it opens. A
// replica that verifies a hello (signature by K, payload equal to the authenticated remote peer of the
// stream) routes whatever the node has for K to that stream (Host.LinkFor) until the stream ends or a
// newer hello for K arrives on another. A hello cannot be replayed by another host (the peer ID would not
// match), and a host without K's private key cannot claim K.
//
// Frames are those of the other direct streams (frame.go), with one type byte in front of the body:
// linkEnvelope or linkRetry (client to replica: an encoded envelope, first sent or sent again after a
// timeout) or linkPush (replica to client: the driver's bytes). The serving side checks envelopes like
// every other path (size, decode, chain, kind, membership: client kinds only; the driver's filter) and
// reads ahead while frames are buffered, up to LinkVerifyBatch envelopes, handled on up to
// LinkVerifyParallel goroutines per link at once so that one busy client host is served on every core.
// Hellos are verified and routed on the reader itself, before any request read after them is handed on
// (a replica that executes a client's first request at once must already know where its reply goes);
// requests reach the driver (SetLinkHandler) with their signatures NOT yet
// verified, marked with whether their author is routed to the link: the driver verifies them (VerifyBatch)
// or, where its protocol allows, trusts the authenticated link instead (see LinkRequest). Pushes queue per
// link (LinkQueue frames); a full queue drops the push and counts it, and the client, missing an answer,
// retransmits. Writes coalesce whatever is queued.

// Link frame types: the first byte of every frame body.
const (
	linkEnvelope byte = 1 // client to replica: an envelope, first transmission
	linkPush     byte = 2 // replica to client: the driver's bytes
	linkRetry    byte = 3 // client to replica: an envelope sent again after a timeout
)

// Link limits.
const (
	// LinkVerifyBatch bounds the envelopes of one link verified in one batch.
	LinkVerifyBatch = 256
	// LinkVerifyParallel bounds the batches of one link being verified at once; the link is not read
	// further meanwhile (backpressure).
	LinkVerifyParallel = 4
	// LinkQueue is the number of pushes (or, client side, envelopes) a link queues for its writer.
	LinkQueue = 4096
	// maxLinkKeys bounds the client keys routed to one link.
	maxLinkKeys = 1 << 16
)

// ErrLinkDown is returned by Link.Send while the link has no stream open.
var ErrLinkDown = errors.New("p2p: link down")

// LinkRequest is a client request that arrived on a link. Its envelope passed every check but the
// signature, which is the handler's: it verifies it (VerifyBatch), or waives it for a key routed to the
// link it came on (Routed: a hello signed by the key made this link's peer speak for it, and the link's
// transport authenticates that peer).
type LinkRequest struct {
	Envelope *wire.Envelope
	// Routed: the author's latest verified hello routed it to this link.
	Routed bool
	// Retry: the client sent it again after a timeout, not in its first round.
	Retry bool
}

// LinkHandler receives the client requests of one read batch of a link, signatures unverified (see
// LinkRequest). It is called from the link's reader goroutines, several at once, and may block (the link
// is then not read further).
type LinkHandler func(from *ClientLink, reqs []LinkRequest)

// SetLinkHandler installs the handler for requests arriving on client links. Until one is set, requests
// on links are dropped (and counted as ignored).
func (h *Host) SetLinkHandler(fn LinkHandler) { h.linkHandler.Store(&fn) }

// ClientLink is the serving side of one client link: what a replica holds to answer a client host.
type ClientLink struct {
	h      *Host
	remote peer.ID
	out    chan []byte
	ctx    context.Context
	keys   map[string]bool // guarded by h.linksMu
}

// Peer returns the client host at the other end.
func (c *ClientLink) Peer() peer.ID { return c.remote }

// Done is closed when the link has ended.
func (c *ClientLink) Done() <-chan struct{} { return c.ctx.Done() }

// Push queues data for the client and reports whether it was queued: false if the link has ended or its
// queue is full (the push is dropped and counted; the client retransmits what it misses).
func (c *ClientLink) Push(data []byte) bool {
	if c.ctx.Err() != nil {
		return false
	}
	body := make([]byte, 1+len(data))
	body[0] = linkPush
	copy(body[1:], data)
	select {
	case c.out <- body:
		return true
	default:
		c.h.metrics.drop(DropLinkQueue)
		return false
	}
}

// LinkFor returns the link that the replies for a client key go to (the stream of its latest verified
// hello), or nil.
func (h *Host) LinkFor(clientKey []byte) *ClientLink {
	h.linksMu.Lock()
	defer h.linksMu.Unlock()
	return h.linkByKey[string(clientKey)]
}

// route records a verified hello: the key's answers go to c.
func (h *Host) route(c *ClientLink, key []byte) bool {
	h.linksMu.Lock()
	defer h.linksMu.Unlock()
	if c.ctx.Err() != nil {
		return false
	}
	if old := h.linkByKey[string(key)]; old != nil && old != c {
		delete(old.keys, string(key))
	}
	if !c.keys[string(key)] && len(c.keys) >= maxLinkKeys {
		return false
	}
	c.keys[string(key)] = true
	h.linkByKey[string(key)] = c
	return true
}

// unroute forgets the keys routed to c once it ended.
func (h *Host) unroute(c *ClientLink) {
	h.linksMu.Lock()
	defer h.linksMu.Unlock()
	for k := range c.keys {
		if h.linkByKey[k] == c {
			delete(h.linkByKey, k)
		}
	}
	c.keys = nil
}

// VerifyBatch verifies the signatures of client envelopes (link requests) with the host's verifier in one
// batch and reports which are valid.
func (h *Host) VerifyBatch(es []*wire.Envelope) []bool { return h.val.verifyBatch(es) }

// SignHello returns the hello by which key k asks the replicas to send its answers to this host.
func (h *Host) SignHello(k wire.Signer) (*wire.Envelope, error) {
	return wire.Seal(k, h.chainID, wire.KindHello, []byte(h.id))
}

// handleLinkStream serves one inbound client link.
func (h *Host) handleLinkStream(s network.Stream) {
	remote := s.Conn().RemotePeer()
	done := h.acceptStream(s, remote)
	if done == nil {
		return
	}
	defer done()
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	c := &ClientLink{h: h, remote: remote, out: make(chan []byte, LinkQueue), ctx: ctx, keys: map[string]bool{}}
	defer h.unroute(c)
	stopReset := context.AfterFunc(ctx, func() { s.Reset() })
	defer stopReset()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.write(s, cancel)
	}()
	c.read(s)
	cancel()
	wg.Wait()
}

// write writes queued pushes until the link ends.
func (c *ClientLink) write(s network.Stream, fail context.CancelFunc) {
	var buf []byte
	for {
		select {
		case first := <-c.out:
			_, b, _, err := c.h.writeQueued(s, c.out, first, buf)
			buf = b
			if err != nil {
				c.h.log.Debug("client link: write failed", "peer", c.remote, "err", err)
				fail()
				return
			}
		case <-c.ctx.Done():
			return
		}
	}
}

// read reads envelope frames until the link ends, handing what passes the cheap checks to verification
// in batches.
func (c *ClientLink) read(s network.Stream) {
	h := c.h
	source := string(h.linkProto)
	limit := h.frameLimit(c.remote) + 1
	br := bufio.NewReaderSize(s, 64<<10)
	sem := make(chan struct{}, LinkVerifyParallel)
	var wg sync.WaitGroup
	defer wg.Wait()
	var batch, hellos []*wire.Envelope
	var retries []bool
	flush := func() bool {
		// Hellos are routed here, on the reader, before any request read after them is handed on: a
		// replica that executes a client's first request at once must find where to send the reply.
		if len(hellos) > 0 {
			c.routeHellos(hellos)
			hellos = nil
		}
		if len(batch) == 0 {
			return true
		}
		select {
		case sem <- struct{}{}:
		case <-c.ctx.Done():
			return false
		}
		b, r := batch, retries
		batch, retries = nil, nil
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c.deliver(b, r)
		}()
		return true
	}
	for {
		if (len(batch) > 0 || len(hellos) > 0) && br.Buffered() < frameHeaderSize {
			if !flush() {
				return
			}
		}
		n, err := readFrameHeader(br, limit)
		if err != nil {
			switch {
			case errors.Is(err, ErrFrameTooLarge):
				h.metrics.count(source, c.remote, Rejected, ReasonOversized)
			case errors.Is(err, errEmptyFrame):
				h.metrics.count(source, c.remote, Rejected, ReasonMalformed)
			case errors.Is(err, io.EOF) || c.ctx.Err() != nil:
				flush()
				return
			}
			h.log.Debug("client link: read failed", "peer", c.remote, "err", err)
			return
		}
		_ = s.SetReadDeadline(time.Now().Add(h.cfg.StreamTimeout))
		body, err := readFrameBody(br, n)
		_ = s.SetReadDeadline(time.Time{})
		if err != nil || (body[0] != linkEnvelope && body[0] != linkRetry) {
			h.metrics.count(source, c.remote, Rejected, ReasonMalformed)
			h.log.Debug("client link: bad frame", "peer", c.remote, "err", err)
			return
		}
		start := time.Now()
		e, _, r, reason := h.val.precheck(body[1:], c.remote, ViaLink)
		if r != Accepted {
			h.val.observe(source, c.remote, r, reason, start)
			continue
		}
		if e.Kind != wire.KindRequest && e.Kind != wire.KindHello {
			h.val.observe(source, c.remote, Rejected, ReasonKind, start)
			continue
		}
		if e.Kind == wire.KindHello {
			hellos = append(hellos, e)
			if len(hellos) >= LinkVerifyBatch && !flush() {
				return
			}
			continue
		}
		if len(hellos) > 0 && !flush() {
			return
		}
		batch = append(batch, e)
		retries = append(retries, body[0] == linkRetry)
		if len(batch) >= LinkVerifyBatch && !flush() {
			return
		}
	}
}

// routeHellos verifies hellos (in one batch) and routes their keys to this link.
func (c *ClientLink) routeHellos(hellos []*wire.Envelope) {
	h := c.h
	source := string(h.linkProto)
	start := time.Now()
	ok := h.val.verifyBatch(hellos)
	var accepted, badSig uint64
	for i, e := range hellos {
		switch {
		case !ok[i]:
			badSig++
		case !bytes.Equal(e.Payload, []byte(c.remote)):
			h.metrics.count(source, c.remote, Rejected, ReasonMalformed)
		case h.route(c, e.Author):
			accepted++
		default:
			h.metrics.count(source, c.remote, Ignored, ReasonLinkKeys)
		}
	}
	if badSig > 0 {
		h.metrics.countN(source, c.remote, Rejected, ReasonSignature, badSig)
	}
	if accepted > 0 {
		h.metrics.countN(source, c.remote, Accepted, ReasonNone, accepted)
		h.metrics.addValidationTime(time.Since(start))
	}
}

// deliver hands a read batch's requests to the driver, each marked with whether its author is routed to
// this link (the hellos read before them are routed already).
func (c *ClientLink) deliver(batch []*wire.Envelope, retries []bool) {
	h := c.h
	source := string(h.linkProto)
	start := time.Now()
	reqs := make([]LinkRequest, 0, len(batch))
	h.linksMu.Lock()
	for i, e := range batch {
		reqs = append(reqs, LinkRequest{Envelope: e, Routed: h.linkByKey[string(e.Author)] == c, Retry: retries[i]})
	}
	h.linksMu.Unlock()
	accepted := uint64(len(reqs))
	if accepted > 0 {
		h.metrics.countN(source, c.remote, Accepted, ReasonNone, accepted)
		h.metrics.addValidationTime(time.Since(start))
	}
	if len(reqs) == 0 {
		return
	}
	fn := h.linkHandler.Load()
	if fn == nil {
		h.metrics.countN(source, c.remote, Ignored, ReasonNoHandler, uint64(len(reqs)))
		return
	}
	(*fn)(c, reqs)
}

// Link is the client side of a client link to one replica: it keeps a stream open (reopening it with
// backoff), writes the hellos first on every stream, sends envelopes (Send) and hands what the replica
// pushes to its callback. Create it with Host.NewLink; Close it when done (Host.Close ends it too).
type Link struct {
	h      *Host
	to     peer.ID
	hellos [][]byte
	onPush func(data []byte)
	q      chan []byte
	up     atomic.Bool
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	upCh   chan struct{} // closed when the link comes up; replaced when it goes down
	opened int           // streams opened so far
	// failed counts the attempts to open a stream that failed since the link was last up (not those the
	// swarm's dial backoff refused), and lastErr is the latest one's error: a client tells "nothing listens there" (attempts that fail at once)
	// from "slow to accept" (an attempt still open) by them.
	failed  int
	lastErr error
}

// NewLink starts a link to peer to. hellos are written first on every stream the link opens (see
// SignHello); onPush is called, from the link's reader goroutine, with every push from the peer, in order.
func (h *Host) NewLink(to peer.ID, hellos []*wire.Envelope, onPush func(data []byte)) (*Link, error) {
	l := &Link{h: h, to: to, onPush: onPush, q: make(chan []byte, LinkQueue), done: make(chan struct{}),
		upCh: make(chan struct{})}
	for _, e := range hellos {
		data, err := h.encodeOutbound(e)
		if err != nil {
			return nil, err
		}
		l.hellos = append(l.hellos, append([]byte{linkEnvelope}, data...))
	}
	if !h.enter() {
		return nil, ErrClosed
	}
	l.ctx, l.cancel = context.WithCancel(h.ctx)
	go func() {
		defer h.wg.Done()
		defer close(l.done)
		l.run()
	}()
	return l, nil
}

// Peer returns the replica the link goes to.
func (l *Link) Peer() peer.ID { return l.to }

// Up reports whether the link has a stream open.
func (l *Link) Up() bool { return l.up.Load() }

// Opened returns how many streams the link opened so far (1 after the first connection; more after
// reconnections).
func (l *Link) Opened() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.opened
}

// DialFailures returns how many attempts to open a stream failed in a row since the link was last up (0
// while the first attempt is still open, or once a stream opened), and the latest failure's error.
func (l *Link) DialFailures() (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed, l.lastErr
}

// WaitUp waits until the link is up or ctx ends.
func (l *Link) WaitUp(ctx context.Context) error {
	for {
		l.mu.Lock()
		ch := l.upCh
		l.mu.Unlock()
		if l.up.Load() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("p2p: link to %s: %w", l.to, ctx.Err())
		case <-l.done:
			return ErrClosed
		}
	}
}

// LinkFrame is an envelope encoded for links (EncodeLinkFrame), so that one sent to several replicas is
// encoded once.
type LinkFrame []byte

// EncodeLinkFrame encodes an envelope of this host's chain for Link.SendFrame.
func (h *Host) EncodeLinkFrame(e *wire.Envelope) (LinkFrame, error) {
	data, err := h.encodeOutbound(e)
	if err != nil {
		return nil, err
	}
	body := make([]byte, 1+len(data))
	body[0] = linkEnvelope
	copy(body[1:], data)
	return body, nil
}

// Retry returns the frame marked as a retransmission (the replica then treats the request as one a
// client sent again after a timeout).
func (f LinkFrame) Retry() LinkFrame {
	r := append(LinkFrame(nil), f...)
	r[0] = linkRetry
	return r
}

// Send queues an envelope for the replica (EncodeLinkFrame, then SendFrame).
func (l *Link) Send(e *wire.Envelope) error {
	f, err := l.h.EncodeLinkFrame(e)
	if err != nil {
		return err
	}
	return l.SendFrame(f)
}

// SendFrame queues an encoded envelope for the replica. It fails at once with ErrLinkDown while the link
// has no stream, and with ErrQueueFull when the queue is full; a queued envelope may still be lost if the
// stream breaks (the client retransmits). The frame is only read, so one frame may go to many links.
func (l *Link) SendFrame(f LinkFrame) error {
	if !l.up.Load() {
		return ErrLinkDown
	}
	select {
	case l.q <- f:
		return nil
	default:
		l.h.metrics.drop(DropSendQueue)
		return fmt.Errorf("%w (link to %s)", ErrQueueFull, l.to)
	}
}

// Close ends the link and waits for its goroutines. It is safe to call more than once.
func (l *Link) Close() error {
	l.cancel()
	<-l.done
	return nil
}

// run opens streams until the link is closed, with exponential backoff between failed attempts.
func (l *Link) run() {
	h := l.h
	backoff := h.cfg.RedialMin
	for l.ctx.Err() == nil {
		// The link keeps its own backoff, as discovery does: the swarm's would answer the next dials with
		// "dial backoff" after any failed dial to the peer (discovery's, a moment before), which neither
		// reaches the peer nor says why it cannot be reached.
		if sw, ok := h.lh.Network().(*swarm.Swarm); ok && sw.Connectedness(l.to) != network.Connected {
			sw.Backoff().Clear(l.to)
		}
		ctx, cancel := context.WithTimeout(l.ctx, h.cfg.DialTimeout)
		st, err := h.lh.NewStream(ctx, l.to, h.linkProto)
		cancel()
		if err != nil {
			if l.ctx.Err() != nil {
				return // closed while dialling: not a failure to reach the peer
			}
			l.mu.Lock()
			// A dial the swarm refused for its backoff (another dial to the peer failed between the clear
			// and this one) is not an attempt of this link: it is not counted, and the error kept is the
			// last one a real dial gave.
			if !errors.Is(err, swarm.ErrDialBackoff) {
				l.failed++
				l.lastErr = err
			}
			l.mu.Unlock()
			h.log.Debug("client link: open failed", "peer", l.to, "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-l.ctx.Done():
				return
			}
			backoff = min(2*backoff, h.cfg.RedialMax/4)
			continue
		}
		backoff = h.cfg.RedialMin
		l.serve(st)
	}
}

// serve runs one stream: it writes the hellos, then pushes queued envelopes and reads pushes until the
// stream fails or the link is closed.
func (l *Link) serve(st network.Stream) {
	h := l.h
	ctx, cancel := context.WithCancel(l.ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { st.Reset() })
	defer stop()
	var hello []byte
	for _, b := range l.hellos {
		hello = appendFrameTo(hello, b)
	}
	if len(hello) > 0 {
		_ = st.SetWriteDeadline(time.Now().Add(h.cfg.StreamTimeout))
		if _, err := st.Write(hello); err != nil {
			h.log.Debug("client link: hello failed", "peer", l.to, "err", err)
			return
		}
	}
	l.mu.Lock()
	l.opened++
	l.failed, l.lastErr = 0, nil
	l.up.Store(true)
	close(l.upCh)
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.up.Store(false)
		l.upCh = make(chan struct{})
		l.mu.Unlock()
	}()
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer cancel()
		l.read(st)
	}()
	var buf []byte
	for {
		select {
		case first := <-l.q:
			_, b, _, err := h.writeQueued(st, l.q, first, buf)
			buf = b
			if err != nil {
				h.log.Debug("client link: write failed", "peer", l.to, "err", err)
				cancel()
				<-readDone
				return
			}
		case <-ctx.Done():
			<-readDone
			return
		}
	}
}

// read hands every push of the stream to the callback until the stream fails.
func (l *Link) read(st network.Stream) {
	h := l.h
	br := bufio.NewReaderSize(st, 64<<10)
	limit := h.cfg.MaxMessageSize + 1
	for {
		body, err := readFrame(br, limit)
		if err != nil {
			if !errors.Is(err, io.EOF) && l.ctx.Err() == nil {
				h.log.Debug("client link: read failed", "peer", l.to, "err", err)
			}
			return
		}
		if body[0] != linkPush {
			h.metrics.count(string(h.linkProto), l.to, Rejected, ReasonMalformed)
			return
		}
		if l.onPush != nil {
			l.onPush(body[1:])
		}
	}
}
