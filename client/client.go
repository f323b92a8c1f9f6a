package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"time"

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

// Client sends requests to the replicas of one chain and waits for f+1 matching replies. Create it with
// New and stop it with Close; its methods are safe for concurrent use.
type Client struct {
	cfg      Config
	log      *slog.Logger
	g        *identity.Genesis
	chainID  string
	n, f     int
	pubs     [][]byte
	verifier *identity.Verifier
	hosts    []*p2p.Host
	streams  [][]*p2p.Session // per host, per replica: the request stream (opened on first use)
	sessions *Sessions
	metrics  *metrics

	mu     sync.Mutex
	view   uint64
	health []int // per replica: strikes (recent failures); lower is better
	rng    *rand.Rand

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
	// Transmissions counts the rounds in which the request was sent (1 if the first targets answered).
	Transmissions int
	// Latency is the time from signing to acceptance.
	Latency time.Duration
}

// New starts a client: its libp2p hosts start dialling the replicas at once (see WaitConnected).
func New(cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	g := cfg.Genesis
	v, err := g.NewVerifier()
	if err != nil {
		return nil, fmt.Errorf("client: verifier: %w", err)
	}
	sessions, err := NewSessions(cfg.Key, cfg.Sessions)
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
		sessions: sessions,
		metrics:  m,
		health:   make([]int, g.N()),
		rng:      rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	nhosts := (cfg.Sessions + cfg.SessionsPerHost - 1) / cfg.SessionsPerHost
	for i := range nhosts {
		key := cfg.Key
		if i > 0 {
			if key, err = identity.GenerateKey(); err != nil {
				c.Close()
				return nil, err
			}
		}
		pc := cfg.P2P
		pc.Key, pc.Genesis, pc.ListenAddrs, pc.Bootstrap = key, g, cfg.ListenAddrs, cfg.Bootstrap
		pc.Logger, pc.Verifier = cfg.Logger, v
		if i == 0 {
			pc.Registerer = cfg.Registerer
		} else {
			pc.Registerer = nil
		}
		h, err := p2p.New(pc)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("client: %w", err)
		}
		c.hosts = append(c.hosts, h)
		streams := make([]*p2p.Session, g.N())
		for r := range streams {
			streams[r] = h.NewSession(g.PeerID(r))
		}
		c.streams = append(c.streams, streams)
	}
	return c, nil
}

