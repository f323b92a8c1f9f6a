package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/p2pbft/p2pbft/client/session"
	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/p2p"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// ErrClosed is returned by calls on a closed Client.
var ErrClosed = errors.New("client: closed")

// ErrUnknownOutcome is wrapped by Do's error when the context ended before f+1 replicas agreed: the
// request may or may not execute.
var ErrUnknownOutcome = errors.New("outcome unknown")

// ErrSessionBusy is returned by DoSigned when the session already has a request outstanding.
var ErrSessionBusy = errors.New("client: session busy")

// ErrRefused is wrapped by Do's error when f+1 replicas refused the request for the same reason (it is
// then refused by at least one correct replica, for a reason every correct replica shares: it will not
// execute), and when the client refuses to send it at all (too large).
var ErrRefused = errors.New("request refused")

// Client sends requests to the replicas of one chain and waits for f+1 matching replies. Create it with
// New and stop it with Close; its methods are safe for concurrent use.
type Client struct {
	cfg      Config
	log      *slog.Logger
	g        *identity.Genesis
	chainID  string
	n, f     int
	pubs     [][]byte
	verifier wire.Verifier
	headers  *headerCache
	hosts    []*p2p.Host
	links    [][]*p2p.Link // per host, per replica
	sessions *session.Pool
	keyIndex map[string]int // session public key -> session index
	calls    []atomic.Pointer[call]
	busy     []atomic.Bool
	metrics  *metrics

	mu   sync.Mutex
	view uint64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// Reply is an accepted result: f+1 replicas sent it.
type Reply struct {
	// Result is the application's result (for the key-value store, an encoded kv.Result).
	Result []byte
	// Timestamp is the request's timestamp.
	Timestamp uint64
	// Seq is the sequence number (block height) at which the request executed, as the accepting replies
	// report it.
	Seq uint64
	// View is the view the client learned from the replies.
	View uint64
	// Replicas are the replicas whose replies matched, in increasing order.
	Replicas []int
	// Session is the index of the session that signed the request.
	Session int
	// Client is the public key that signed the request.
	Client []byte
	// Transmissions counts the rounds in which the request was sent (1 if the primary's round sufficed).
	Transmissions int
	// Latency is the time from sending to acceptance.
	Latency time.Duration
}

// New starts a client: its libp2p hosts start dialling the replicas at once and each opens a link to every
// replica (see WaitConnected).
func New(cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	g := cfg.Genesis
	v := cfg.Verifier
	if v == nil {
		iv, err := g.NewVerifier()
		if err != nil {
			return nil, fmt.Errorf("client: verifier: %w", err)
		}
		v = iv
	}
	sessions, err := session.NewPool(cfg.Key, cfg.Sessions)
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	c := &Client{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "client"),
		g:        g,
		chainID:  g.ChainID(),
		n:        g.N(),
		f:        g.F(),
		pubs:     g.PublicKeys(),
		verifier: v,
		headers:  newHeaderCache(4096),
		sessions: sessions,
		keyIndex: make(map[string]int, cfg.Sessions),
		calls:    make([]atomic.Pointer[call], cfg.Sessions),
		busy:     make([]atomic.Bool, cfg.Sessions),
		metrics:  m,
	}
	for i := range cfg.Sessions {
		c.keyIndex[string(sessions.Session(i).Key().PublicKey())] = i
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	nhosts := (cfg.Sessions + cfg.SessionsPerHost - 1) / cfg.SessionsPerHost
	for i := range nhosts {
		if err := c.addHost(i); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// addHost starts client host i (sessions i*SessionsPerHost and on) and its links.
func (c *Client) addHost(i int) error {
	cfg := c.cfg
	key := cfg.Key
	if i > 0 {
		var err error
		if key, err = identity.GenerateKey(); err != nil {
			return err
		}
	}
	pc := cfg.P2P
	pc.Key, pc.Genesis, pc.ListenAddrs, pc.Bootstrap = key, c.g, cfg.ListenAddrs, cfg.Bootstrap
	pc.Logger, pc.Verifier = cfg.Logger, c.verifier
	if i == 0 {
		pc.Registerer = cfg.Registerer
	} else {
		pc.Registerer = nil
	}
	h, err := p2p.New(pc)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	c.hosts = append(c.hosts, h)
	first, last := i*cfg.SessionsPerHost, min((i+1)*cfg.SessionsPerHost, cfg.Sessions)
	hellos := make([]*wire.Envelope, 0, last-first)
	for s := first; s < last; s++ {
		e, err := h.SignHello(c.sessions.Session(s).Key())
		if err != nil {
			return fmt.Errorf("client: hello: %w", err)
		}
		hellos = append(hellos, e)
	}
	links := make([]*p2p.Link, c.n)
	c.links = append(c.links, links)
	for r := range c.n {
		l, err := h.NewLink(c.g.PeerID(r), hellos, func(data []byte) { c.onPush(r, data) })
		if err != nil {
			return fmt.Errorf("client: link to replica %d: %w", r, err)
		}
		links[r] = l
	}
	return nil
}

// Close stops the client's hosts and waits for its goroutines. Outstanding calls return errors.
func (c *Client) Close() error {
	var errs []error
	c.once.Do(func() {
		c.cancel()
		c.wg.Wait()
		for _, links := range c.links {
			for _, l := range links {
				if l != nil {
					errs = append(errs, l.Close())
				}
			}
		}
		for _, h := range c.hosts {
			errs = append(errs, h.Close())
		}
		c.metrics.unregister()
	})
	return errors.Join(errs...)
}

// Genesis returns the replica set.
func (c *Client) Genesis() *identity.Genesis { return c.g }

// Host returns the client's first libp2p host (for diagnostics).
func (c *Client) Host() *p2p.Host { return c.hosts[0] }

// View returns the view the client believes the replicas are in.
func (c *Client) View() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.view
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats { return c.metrics.snapshot() }

// Sessions returns the number of sessions (requests that may be outstanding at once).
func (c *Client) Sessions() int { return c.sessions.Len() }

// Session returns session i, to sign requests ahead of time for DoSigned (Session.NewRequest).
func (c *Client) Session(i int) *session.Session { return c.sessions.Session(i) }

// WaitConnected blocks until every client host has its link up to at least want replicas, or ctx ends.
func (c *Client) WaitConnected(ctx context.Context, want int) error {
	want = min(want, c.n)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		least := c.n
		for _, links := range c.links {
			k := 0
			for _, l := range links {
				if l.Up() {
					k++
				}
			}
			least = min(least, k)
		}
		if least >= want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("client: linked to %d of the %d replicas wanted: %w", least, want, ctx.Err())
		case <-c.ctx.Done():
			return ErrClosed
		case <-t.C:
		}
	}
}

// Do signs op with a free session's key and the session's next timestamp, sends it to the replicas and
// returns the result once f+1 replicas sent matching replies. It retries with the same timestamp until
// ctx ends; then the error wraps ErrUnknownOutcome and ctx's error. Do blocks while every session has a
// request outstanding.
func (c *Client) Do(ctx context.Context, op []byte) (*Reply, error) {
	if c.ctx.Err() != nil {
		return nil, ErrClosed
	}
	c.wg.Add(1)
	defer c.wg.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.ctx, cancel)
	defer stop()
	s := c.sessions.Acquire(ctx.Done())
	if s == nil {
		if c.ctx.Err() != nil {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("client: waiting for a free session: %w", ctx.Err())
	}
	defer c.sessions.Release(s)
	env, ts, err := s.NewRequest(c.chainID, op)
	if err != nil {
		return nil, err
	}
	if err := c.checkSize(env); err != nil {
		return nil, err
	}
	frame, err := c.hosts[0].EncodeLinkFrame(env)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	rep, err := c.submit(ctx, s.Index(), frame, ts, time.Time{})
	if err != nil && c.ctx.Err() != nil {
		return nil, ErrClosed
	}
	return rep, err
}

// DoSigned sends a request that session i signed ahead of time (Session(i).NewRequest, timestamps in
// increasing order) and waits for f+1 matching replies, as Do does. The caller owns session i: it must not
// be used by Do (give Do other sessions, or none) nor by two DoSigned calls at once (ErrSessionBusy).
func (c *Client) DoSigned(ctx context.Context, i int, env *wire.Envelope, ts uint64) (*Reply, error) {
	p, err := c.Prepare(i, env, ts)
	if err != nil {
		return nil, err
	}
	return c.DoPrepared(ctx, p, time.Time{})
}

// Prepared is a request signed and encoded ahead of time (Prepare), for DoPrepared: a load generator
// prepares its requests before it measures, so that sending one costs no signing and no encoding.
type Prepared struct {
	session int
	ts      uint64
	frame   p2p.LinkFrame
}

// Prepare encodes env, a request that session i signed with timestamp ts (Session(i).NewRequest), for
// DoPrepared. It is safe for concurrent use.
func (c *Client) Prepare(i int, env *wire.Envelope, ts uint64) (*Prepared, error) {
	if i < 0 || i >= len(c.calls) {
		return nil, fmt.Errorf("client: no session %d", i)
	}
	if !bytes.Equal(env.Author, c.sessions.Session(i).Key().PublicKey()) {
		return nil, fmt.Errorf("client: the request is not signed by session %d", i)
	}
	if err := c.checkSize(env); err != nil {
		return nil, err
	}
	f, err := c.hosts[0].EncodeLinkFrame(env)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return &Prepared{session: i, ts: ts, frame: f}, nil
}

// DoPrepared sends a prepared request and waits for f+1 matching replies, as DoSigned does (the caller owns
// its session). A non-zero deadline bounds the wait like a context deadline would, without the cost of a
// context per request.
func (c *Client) DoPrepared(ctx context.Context, p *Prepared, deadline time.Time) (*Reply, error) {
	if c.ctx.Err() != nil {
		return nil, ErrClosed
	}
	i := p.session
	if !c.busy[i].CompareAndSwap(false, true) {
		return nil, fmt.Errorf("%w: session %d", ErrSessionBusy, i)
	}
	defer c.busy[i].Store(false)
	c.wg.Add(1)
	defer c.wg.Done()
	return c.submit(ctx, i, p.frame, p.ts, deadline)
}

// checkSize refuses a request the replicas would refuse for its size.
func (c *Client) checkSize(env *wire.Envelope) error {
	if n := pbft.RequestSize(env); n > c.cfg.MaxRequestBytes {
		return fmt.Errorf("client: %w: a request of %d bytes exceeds the replicas' limit of %d (consensus: pbft.Config.MaxRequestBytes)",
			ErrRefused, n, c.cfg.MaxRequestBytes)
	}
	return nil
}

// primary returns the primary of the believed view.
func (c *Client) primary() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int(c.view % uint64(c.n))
}

