package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/p2pbft/p2pbft/client"
	"github.com/p2pbft/p2pbft/identity"
)

// Load modes.
const (
	// Closed runs Clients concurrent clients, each sending its next request when the last is accepted.
	Closed = "closed"
	// Open offers Rate requests per second whatever the replies, from up to Clients outstanding requests
	// (latency is counted from when a request was due, so a backlog shows as latency).
	Open = "open"
)

// LoadConfig describes the load.
type LoadConfig struct {
	// Mode is Closed or Open. Default Closed.
	Mode string `json:"mode" toml:"mode"`
	// Clients is the number of concurrent clients (closed loop), or the most requests outstanding at once
	// (open loop). Each has its own signing key, as PBFT allows one outstanding request per client.
	// Default 64 (closed) or 256 (open).
	Clients int `json:"clients" toml:"clients"`
	// Rate is the offered load of an open loop, in requests per second.
	Rate float64 `json:"rate,omitempty" toml:"rate"`
	// Duration stops issuing requests after this long (0: no time bound; then Requests must be set).
	Duration Duration `json:"duration" toml:"duration"`
	// Requests stops issuing after this many requests (0: no count bound).
	Requests int `json:"requests,omitempty" toml:"requests"`
	// Workload describes the requests.
	Workload
	// Presign is how many requests to sign before the load starts: 0 picks enough for the run's bounds
	// (Requests, or Rate x Duration, or 15,000/s x Duration for a closed loop, at most 2,000,000); -1
	// signs every request when it is sent. Requests beyond the pre-signed ones are signed when sent, and
	// counted.
	Presign int `json:"presign,omitempty" toml:"presign"`
	// OpTimeout abandons a request not accepted after this long (counted as failed). Default 30s.
	OpTimeout Duration `json:"op_timeout,omitempty" toml:"op_timeout"`
	// RetryTimeout is how long to wait for f+1 replies before sending a request to every replica; it
	// doubles on every retransmission up to 8s. Default 1s.
	RetryTimeout Duration `json:"retry_timeout,omitempty" toml:"retry_timeout"`
	// Seed seeds the keys chosen. 0: random (the run reports the seed used).
	Seed int64 `json:"seed" toml:"seed"`
	// SessionsPerHost is how many clients share one libp2p host (and its one link per replica, on which
	// their requests go and the replicas' replies come back). Default: all on one host, as one machine
	// running many clients would; smaller values model several client machines (each host one more
	// connection at every replica).
	SessionsPerHost int `json:"-" toml:"-"`
}

// Duration is a time.Duration written as a Go duration string in TOML and JSON.
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText writes the duration as "1m30s".
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText reads a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

func (c LoadConfig) withDefaults() LoadConfig {
	if c.Mode == "" {
		c.Mode = Closed
	}
	if c.Clients == 0 {
		c.Clients = 64
		if c.Mode == Open {
			c.Clients = 256
		}
	}
	if c.OpTimeout == 0 {
		c.OpTimeout = Duration(30 * time.Second)
	}
	if c.RetryTimeout == 0 {
		c.RetryTimeout = Duration(time.Second)
	}
	if c.SessionsPerHost == 0 {
		c.SessionsPerHost = c.Clients
	}
	if c.Seed == 0 {
		c.Seed = rand.Int64N(1<<31) + 1
	}
	c.Workload = c.Workload.withDefaults()
	return c
}

