package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// ErrUnreachable is wrapped by the error of a request that was not sent because an attempt to reach
// every replica failed and none is linked (Config.FailUnreachable).
var ErrUnreachable = errors.New("no replica reachable")

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
	n        int
	quorum   pbft.Quorums
	pubs     [][]byte
	verifier wire.Verifier
	// headers verifies reply headers through a cache (one header per batch and replica, shared by all
	// the replies of the batch).
	headers  *wire.CachingVerifier
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
		quorum:   pbft.QuorumsOf(g.N()),
		pubs:     g.PublicKeys(),
		verifier: v,
		headers:  wire.NewCachingVerifier(v, wire.NewSigCache(4096)),
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
		for _, links := range c.links {
			if err := c.unreachable(links); err != nil {
				return fmt.Errorf("client: linked to none of the %d replicas wanted: %w", want, err)
			}
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