// Close stops the client's hosts and waits for its goroutines. Outstanding calls return errors.
func (c *Client) Close() error {
	var errs []error
	c.once.Do(func() {
		c.cancel()
		c.wg.Wait()
		for _, streams := range c.streams {
			for _, s := range streams {
				errs = append(errs, s.Close())
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

// WaitConnected blocks until every client host is connected to at least want replicas, or ctx ends.
func (c *Client) WaitConnected(ctx context.Context, want int) error {
	want = min(want, c.n)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		ok := true
		least := c.n
		for _, h := range c.hosts {
			k := len(h.ConnectedReplicas())
			least = min(least, k)
			if k < want {
				ok = false
			}
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("client: connected to %d of the %d replicas wanted: %w", least, want, ctx.Err())
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
	rep, err := c.submit(ctx, s, env, ts)
	if err != nil && c.ctx.Err() != nil {
		return nil, ErrClosed
	}
	return rep, err
}

type answer struct {
	replica int
	env     *wire.Envelope
	err     error
}

// primary returns the primary of the believed view.
func (c *Client) primary() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int(c.view % uint64(c.n))
}

// firstTargets returns the primary and f backups, those with the fewest recent failures first, ties
// broken at random.
func (c *Client) firstTargets(primary int) []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	others := make([]int, 0, c.n-1)
	for i := range c.n {
		if i != primary {
			others = append(others, i)
		}
	}
	c.rng.Shuffle(len(others), func(a, b int) { others[a], others[b] = others[b], others[a] })
	sort.SliceStable(others, func(a, b int) bool { return c.health[others[a]] < c.health[others[b]] })
	return append([]int{primary}, others[:min(c.f, len(others))]...)
}

// strike marks a replica that failed or sent a reply that was rejected or did not match: it is chosen
// as a first target only after the others.
func (c *Client) strike(i int) {
	c.mu.Lock()
	c.health[i] = min(c.health[i]+1, 16)
	c.mu.Unlock()
}

func (c *Client) good(replicas []int) {
	c.mu.Lock()
	for _, i := range replicas {
		c.health[i] = 0
	}
	c.mu.Unlock()
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

// exchange is the state of one request: which replicas were asked, which have not answered yet, what
// they answered.
type exchange struct {
	c       *Client
	ctx     context.Context
	streams []*p2p.Session // the host's request streams, per replica
	env     *wire.Envelope
	ts      uint64
	answers chan answer
	pending []bool
	views   map[int]uint64
	results map[int][]byte
	rounds  int
	wg      sync.WaitGroup
}

// send sends the request to replica i on the host's session stream to it; the answer arrives on answers.
// At most one transmission per replica is outstanding at a time, so answers (buffered n) never blocks.
func (x *exchange) send(i int) {
	x.pending[i] = true
	x.c.metrics.sent.Add(1)
	x.wg.Add(1)
	go func() {
		defer x.wg.Done()
		resp, err := x.streams[i].Send(x.ctx, x.env)
		x.answers <- answer{replica: i, env: resp, err: err}
	}()
}

// sendAll sends to every replica without a transmission outstanding.
func (x *exchange) sendAll(why string) {
	x.rounds++
	x.c.metrics.retransmissions.Add(1)
	n := 0
	for i := range x.c.n {
		if !x.pending[i] {
			x.send(i)
			n++
		}
	}
	x.c.log.Debug("request sent to all replicas", "why", why, "timestamp", x.ts, "round", x.rounds, "sent", n)
}

// submit sends env to the replicas and waits for f+1 matching replies (see the package documentation).
func (c *Client) submit(ctx context.Context, s *Session, env *wire.Envelope, ts uint64) (*Reply, error) {
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	x := &exchange{
		c: c, ctx: ctx, streams: c.streams[s.index/c.cfg.SessionsPerHost], env: env, ts: ts,
		answers: make(chan answer, c.n), pending: make([]bool, c.n),
		views: make(map[int]uint64, c.n), results: make(map[int][]byte, c.n), rounds: 1,
	}
	defer x.wg.Wait() // after cancel: every transmission ends promptly
	defer cancel()
	col := pbft.NewReplyCollector(c.chainID, c.pubs, c.verifier, s.key.PublicKey())
	col.Await(ts)
	primary := c.primary()
	for _, i := range c.firstTargets(primary) {
		x.send(i)
	}
	broadcasted := false
	retry := c.cfg.RetryTimeout
	timer := time.NewTimer(retry)
	defer timer.Stop()
	for {
		select {
		case a := <-x.answers:
			x.pending[a.replica] = false
			if a.err != nil {
				if ctx.Err() == nil {
					c.strike(a.replica)
					c.metrics.failedAttempts.Add(1)
					c.log.Debug("replica did not answer", "replica", a.replica, "timestamp", ts, "err", a.err)
				}
			} else {
				rep, err := col.Add(a.env)
				if err != nil {
					c.strike(a.replica)
					c.metrics.badReplies.Add(1)
					c.log.Warn("reply rejected", "replica", a.replica, "timestamp", ts, "err", err)
				} else {
					if r, err := pbft.OpenReply(a.env); err == nil {
						x.views[a.replica] = r.View
						x.results[a.replica] = r.Result
					}
					if rep != nil {
						return c.accept(s, rep, x, start), nil
					}
				}
			}
			// The primary failed, or every first target answered without a quorum: broadcast now rather
			// than wait for the timer.
			primaryFailed := a.replica == primary && a.err != nil
			if !broadcasted && ctx.Err() == nil && (primaryFailed || !slices.Contains(x.pending, true)) {
				broadcasted = true
				c.metrics.broadcasts.Add(1)
				x.sendAll("the first targets answered without a quorum")
				timer.Reset(retry)
			}
		case <-timer.C:
			if !broadcasted {
				broadcasted = true
				c.metrics.broadcasts.Add(1)
			}
			x.sendAll("timeout")
			retry = min(2*retry, c.cfg.MaxRetryTimeout)
			timer.Reset(retry)
		case <-ctx.Done():
			c.metrics.abandoned.Add(1)
			return nil, fmt.Errorf("client: request %d (session %d) after %d rounds: %w: %w", ts, s.index, x.rounds, ErrUnknownOutcome, ctx.Err())
		}
	}
}

// accept builds the Reply, learns the view and rewards the replicas that agreed; those that sent another
// result get a strike.
func (c *Client) accept(s *Session, rep *pbft.Reply, x *exchange, start time.Time) *Reply {
	var agreed []int
	for i, r := range x.results {
		if bytes.Equal(r, rep.Result) {
			agreed = append(agreed, i)
		} else {
			c.strike(i)
		}
	}
	sort.Ints(agreed)
	// The (f+1)-th highest view reported: at least f+1 replicas claim it or more, so at least one correct
	// replica reached it and a faulty one cannot push the client to an arbitrary view.
	vs := make([]uint64, 0, len(x.views))
	for _, v := range x.views {
		vs = append(vs, v)
	}
	slices.Sort(vs)
	slices.Reverse(vs)
	if len(vs) > c.f {
		c.learnView(vs[c.f])
	}
	c.good(agreed)
	lat := time.Since(start)
	c.metrics.accept(lat)
	return &Reply{
		Result: rep.Result, Timestamp: x.ts, Seq: rep.Seq, View: c.View(), Replicas: agreed, Session: s.index,
		Client: s.key.PublicKey(), Transmissions: x.rounds, Latency: lat,
	}
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
	// Retransmissions counts rounds after the first.
	Retransmissions uint64
	// FailedAttempts counts transmissions that ended without a reply (stream errors, remote errors).
	FailedAttempts uint64
	// BadReplies counts replies rejected (bad signature or proof, not for the awaited request).
	BadReplies uint64
}