// Validate checks the configuration (after defaults).
func (c LoadConfig) Validate() error {
	c = c.withDefaults()
	var errs []error
	switch c.Mode {
	case Closed:
	case Open:
		if c.Rate <= 0 {
			errs = append(errs, errors.New("open loop: the rate must be positive"))
		}
	default:
		errs = append(errs, fmt.Errorf("load mode %q: want %s or %s", c.Mode, Closed, Open))
	}
	if c.Clients < 1 || c.Clients > 1<<16 {
		errs = append(errs, fmt.Errorf("clients %d: want 1 to 65536", c.Clients))
	}
	if c.Duration <= 0 && c.Requests <= 0 {
		errs = append(errs, errors.New("the load needs a bound: a duration, a request count, or both"))
	}
	if c.Requests < 0 || c.Duration < 0 {
		errs = append(errs, errors.New("negative duration or request count"))
	}
	if err := c.Workload.validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// presignCount is how many requests to sign ahead for the configured bounds.
func (c LoadConfig) presignCount() int {
	switch {
	case c.Presign < 0:
		return 0
	case c.Presign > 0:
		return c.Presign
	case c.Requests > 0:
		return c.Requests
	case c.Mode == Open:
		return min(int(c.Rate*c.Duration.D().Seconds()*1.05)+c.Clients, 2_000_000)
	default:
		return min(int(15000*c.Duration.D().Seconds())+2*c.Clients, 2_000_000)
	}
}

// Record is what became of one request.
type Record struct {
	// Session is the client (signing key) that sent it, TS its timestamp: together they name the request.
	Session int    `json:"session"`
	TS      uint64 `json:"ts"`
	// Key is the index of the key written.
	Key int `json:"key"`
	// Issued is when the request was due (open loop) or sent (closed loop), Done when it was accepted or
	// abandoned, both since the load started.
	Issued time.Duration `json:"issued"`
	Done   time.Duration `json:"done"`
	// OK: f+1 replicas sent matching replies. Height is the block they named.
	OK     bool   `json:"ok"`
	Height uint64 `json:"height,omitempty"`
	// Rounds counts transmissions (1: the first targets answered).
	Rounds int `json:"rounds"`
}

// Latency is the time from issue to acceptance.
func (r Record) Latency() time.Duration { return r.Done - r.Issued }

// Generator drives a load against one chain. Create it with NewGenerator (which signs requests ahead),
// connect it, Start it; Wait or Stop; read Records.
type Generator struct {
	cfg      LoadConfig
	g        *identity.Genesis
	cl       *client.Client
	sessions []*session
	presign  time.Duration
	presignN int

	start  time.Time
	cancel context.CancelFunc
	wg     sync.WaitGroup

	issued, acked, failed, skipped atomic.Int64

	mu       sync.Mutex
	records  []Record
	window   []time.Duration
	started  bool
	onRecord func(Record)
}

// OnRecord sets a function called (from the client goroutines, concurrently) with every request that
// ends. Set it before Start.
func (gen *Generator) OnRecord(fn func(Record)) { gen.onRecord = fn }

// NewGenerator builds the client hosts and sessions and signs requests ahead (see LoadConfig.Presign).
// clientKey nil: a random client key.
func NewGenerator(g *identity.Genesis, bootstrap []string, clientKey *identity.Key, cfg LoadConfig, log *slog.Logger) (*Generator, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if clientKey == nil {
		var err error
		if clientKey, err = identity.GenerateKey(); err != nil {
			return nil, err
		}
	}
	sessions, err := newSessions(clientKey, cfg.Clients, cfg.SessionsPerHost, cfg.Workload, cfg.Seed)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	gen := &Generator{cfg: cfg, g: g, sessions: sessions}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	gen.cl, err = client.New(client.Config{Key: clientKey, Genesis: g, Bootstrap: bootstrap, Sessions: cfg.Clients,
		SessionsPerHost: cfg.SessionsPerHost, RetryTimeout: cfg.RetryTimeout.D(), Logger: log})
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	for _, s := range sessions {
		s.cl = gen.cl
	}
	total := cfg.presignCount()
	per := (total + cfg.Clients - 1) / cfg.Clients
	if total > 0 && cfg.Mode == Open {
		per += per / 10 // open-loop requests do not spread exactly evenly over the sessions
	}
	if gen.presign, err = presign(sessions, per, g.ChainID(), cfg.Workload); err != nil {
		gen.cl.Close()
		return nil, err
	}
	gen.presignN = per * cfg.Clients
	return gen, nil
}

// Config returns the configuration with its defaults (and the seed) filled in.
func (gen *Generator) Config() LoadConfig { return gen.cfg }

// Presigned returns how many requests were signed ahead and how long that took.
func (gen *Generator) Presigned() (int, time.Duration) { return gen.presignN, gen.presign }

// SignedLive returns how many requests were signed while the load ran (the pre-signed ones ran out).
// Call it after the load ended.
func (gen *Generator) SignedLive() int {
	n := 0
	for _, s := range gen.sessions {
		n += s.signedLive
	}
	return n
}

// Connect waits until every client host has its link up to at least want replicas.
func (gen *Generator) Connect(ctx context.Context, want int) error {
	return gen.cl.WaitConnected(ctx, want)
}

// View returns the view the load's clients believe the replicas are in.
func (gen *Generator) View() uint64 { return gen.cl.View() }

// Client returns the generator's client (for its counters).
func (gen *Generator) Client() *client.Client { return gen.cl }

// Start starts the load; it stops issuing requests at its bounds, when Stop is called or when ctx ends.
func (gen *Generator) Start(ctx context.Context) time.Time {
	gen.mu.Lock()
	if gen.started {
		gen.mu.Unlock()
		panic("bench: generator started twice")
	}
	gen.started = true
	gen.mu.Unlock()
	issueCtx, cancel := context.WithCancel(ctx)
	if gen.cfg.Duration > 0 {
		issueCtx, cancel = context.WithTimeout(ctx, gen.cfg.Duration.D())
	}
	gen.cancel = cancel
	gen.start = time.Now()
	var slots chan time.Duration
	if gen.cfg.Mode == Open {
		slots = make(chan time.Duration, max(1024, int(gen.cfg.Rate)))
		gen.wg.Add(1)
		go func() {
			defer gen.wg.Done()
			defer close(slots)
			gen.pace(issueCtx, slots)
		}()
	}
	for _, s := range gen.sessions {
		gen.wg.Add(1)
		go func() {
			defer gen.wg.Done()
			gen.work(issueCtx, ctx, s, slots)
		}()
	}
	return gen.start
}

// StartTime returns when the load started.
func (gen *Generator) StartTime() time.Time { return gen.start }

// pace puts the due time of every request of the open loop into slots; a slot that finds the queue full
// (every client busy and a second's worth of requests waiting) is skipped and counted.
func (gen *Generator) pace(ctx context.Context, slots chan<- time.Duration) {
	interval := time.Duration(float64(time.Second) / gen.cfg.Rate)
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	var k int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Since(gen.start)
		for ; time.Duration(k)*interval <= now; k++ {
			if gen.cfg.Requests > 0 && k >= int64(gen.cfg.Requests) {
				return
			}
			select {
			case slots <- time.Duration(k) * interval:
			default:
				gen.skipped.Add(1)
			}
		}
	}
}

