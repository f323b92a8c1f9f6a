package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/p2p"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// verifiedKey names a checked signature: the envelope's ID (sha256 of what was signed, author included)
// and the signature.
type verifiedKey struct {
	id  wire.Digest
	sig [64]byte
}

// cachingVerifier remembers the signatures it checked. A replica signs one reply header per batch and
// sends it to every client of the batch, and the p2p host and the reply collector both check each reply:
// without the cache the load generator would spend more CPU on verification than a replica does.
type cachingVerifier struct {
	v     *identity.Verifier
	cache *lru.Cache[verifiedKey, struct{}]
}

func newCachingVerifier(g *identity.Genesis) (*cachingVerifier, error) {
	v, err := g.NewVerifier()
	if err != nil {
		return nil, err
	}
	c, err := lru.New[verifiedKey, struct{}](1 << 14)
	if err != nil {
		return nil, err
	}
	return &cachingVerifier{v: v, cache: c}, nil
}

func (c *cachingVerifier) keyOf(e *wire.Envelope) (verifiedKey, bool) {
	var k verifiedKey
	if len(e.Sig) != len(k.sig) {
		return k, false
	}
	k.id = e.ID()
	copy(k.sig[:], e.Sig)
	return k, true
}

func (c *cachingVerifier) Verify(e *wire.Envelope) error {
	k, ok := c.keyOf(e)
	if ok && c.cache.Contains(k) {
		return nil
	}
	if err := c.v.Verify(e); err != nil {
		return err
	}
	if ok {
		c.cache.Add(k, struct{}{})
	}
	return nil
}

func (c *cachingVerifier) VerifyBatch(es []*wire.Envelope) error {
	var todo []*wire.Envelope
	var idx []int
	for i, e := range es {
		if k, ok := c.keyOf(e); ok && c.cache.Contains(k) {
			continue
		}
		todo = append(todo, e)
		idx = append(idx, i)
	}
	if len(todo) == 0 {
		return nil
	}
	err := c.v.VerifyBatch(todo)
	var be *wire.BatchError
	failed := map[int]bool{}
	if errors.As(err, &be) {
		for _, j := range be.Failed {
			failed[j] = true
		}
	} else if err != nil {
		return err
	}
	for j, e := range todo {
		if !failed[j] {
			if k, ok := c.keyOf(e); ok {
				c.cache.Add(k, struct{}{})
			}
		}
	}
	if len(failed) == 0 {
		return nil
	}
	out := &wire.BatchError{}
	for j := range todo {
		if failed[j] {
			out.Failed = append(out.Failed, idx[j])
		}
	}
	return out
}

// sender sends signed requests to the replicas and waits for f+1 matching replies, as package client
// does (first to the primary and f backups, to every replica after a timeout or a failure of the
// primary, retransmitting the same signed request), but with requests signed ahead of time and reply
// signatures checked once per replica and batch.
type sender struct {
	g        *identity.Genesis
	chainID  string
	n, f     int
	pubs     [][]byte
	verifier *cachingVerifier
	hosts    []*p2p.Host
	streams  [][]*p2p.Session // per host, per replica: the request stream requests are pipelined on
	retry    time.Duration
	maxRetry time.Duration

	mu     sync.Mutex
	view   uint64
	health []int
	rng    *rand.Rand
}

type senderConfig struct {
	Genesis      *identity.Genesis
	Bootstrap    []string
	Hosts        int
	ListenAddrs  []string
	RetryTimeout time.Duration
	Logger       *slog.Logger
}

func newSender(cfg senderConfig) (*sender, error) {
	v, err := newCachingVerifier(cfg.Genesis)
	if err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if len(cfg.ListenAddrs) == 0 {
		cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	}
	if cfg.RetryTimeout <= 0 {
		cfg.RetryTimeout = time.Second
	}
	s := &sender{g: cfg.Genesis, chainID: cfg.Genesis.ChainID(), n: cfg.Genesis.N(), f: cfg.Genesis.F(),
		pubs: cfg.Genesis.PublicKeys(), verifier: v, retry: cfg.RetryTimeout, maxRetry: 8 * time.Second,
		health: make([]int, cfg.Genesis.N()), rng: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
	for range cfg.Hosts {
		k, err := identity.GenerateKey()
		if err != nil {
			s.close()
			return nil, err
		}
		h, err := p2p.New(p2p.Config{Key: k, Genesis: cfg.Genesis, Verifier: v, ListenAddrs: cfg.ListenAddrs,
			Bootstrap: cfg.Bootstrap, Logger: cfg.Logger})
		if err != nil {
			s.close()
			return nil, fmt.Errorf("bench: client host: %w", err)
		}
		s.hosts = append(s.hosts, h)
		streams := make([]*p2p.Session, s.n)
		for r := range streams {
			streams[r] = h.NewSession(s.g.PeerID(r))
		}
		s.streams = append(s.streams, streams)
	}
	return s, nil
}

func (s *sender) close() {
	for _, streams := range s.streams {
		for _, st := range streams {
			st.Close()
		}
	}
	for _, h := range s.hosts {
		h.Close()
	}
}

// waitConnected waits until every host is connected to at least want replicas.
func (s *sender) waitConnected(ctx context.Context, want int) error {
	for _, h := range s.hosts {
		if err := h.WaitForReplicas(ctx, min(want, s.n)); err != nil {
			return fmt.Errorf("bench: client host: %w", err)
		}
	}
	return nil
}

// View returns the view the sender believes the replicas are in.
func (s *sender) View() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.view
}