// learnView moves the believed view forward to v.
func (c *Client) learnView(v uint64) {
	c.mu.Lock()
	if v > c.view {
		c.log.Debug("learned a new view from replies", "view", v, "previous", c.view)
		c.view = v
	}
	c.mu.Unlock()
}

// submit sends env (signed by session si, timestamp ts) and waits for f+1 matching replies. The first round
// goes to every replica: the primary orders the request, the backups keep it so that they need not verify
// its signature when the pre-prepare brings it (the link authenticates it), and every replica that executes
// it replies. If f+1 matching replies are not in after RetryTimeout, or at once if the primary refused
// the request, the request goes again, marked as a retransmission, to every replica that has not replied:
// then every correct replica verifies it, forwards it to the primary and watches for its execution (PBFT's
// reaction to a client that had to retransmit). Retransmissions repeat every RetryTimeout, doubling up to
// MaxRetryTimeout, until ctx ends.
func (c *Client) submit(ctx context.Context, si int, frame p2p.LinkFrame, ts uint64, deadline time.Time) (*Reply, error) {
	start := time.Now()
	var retry p2p.LinkFrame
	cl := newCall(ts, c.n)
	c.calls[si].Store(cl)
	defer c.calls[si].Store(nil)
	links := c.links[si/c.cfg.SessionsPerHost]
	primary := c.primary()
	rounds := 0
	primaryReached := false
	sendRound := func(why string) int {
		f := frame
		if rounds > 0 {
			if retry == nil {
				retry = frame.Retry()
			}
			f = retry
			if rounds == 1 {
				c.metrics.broadcasts.Add(1)
			}
			c.metrics.retransmissions.Add(1)
		}
		rounds++
		sent := 0
		for r := range c.n {
			if cl.answered(r) {
				continue
			}
			if err := links[r].SendFrame(f); err != nil {
				c.metrics.failedAttempts.Add(1)
				continue
			}
			c.metrics.sent.Add(1)
			sent++
			if r == primary {
				primaryReached = true
			}
		}
		if rounds > 1 {
			c.log.Debug("request sent again", "why", why, "timestamp", ts, "round", rounds, "sent", sent)
		}
		return sent
	}
	if sendRound("first") == 0 {
		wctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
		err := c.waitAnyLink(wctx, links)
		cancel()
		if err != nil {
			if c.ctx.Err() != nil {
				return nil, ErrClosed
			}
			c.metrics.abandoned.Add(1)
			return nil, fmt.Errorf("client: request %d (session %d) not sent: no replica reachable within %s (connected to %d of %d; check the genesis addresses and --bootstrap): %w",
				ts, si, c.cfg.ConnectTimeout, c.connectedReplicas(), c.n, err)
		}
		sendRound("no replica was reachable")
	}
	if !primaryReached {
		// The backups wait for the primary's pre-prepare unless told the client had to retransmit.
		sendRound("the primary is unreachable")
	}
	refused := false
	refusals := make(map[int]string, c.n)
	retryAfter := c.cfg.RetryTimeout
	nextRetry := time.Now().Add(retryAfter)
	// One timer serves the retransmissions and the deadline: it fires at whichever comes first.
	wake := func() time.Duration {
		d := time.Until(nextRetry)
		if !deadline.IsZero() {
			d = min(d, time.Until(deadline))
		}
		return max(d, 0)
	}
	timer := time.NewTimer(wake())
	defer timer.Stop()
	for {
		select {
		case <-cl.done:
			return c.accept(si, cl, rounds, start), nil
		case rf := <-cl.refused:
			if rf.final {
				refusals[rf.replica] = rf.reason
			}
			if n := countSame(refusals, rf.reason); rf.final && n > c.f {
				c.metrics.abandoned.Add(1)
				return nil, fmt.Errorf("client: request %d (session %d): %w by %d replicas: %s", ts, si, ErrRefused, n, rf.reason)
			}
			if rf.replica == primary && !refused {
				refused = true
				sendRound("the primary refused the request")
				nextRetry = time.Now().Add(retryAfter)
				timer.Reset(wake())
			}
		case now := <-timer.C:
			if !deadline.IsZero() && !now.Before(deadline) {
				c.metrics.abandoned.Add(1)
				return nil, fmt.Errorf("client: request %d (session %d) after %d rounds: %w: %w", ts, si, rounds, ErrUnknownOutcome, context.DeadlineExceeded)
			}
			if !now.Before(nextRetry) {
				sendRound("timeout")
				retryAfter = min(2*retryAfter, c.cfg.MaxRetryTimeout)
				nextRetry = now.Add(retryAfter)
			}
			timer.Reset(wake())
		case <-ctx.Done():
			c.metrics.abandoned.Add(1)
			return nil, fmt.Errorf("client: request %d (session %d) after %d rounds: %w: %w", ts, si, rounds, ErrUnknownOutcome, ctx.Err())
		case <-c.ctx.Done():
			return nil, ErrClosed
		}
	}
}