// work is one client's loop. Issuing stops when issueCtx ends; requests in flight then run to their
// own timeout (runCtx bounds them too).
func (gen *Generator) work(issueCtx, runCtx context.Context, s *session, slots <-chan time.Duration) {
	var local []Record
	defer func() {
		gen.mu.Lock()
		gen.records = append(gen.records, local...)
		gen.mu.Unlock()
	}()
	for {
		var due time.Duration
		if slots != nil {
			select {
			case d, ok := <-slots:
				if !ok {
					return
				}
				due = d
			case <-issueCtx.Done():
				return
			}
		}
		if issueCtx.Err() != nil {
			return
		}
		if gen.cfg.Requests > 0 && gen.issued.Add(1) > int64(gen.cfg.Requests) {
			gen.issued.Add(-1)
			return
		} else if gen.cfg.Requests <= 0 {
			gen.issued.Add(1)
		}
		p, err := s.take(gen.g.ChainID(), gen.cfg.Workload)
		if err != nil {
			gen.failed.Add(1)
			return
		}
		sent := time.Since(gen.start)
		if slots == nil {
			due = sent
		}
		rep, err := gen.cl.DoPrepared(runCtx, p.pr, time.Now().Add(gen.cfg.OpTimeout.D()))
		done := time.Since(gen.start)
		r := Record{Session: s.index, TS: p.ts, Key: p.key, Issued: due, Done: done, OK: err == nil}
		if err == nil {
			r.Height, r.Rounds = rep.Seq, rep.Transmissions
		}
		local = append(local, r)
		if gen.onRecord != nil {
			gen.onRecord(r)
		}
		if err == nil {
			gen.acked.Add(1)
			gen.mu.Lock()
			gen.window = append(gen.window, r.Latency())
			gen.mu.Unlock()
		} else {
			gen.failed.Add(1)
		}
	}
}

// StopIssuing stops issuing requests and returns at once; the requests in flight still end.
func (gen *Generator) StopIssuing() {
	if gen.cancel != nil {
		gen.cancel()
	}
}

// Stop stops issuing requests and waits for the ones in flight (each bounded by OpTimeout).
func (gen *Generator) Stop() {
	if gen.cancel != nil {
		gen.cancel()
	}
	gen.wg.Wait()
}

// Wait waits until the load reached its bounds and every request in flight ended.
func (gen *Generator) Wait() { gen.wg.Wait() }

// Close stops the load and the client hosts.
func (gen *Generator) Close() {
	gen.Stop()
	gen.cl.Close()
}

// Counts are the generator's counters.
type Counts struct {
	Issued, Acked, Failed, Skipped int64
}

// Counts returns the counters so far.
func (gen *Generator) Counts() Counts {
	return Counts{Issued: gen.issued.Load(), Acked: gen.acked.Load(), Failed: gen.failed.Load(), Skipped: gen.skipped.Load()}
}

// Interval returns the latencies of the requests accepted since the last call, sorted.
func (gen *Generator) Interval() []time.Duration {
	gen.mu.Lock()
	w := gen.window
	gen.window = nil
	gen.mu.Unlock()
	slices.Sort(w)
	return w
}

// Records returns what became of every request that ended, sorted by completion. Call it after Wait or
// Stop for the complete list.
func (gen *Generator) Records() []Record {
	gen.mu.Lock()
	out := slices.Clone(gen.records)
	gen.mu.Unlock()
	slices.SortFunc(out, func(a, b Record) int { return int(a.Done - b.Done) })
	return out
}

// PublicKey returns the public key of client session i (the Author of its requests).
func (gen *Generator) PublicKey(i int) []byte { return gen.sessions[i].pub }