func (s *sender) firstTargets() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	primary := int(s.view % uint64(s.n))
	others := make([]int, 0, s.n-1)
	for i := range s.n {
		if i != primary {
			others = append(others, i)
		}
	}
	s.rng.Shuffle(len(others), func(a, b int) { others[a], others[b] = others[b], others[a] })
	sort.SliceStable(others, func(a, b int) bool { return s.health[others[a]] < s.health[others[b]] })
	return append([]int{primary}, others[:min(s.f, len(others))]...)
}

func (s *sender) strike(i int) {
	s.mu.Lock()
	s.health[i] = min(s.health[i]+1, 16)
	s.mu.Unlock()
}

func (s *sender) accepted(agreed []int, views []uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, i := range agreed {
		s.health[i] = 0
	}
	// The (f+1)-th highest view reported: at least one correct replica reached it.
	slices.Sort(views)
	slices.Reverse(views)
	if len(views) > s.f && views[s.f] > s.view {
		s.view = views[s.f]
	}
}

type answer struct {
	replica int
	env     *wire.Envelope
	err     error
}

// outcome is what became of one request.
type outcome struct {
	seq    uint64 // block height the accepting replies named
	rounds int    // transmission rounds
}

// do sends a pre-signed request from session sess over host h's request streams (one p2p.Session per
// replica, shared by the host's clients) and waits for f+1 matching replies until ctx ends.
func (s *sender) do(ctx context.Context, h int, pub []byte, p prepared) (outcome, error) {
	ctx, cancel := context.WithCancel(ctx)
	answers := make(chan answer, s.n)
	pending := make([]bool, s.n)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	streams := s.streams[h]
	send := func(i int) {
		pending[i] = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := streams[i].Send(ctx, p.env)
			answers <- answer{replica: i, env: resp, err: err}
		}()
	}
	sendAll := func() {
		for i := range s.n {
			if !pending[i] {
				send(i)
			}
		}
	}
	col := pbft.NewReplyCollector(s.chainID, s.pubs, s.verifier, pub)
	col.Await(p.ts)
	targets := s.firstTargets()
	primary := targets[0]
	for _, i := range targets {
		send(i)
	}
	rounds := 1
	views := make(map[int]uint64, s.n)
	results := make(map[int][]byte, s.n)
	broadcast := false
	retry := s.retry
	timer := time.NewTimer(retry)
	defer timer.Stop()
	for {
		select {
		case a := <-answers:
			pending[a.replica] = false
			if a.err != nil {
				if ctx.Err() == nil {
					s.strike(a.replica)
				}
			} else if rep, err := col.Add(a.env); err != nil {
				s.strike(a.replica)
			} else {
				if r, err := pbft.OpenReply(a.env); err == nil {
					views[a.replica], results[a.replica] = r.View, r.Result
				}
				if rep != nil {
					var agreed []int
					var vs []uint64
					for i, r := range results {
						if bytes.Equal(r, rep.Result) {
							agreed = append(agreed, i)
						} else {
							s.strike(i)
						}
						vs = append(vs, views[i])
					}
					s.accepted(agreed, vs)
					return outcome{seq: rep.Seq, rounds: rounds}, nil
				}
			}
			primaryFailed := a.replica == primary && a.err != nil
			if !broadcast && ctx.Err() == nil && (primaryFailed || !slices.Contains(pending, true)) {
				broadcast = true
				rounds++
				sendAll()
				timer.Reset(retry)
			}
		case <-timer.C:
			broadcast = true
			rounds++
			sendAll()
			retry = min(2*retry, s.maxRetry)
			timer.Reset(retry)
		case <-ctx.Done():
			return outcome{rounds: rounds}, fmt.Errorf("request %d not accepted after %d rounds: %w", p.ts, rounds, ctx.Err())
		}
	}
}