// connectedReplicas returns how many replicas the first host is connected to.
func (c *Client) connectedReplicas() int { return len(c.hosts[0].ConnectedReplicas()) }

// countSame counts the refusals that give reason.
func countSame(refusals map[int]string, reason string) int {
	n := 0
	for _, r := range refusals {
		if r == reason {
			n++
		}
	}
	return n
}

// waitAnyLink waits until at least one of links is up.
func (c *Client) waitAnyLink(ctx context.Context, links []*p2p.Link) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		for _, l := range links {
			if l.Up() {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.ctx.Done():
			return ErrClosed
		case <-t.C:
		}
	}
}

// accept builds the Reply of a call that reached its quorum and learns the view from its replies.
func (c *Client) accept(si int, cl *call, rounds int, start time.Time) *Reply {
	cl.mu.Lock()
	rep := cl.result
	var agreed []int
	var views []uint64
	for r, got := range cl.replies {
		if got == nil {
			continue
		}
		views = append(views, got.View)
		if bytes.Equal(got.Result, rep.Result) {
			agreed = append(agreed, r)
		}
	}
	cl.mu.Unlock()
	// The (f+1)-th highest view reported: at least f+1 replicas claim it or more, so at least one correct
	// replica reached it and a faulty one cannot push the client to an arbitrary view.
	slices.Sort(views)
	slices.Reverse(views)
	if len(views) > c.f {
		c.learnView(views[c.f])
	}
	lat := time.Since(start)
	c.metrics.accept(lat)
	return &Reply{
		Result: rep.Result, Timestamp: cl.ts, Seq: rep.Seq, View: c.View(), Replicas: agreed, Session: si,
		Client: c.sessions.Session(si).Key().PublicKey(), Transmissions: rounds, Latency: lat,
	}
}

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
	if err := c.headers.verify(c.verifier, b.Envelope); err != nil {
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
			cl.offer(r, b.Reply(i), c.f+1)
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

// headerCache remembers verified reply headers (one per batch and replica, shared by all the replies of the
// batch): two generations of maps, the older dropped whole when the newer fills.
type headerCache struct {
	mu       sync.Mutex
	size     int
	cur, old map[headerKey]struct{}
}

type headerKey struct {
	id  wire.Digest
	sig [wire.SignatureSize]byte
}

func newHeaderCache(size int) *headerCache {
	return &headerCache{size: size, cur: make(map[headerKey]struct{})}
}

// verify checks e's signature unless a header with the same content and signature was verified before.
func (h *headerCache) verify(v wire.Verifier, e *wire.Envelope) error {
	var k headerKey
	k.id = e.ID()
	copy(k.sig[:], e.Sig)
	h.mu.Lock()
	_, hit := h.cur[k]
	if !hit {
		_, hit = h.old[k]
	}
	h.mu.Unlock()
	if hit {
		return nil
	}
	if err := v.Verify(e); err != nil {
		return err
	}
	h.mu.Lock()
	if len(h.cur) >= h.size {
		h.old, h.cur = h.cur, make(map[headerKey]struct{}, h.size)
	}
	h.cur[k] = struct{}{}
	h.mu.Unlock()
	return nil
}

// Stats are the client's counters since it started.
type Stats struct {
	// Accepted counts requests answered by f+1 matching replies.
	Accepted uint64
	// Abandoned counts requests whose context ended first (outcome unknown).
	Abandoned uint64
	// Sent counts request transmissions to single replicas.
	Sent uint64
	// Broadcasts counts requests that had to be sent to every replica.
	Broadcasts uint64
	// Retransmissions counts rounds after the first broadcast.
	Retransmissions uint64
	// FailedAttempts counts transmissions that could not be queued (link down or queue full).
	FailedAttempts uint64
	// BadReplies counts replies and bundles rejected (bad signature or proof, malformed).
	BadReplies uint64
}
