package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/testnet"
)

// Config describes one measured run of a load against a target.
type Config struct {
	Load LoadConfig
	// Warmup is left out of the figures: the measurement window starts this long after the load starts.
	Warmup time.Duration
	// SampleEvery is how often the replicas' status and metrics are read for the time series. Default 1s.
	SampleEvery time.Duration
	// Progress, if set, gets a progress line every ProgressEvery (default 1s).
	Progress      io.Writer
	ProgressEvery time.Duration
	// ClientKey signs the requests (sessions are derived from it). Nil: a random key.
	ClientKey *identity.Key
	// ConnectTimeout bounds the wait for the client hosts to reach the replicas. Default 30s.
	ConnectTimeout time.Duration
	// Connect is how many replicas every client host must reach before the load starts. Default: all of
	// them, or, if some are still unreachable after a few seconds (a replica down), a quorum (2f+1).
	Connect int
	Logger  *slog.Logger
}

// Event is something that happened to the network during a run (a fault injected, a replica restarted),
// marked on the plots.
type Event struct {
	// At is the time since the load started.
	At    time.Duration `json:"-"`
	Label string        `json:"label"`
	// Kind is EventFault for what the experiment did, EventView for a view change the replicas reported
	// (found by sampling their status, so up to a sampling interval late).
	Kind string `json:"kind,omitempty"`
}

// Event kinds.
const (
	EventFault = ""
	EventView  = "view"
)

type eventJSON struct {
	AtS   float64 `json:"at_s"`
	Label string  `json:"label"`
	Kind  string  `json:"kind,omitempty"`
}

// MarshalJSON writes the time in seconds.
func (e Event) MarshalJSON() ([]byte, error) {
	return json.Marshal(eventJSON{AtS: e.At.Seconds(), Label: e.Label, Kind: e.Kind})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (e *Event) UnmarshalJSON(b []byte) error {
	var j eventJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	e.At, e.Label, e.Kind = time.Duration(j.AtS*float64(time.Second)), j.Label, j.Kind
	return nil
}

// snapshot is the state of every replica at one moment.
type snapshot struct {
	at      time.Duration     // since the load started
	metrics []testnet.Metrics // nil entries for replicas that did not answer
	cpu     []float64         // -1: unknown
	tcp     map[int]map[string]tcpCounters
	netns   map[int]uint64 // pid -> bytes sent by its network namespace (containers)
	pids    []int
	self    float64 // this process's CPU time
	tcpErr  error
}

// sample is one point of the replicas' time series.
type sample struct {
	at       time.Duration
	executed []float64 // p2pbft_requests_executed_total per replica, -1 if unknown
	height   []uint64
	view     []uint64
	mode     []string
}

// Run is a load in progress against a target. Begin starts it; Mark records events; End finishes it and
// computes the Result.
type Run struct {
	cfg    Config
	t      *Target
	gen    *Generator
	start  time.Time
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	events   []Event
	samples  []sample
	baseline *snapshot
	final    *snapshot
	issueEnd time.Duration
	loadDone chan struct{}
}

// Begin builds the load (signing requests ahead), connects its clients to the replicas, and starts it.
func Begin(ctx context.Context, t *Target, cfg Config) (*Run, error) {
	if cfg.SampleEvery <= 0 {
		cfg.SampleEvery = time.Second
	}
	if cfg.ProgressEvery <= 0 {
		cfg.ProgressEvery = time.Second
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 30 * time.Second
	}
	quorumFallback := cfg.Connect <= 0
	if cfg.Connect <= 0 {
		cfg.Connect = t.N()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	gen, err := NewGenerator(t.Genesis, t.Bootstrap, cfg.ClientKey, cfg.Load, cfg.Logger)
	if err != nil {
		return nil, err
	}
	cfg.Load = gen.Config()
	if cfg.Progress != nil {
		n, d := gen.Presigned()
		if n > 0 {
			fmt.Fprintf(cfg.Progress, "pre-signed %d requests in %s (%d clients)\n", n, d.Round(time.Millisecond), cfg.Load.Clients)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	err = connect(cctx, gen, cfg, t, quorumFallback)
	cancel()
	if err != nil {
		gen.Close()
		return nil, err
	}
	r := &Run{cfg: cfg, t: t, gen: gen, loadDone: make(chan struct{})}
	r.ctx, r.cancel = context.WithCancel(ctx)
	base := r.snapshot(r.ctx, 0)
	r.start = gen.Start(r.ctx)
	if cfg.Warmup <= 0 {
		base.at = 0
		r.baseline = base
	}
	r.wg.Add(2)
	go func() {
		defer r.wg.Done()
		r.observe()
	}()
	go func() {
		defer r.wg.Done()
		gen.Wait()
		r.mu.Lock()
		r.issueEnd = time.Since(r.start)
		r.mu.Unlock()
		close(r.loadDone)
	}()
	return r, nil
}

// Generator returns the run's load generator.
func (r *Run) Generator() *Generator { return r.gen }

// Target returns the run's target.
func (r *Run) Target() *Target { return r.t }

// Elapsed returns the time since the load started.
func (r *Run) Elapsed() time.Duration { return time.Since(r.start) }

// Mark records an event at the current time.
func (r *Run) Mark(label string) Event {
	e := Event{At: time.Since(r.start), Label: label}
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	return e
}

// LoadDone is closed when the load has issued its last request and every request ended.
func (r *Run) LoadDone() <-chan struct{} { return r.loadDone }

// observe samples the replicas, takes the baseline after the warmup and prints progress, until the load
// ends (or End stops it).
func (r *Run) observe() {
	sampleT := time.NewTicker(r.cfg.SampleEvery)
	defer sampleT.Stop()
	progT := time.NewTicker(r.cfg.ProgressEvery)
	defer progT.Stop()
	var warm <-chan time.Time
	if r.cfg.Warmup > 0 {
		wt := time.NewTimer(r.cfg.Warmup)
		defer wt.Stop()
		warm = wt.C
	}
	var durEnd <-chan time.Time
	if d := r.cfg.Load.Duration.D(); d > 0 {
		dt := time.NewTimer(d)
		defer dt.Stop()
		durEnd = dt.C
	}
	var prevAcked int64
	prevAt := time.Now()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.loadDone:
			r.takeFinal()
			return
		case <-durEnd:
			// Issuing stops now; requests in flight still end, but the window closes here.
			r.takeFinal()
			durEnd = nil
		case <-warm:
			s := r.snapshot(r.ctx, time.Since(r.start))
			r.mu.Lock()
			r.baseline = s
			r.mu.Unlock()
		case <-sampleT.C:
			r.sample()
		case <-progT.C:
			if r.cfg.Progress == nil {
				continue
			}
			c := r.gen.Counts()
			now := time.Now()
			lat := r.gen.Interval()
			rate := float64(c.Acked-prevAcked) / now.Sub(prevAt).Seconds()
			prevAcked, prevAt = c.Acked, now
			line := fmt.Sprintf("[%s] issued %d  acked %d (%.0f/s)  failed %d", fmtClock(time.Since(r.start)), c.Issued, c.Acked, rate, c.Failed)
			if c.Skipped > 0 {
				line += fmt.Sprintf("  skipped %d", c.Skipped)
			}
			if len(lat) > 0 {
				line += fmt.Sprintf("  p50 %s p99 %s", fmtMs(percentile(lat, 0.5)), fmtMs(percentile(lat, 0.99)))
			}
			r.mu.Lock()
			if n := len(r.samples); n > 0 {
				s := r.samples[n-1]
				var h, v uint64
				for i := range s.height {
					h, v = max(h, s.height[i]), max(v, s.view[i])
				}
				line += fmt.Sprintf("  | height %d view %d", h, v)
			}
			r.mu.Unlock()
			fmt.Fprintln(r.cfg.Progress, line)
		}
	}
}

func (r *Run) takeFinal() {
	r.mu.Lock()
	done := r.final != nil
	r.mu.Unlock()
	if done {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := r.snapshot(ctx, time.Since(r.start))
	r.mu.Lock()
	if r.final == nil {
		r.final = s
	}
	r.mu.Unlock()
}

// sample reads every replica's status and executed-requests counter.
func (r *Run) sample() {
	ctx, cancel := context.WithTimeout(r.ctx, 2*time.Second)
	defer cancel()
	n := len(r.t.Nodes)
	s := sample{at: time.Since(r.start), executed: make([]float64, n), height: make([]uint64, n), view: make([]uint64, n), mode: make([]string, n)}
	var wg sync.WaitGroup
	for i := range n {
		s.executed[i] = -1
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st, err := r.t.Status(ctx, i); err == nil {
				s.height[i], s.view[i], s.mode[i] = st.Height, st.View, st.Mode
			}
			if m, err := r.t.Metrics(ctx, i); err == nil && m.Has("p2pbft_requests_executed_total") {
				s.executed[i] = m["p2pbft_requests_executed_total"]
			}
		}()
	}
	wg.Wait()
	r.mu.Lock()
	r.samples = append(r.samples, s)
	r.mu.Unlock()
}

// snapshot reads every replica's metrics and CPU time and the replicas' TCP counters.
func (r *Run) snapshot(ctx context.Context, at time.Duration) *snapshot {
	n := len(r.t.Nodes)
	s := &snapshot{at: at, metrics: make([]testnet.Metrics, n), cpu: make([]float64, n), pids: r.t.PIDs()}
	var wg sync.WaitGroup
	for i := range n {
		s.cpu[i] = -1
		wg.Add(1)
		go func() {
			defer wg.Done()
			if m, err := r.t.Metrics(ctx, i); err == nil {
				s.metrics[i] = m
			}
		}()
	}
	wg.Wait()
	for i, pid := range s.pids {
		if pid > 0 {
			if c, err := ProcessCPU(pid); err == nil {
				s.cpu[i] = c
			}
		} else if m := s.metrics[i]; m != nil && m.Has("process_cpu_seconds_total") {
			s.cpu[i] = m["process_cpu_seconds_total"]
		}
	}
	s.tcp, s.tcpErr = TCPBytes(s.pids)
	s.netns = make(map[int]uint64)
	for _, pid := range s.pids {
		if tx, ok := NetnsTXBytes(pid); pid > 0 && ok {
			s.netns[pid] = tx
		}
	}
	s.self, _ = ProcessCPU(os.Getpid())
	return s
}

// Stop stops issuing requests (the requests in flight still end).
func (r *Run) Stop() { r.gen.StopIssuing() }

// End waits for the load to end (Stop ends it early), reads the final figures, stops the load's clients
// and returns the result.
func (r *Run) End() *Result {
	<-r.loadDone
	r.takeFinal()
	r.cancel()
	r.wg.Wait()
	r.gen.Close()
	return r.result()
}

// Measure runs a load against a target from start to end and returns the result.
func Measure(ctx context.Context, t *Target, cfg Config) (*Result, error) {
	r, err := Begin(ctx, t, cfg)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, r.Stop)
	defer stop()
	return r.End(), nil
}

// allLinkedWait is how long a run waits for links to every replica before it settles for a quorum.
const allLinkedWait = 5 * time.Second

// connect waits until the load's client hosts reach cfg.Connect replicas. With quorumFallback (the
// default), a run against a network with replicas down starts once a quorum is linked, saying so: the
// replicas that are up commit without the others.
func connect(ctx context.Context, gen *Generator, cfg Config, t *Target, quorumFallback bool) error {
	if !quorumFallback {
		return gen.Connect(ctx, cfg.Connect)
	}
	actx, cancel := context.WithTimeout(ctx, allLinkedWait)
	err := gen.Connect(actx, t.N())
	cancel()
	if err == nil || ctx.Err() != nil {
		return err
	}
	q := pbft.Quorum(t.N()) // a quorum
	if err := gen.Connect(ctx, q); err != nil {
		return err
	}
	if cfg.Progress != nil {
		fmt.Fprintf(cfg.Progress, "warning: not every replica is reachable after %s; the load runs with a quorum (%d of %d)\n", allLinkedWait, q, t.N())
	}
	cfg.Logger.Warn("not every replica is reachable; the load runs with a quorum", "quorum", q, "n", t.N())
	return nil
}
