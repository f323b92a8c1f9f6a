package scenario

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/p2pbft/p2pbft/bench"
	"github.com/p2pbft/p2pbft/internal/timeline"
	"github.com/p2pbft/p2pbft/node/config"
)

// Options say how to run a scenario.
type Options struct {
	// Binary is the p2pbft executable the replicas run. Required.
	Binary string
	// Dir is the result folder, created (it must not exist or be empty).
	Dir string
	// Seed, if not 0, overrides the scenario's seed.
	Seed int64
	// Keep keeps the replicas' folder (keys, data, logs) in Dir/testnet; otherwise only the logs are kept.
	Keep bool
	// Progress, if set, gets what happens as it happens.
	Progress io.Writer
	// Version is the binary's version, recorded in the result.
	Version string
	// Rerun is the command that runs the scenario again from its result folder, recorded in the result;
	// "{seed}" in it becomes the seed used.
	Rerun string
	// Logger receives the load generator's logs. Default: discarded.
	Logger *slog.Logger
	// Docker runs the replicas as docker containers on a private docker network instead of local
	// processes (Binary must be static: the image is built from it, FROM scratch). Partitions then
	// disconnect containers from the network.
	Docker bool
	// DockerImage is the image name to build and run. Default "p2pbft:scenario".
	DockerImage string
}

// Outcome is a scenario run's result: written to the result folder as run.json.
type Outcome struct {
	Name     string    `json:"name"`
	Form     string    `json:"form"` // "full" or "short"
	Seed     int64     `json:"seed"`
	Version  string    `json:"version,omitempty"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Pass     bool      `json:"pass"`
	Rerun    string    `json:"rerun,omitempty"`
	// Checks are the verdicts, in order; Steps what each event did and how the network recovered.
	Checks []Check `json:"checks"`
	Steps  []Step  `json:"steps"`
	// Figures are the load's measurements over the run (the bench result, with the events marked).
	Figures *bench.Result `json:"figures,omitempty"`
	// Network is the emulated network of a scenario with [network]: hosts, regions, the latency matrix,
	// and what every link did to its packets.
	Network *NetworkRecord `json:"network,omitempty"`
}

// Check is one verdict.
type Check struct {
	Name   string `json:"name"`
	Pass   bool   `json:"pass"`
	Detail string `json:"detail"`
}

// Step is what one event did.
type Step struct {
	Index   int      `json:"index"`
	Action  string   `json:"action"`
	Targets []string `json:"targets,omitempty"`
	// Label is how the plot marks the event.
	Label string `json:"label,omitempty"`
	// AtS is when the action was applied, in seconds since the load started.
	AtS float64 `json:"at_s"`
	// ResumeMs: time from the action to the first acceptance of a request issued after it (-1: not seen).
	ResumeMs float64 `json:"resume_ms"`
	// ViewChangeMs: for an action on the primary, time to the first block committed in a later view.
	ViewChangeMs float64 `json:"view_change_ms,omitempty"`
	// ActMs is how long the action itself took (a start: until the replica's API answered).
	ActMs float64 `json:"act_ms"`
	// CatchUpMs: for start, restart, resume and heal, time from the beginning of the action until the
	// targets reached the height the others had once it was done.
	CatchUpMs float64 `json:"catch_up_ms,omitempty"`
	CatchUpTo uint64  `json:"catch_up_height,omitempty"`
	Error     string  `json:"error,omitempty"`
}

// runner is one scenario run in progress.
type runner struct {
	s    *Scenario
	opts Options
	t    *bench.Target
	cl   cluster
	run  *bench.Run
	rng  *rand.Rand
	out  *Outcome

	mu       sync.Mutex
	down     map[int]bool   // killed or stopped
	paused   map[int]bool   // SIGSTOP
	byz      map[int]string // Byzantine replicas and their modes
	args     map[int][]string
	previous []int

	// trace is the replicas' consensus records at the end of the run, for the result folder.
	trace *timeline.Trace

	accepted atomic.Int64
	wmu      sync.Mutex
	waiters  []*resumeWaiter
}

type resumeWaiter struct {
	since time.Duration
	done  chan time.Duration
	fired bool
}

func (r *runner) say(format string, args ...any) {
	if r.opts.Progress != nil {
		fmt.Fprintf(r.opts.Progress, format+"\n", args...)
	}
}

// Run runs a scenario: starts its network, drives its load, applies its timeline with its checks, checks
// the chains, and writes the result folder. The error is for a run that could not be carried out; a
// scenario whose checks fail returns an Outcome with Pass false.
func Run(ctx context.Context, s *Scenario, opts Options) (*Outcome, error) {
	if opts.Binary == "" {
		return nil, errors.New("scenario: no p2pbft binary")
	}
	if opts.Dir == "" {
		return nil, errors.New("scenario: no result folder")
	}
	if ents, err := os.ReadDir(opts.Dir); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("scenario: result folder %s is not empty", opts.Dir)
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	seed := s.Seed
	if opts.Seed != 0 {
		seed = opts.Seed
	}
	if seed == 0 {
		seed = rand.Int64N(1<<31) + 1
	}
	form := "full"
	if s.short {
		form = "short"
	}
	out := &Outcome{Name: s.Name, Form: form, Seed: seed, Version: opts.Version, Started: time.Now().UTC(),
		Rerun: strings.ReplaceAll(opts.Rerun, "{seed}", strconv.FormatInt(seed, 10))}
	r := &runner{s: s, opts: opts, out: out, rng: rand.New(rand.NewPCG(uint64(seed), 0x5ce4a210)),
		down: map[int]bool{}, paused: map[int]bool{}, byz: map[int]string{}, args: map[int][]string{}}
	for name, mode := range s.Byzantine {
		i, _ := s.replica(name)
		r.byz[i] = mode
		r.args[i] = byzantineArgs(mode)
	}
	err := r.execute(ctx, seed)
	out.Finished = time.Now().UTC()
	out.Pass = err == nil && len(out.Checks) > 0
	for _, c := range out.Checks {
		out.Pass = out.Pass && c.Pass
	}
	if werr := r.writeResults(err); werr != nil && err == nil {
		err = werr
	}
	return out, err
}

// defaultPresign is how many requests a scenario signs before its load starts, unless [load] presign says.
const defaultPresign = 20000

// byzantineArgs are the `p2pbft start` arguments that make a replica Byzantine.
func byzantineArgs(mode string) []string {
	return []string{"--experiment-byzantine", "--byzantine-mode", mode}
}

func (r *runner) check(name string, pass bool, format string, args ...any) bool {
	c := Check{Name: name, Pass: pass, Detail: fmt.Sprintf(format, args...)}
	r.out.Checks = append(r.out.Checks, c)
	verdict := "ok  "
	if !pass {
		verdict = "FAIL"
	}
	r.say("check %s %s: %s", verdict, name, c.Detail)
	return pass
}

func (r *runner) execute(ctx context.Context, seed int64) error {
	s := r.s
	adminAPI := false
	for _, e := range s.Events {
		if e.Action == ActionPartition || e.Action == ActionHeal {
			adminAPI = true
		}
	}
	netDir := filepath.Join(r.opts.Dir, "testnet")
	configure := func(_ int, c *config.Config) {
		s.Nodes.Apply(c)
		// Partitions go through the admin API of local processes; containers and [network] cut links.
		c.Experiment.AdminAPI = adminAPI && !r.opts.Docker && s.Network == nil
	}
	args := func(i int) []string {
		r.mu.Lock()
		defer r.mu.Unlock()
		return slices.Clone(r.args[i])
	}
	where := "local processes"
	switch {
	case r.opts.Docker && s.Network != nil:
		return errors.New("scenario: [network] runs the replicas on network namespaces of this machine, with emulated links; it does not run in docker (drop --docker)")
	case r.opts.Docker:
		where = "docker containers"
	case s.Network != nil:
		where = fmt.Sprintf("processes on hosts of their own in regions %s, load from %s", strings.Join(sortedRegions(s.Network.Regions), ", "), s.Network.Client)
	}
	r.say("scenario %s (%s form, seed %d): %d replicas as %s in %s", s.Name, r.out.Form, seed, s.N, where, netDir)
	switch {
	case s.Network != nil:
		t, nc, err := startNetwork(ctx, s, r.opts.Binary, netDir, seed, configure, args)
		if err != nil {
			return fmt.Errorf("scenario: start the network: %w", err)
		}
		r.t, r.cl = t, nc
		r.say("network: %s", nc.describe())
		for _, p := range nc.record().Matrix {
			r.say("  %s -> %s: %s", p.From, p.To, p.Props)
		}
	case r.opts.Docker:
		t, d, err := bench.StartDocker(ctx, bench.DockerConfig{Dir: netDir, N: s.N, Image: r.opts.DockerImage,
			Binary: r.opts.Binary, Configure: configure, Args: args})
		if err != nil {
			return fmt.Errorf("scenario: start the network: %w", err)
		}
		r.t, r.cl = t, dockerCluster{t: t, d: d}
	default:
		t, err := bench.StartLocal(ctx, bench.LocalConfig{Dir: netDir, N: s.N, Binary: r.opts.Binary, Configure: configure, Args: args})
		if err != nil {
			return fmt.Errorf("scenario: start the network: %w", err)
		}
		r.t, r.cl = t, localCluster{t: t}
	}
	t := r.t
	defer func() {
		// Resume paused replicas so that they stop cleanly.
		r.mu.Lock()
		for i := range r.paused {
			r.cl.resume(context.Background(), i)
		}
		r.mu.Unlock()
		if err := r.cl.close(); err != nil {
			r.say("stop the replicas: %v", err)
		}
		if nc, ok := r.cl.(*netCluster); ok {
			r.out.Network = nc.final
		}
	}()

	load := s.Load
	load.Seed = seed
	if load.Presign == 0 {
		// A scenario's length is not known ahead: sign a few seconds' worth, the rest as they are sent.
		load.Presign = defaultPresign
	}
	if load.OpTimeout == 0 {
		// A request in flight across a fault may wait for a view change or two (with their backoff) on
		// a loaded machine: give up on it only after a minute.
		load.OpTimeout = Duration(time.Minute)
	}
	cfg := bench.Config{Load: load, Warmup: 0, Logger: r.opts.Logger, ProgressEvery: 2 * time.Second, Progress: r.opts.Progress}
	run, err := bench.Begin(ctx, t, cfg)
	if err != nil {
		return fmt.Errorf("scenario: start the load: %w", err)
	}
	r.run = run
	run.Generator().OnRecord(r.onRecord)
	timelineErr := r.timeline(ctx)
	if timelineErr == nil {
		r.sleep(ctx, s.Tail.D())
	}
	run.Stop()
	r.say("[%s] load stopped; waiting for the requests in flight", r.clock())
	res := run.End()
	res.Version = r.opts.Version
	r.out.Figures = res
	if timelineErr != nil {
		r.check("timeline", false, "%v", timelineErr)
	} else {
		r.check("timeline", true, "%d events applied, progress resumed after each within its bound", len(s.Events))
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	r.check("requests", res.Failed <= int64(s.Expect.MaxFailed) && res.Acked >= int64(s.Expect.MinAccepted),
		"%d accepted, %d failed (at most %d may fail, at least %d must be accepted); accepted %.0f/s, latency p50 %.1f ms p99 %.1f ms max %.1f ms",
		res.Acked, res.Failed, s.Expect.MaxFailed, s.Expect.MinAccepted, res.Throughput, res.Latency.P50, res.Latency.P99, res.Latency.Max)
	r.checkDegradation(run.Generator().Records())
	r.finalChecks(ctx, res)
	r.collectTrace(ctx)
	return nil
}

// collectTrace fetches the replicas' trace records while they still run. A replica that is down (or
// restarted, and so without the earlier records) only leaves its lanes empty.
func (r *runner) collectTrace(ctx context.Context) {
	var urls []string
	for _, n := range r.t.Snapshot() {
		urls = append(urls, n.API)
	}
	tr, err := timeline.Collect(ctx, urls, 20*time.Second)
	if err != nil {
		r.say("trace records: %v", err)
		return
	}
	r.trace = tr
}

func (r *runner) clock() string {
	if r.run == nil {
		return "--:--"
	}
	d := r.run.Elapsed()
	return fmt.Sprintf("%02d:%05.2f", int(d.Minutes()), d.Seconds()-60*float64(int(d.Minutes())))
}

func (r *runner) sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// onRecord counts accepted requests and wakes the waiters for progress after an event.
func (r *runner) onRecord(rec bench.Record) {
	if !rec.OK {
		return
	}
	r.accepted.Add(1)
	r.wmu.Lock()
	for _, w := range r.waiters {
		if !w.fired && rec.Issued >= w.since {
			w.fired = true
			w.done <- rec.Done
		}
	}
	r.wmu.Unlock()
}

func (r *runner) watchResume(since time.Duration) *resumeWaiter {
	w := &resumeWaiter{since: since, done: make(chan time.Duration, 1)}
	r.wmu.Lock()
	r.waiters = append(r.waiters, w)
	r.wmu.Unlock()
	return w
}

// timeline applies the events in order.
func (r *runner) timeline(ctx context.Context) error {
	r.sleep(ctx, r.s.Warmup.D())
	for k, e := range r.s.Events {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := r.waitFor(ctx, k, e); err != nil {
			return err
		}
		step, err := r.apply(ctx, k, e)
		r.out.Steps = append(r.out.Steps, step)
		if err != nil {
			return fmt.Errorf("events[%d] (%s): %w", k, e.Action, err)
		}
	}
	return nil
}

// waitFor waits for an event's after and after_requests.
func (r *runner) waitFor(ctx context.Context, k int, e Event) error {
	base := r.accepted.Load()
	r.sleep(ctx, e.After.D())
	if e.AfterRequests <= 0 {
		return nil
	}
	r.say("[%s] waiting for %d more accepted requests", r.clock(), e.AfterRequests)
	// Progress must not stall for longer than the resume bound meanwhile.
	stall := r.s.Expect.ResumeWithin.D()
	last, lastAt := r.accepted.Load(), time.Now()
	tk := time.NewTicker(20 * time.Millisecond)
	defer tk.Stop()
	for {
		n := r.accepted.Load()
		if n-base >= int64(e.AfterRequests) {
			return nil
		}
		if n != last {
			last, lastAt = n, time.Now()
		} else if time.Since(lastAt) > stall {
			return fmt.Errorf("events[%d]: waiting for %d more accepted requests: none accepted for %s (%d of %d)", k, e.AfterRequests, stall, n-base, e.AfterRequests)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.run.LoadDone():
			return fmt.Errorf("events[%d]: the load ended (its duration bound) while waiting for %d more accepted requests", k, e.AfterRequests)
		case <-tk.C:
		}
	}
}

// statuses reads the status of every replica that runs and is not paused.
func (r *runner) statuses(ctx context.Context) map[int]*statusView {
	r.mu.Lock()
	var live []int
	for i := range r.s.N {
		if !r.down[i] && !r.paused[i] {
			live = append(live, i)
		}
	}
	r.mu.Unlock()
	out := make(map[int]*statusView)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, i := range live {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			st, err := r.t.Status(sctx, i)
			if err == nil {
				mu.Lock()
				out[i] = &statusView{view: st.View, height: st.Height, mode: st.Mode}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

type statusView struct {
	view, height uint64
	mode         string
}

// currentView is the highest view a correct live replica reports (0 if none answers).
func (r *runner) currentView(ctx context.Context) uint64 {
	var v uint64
	for i, st := range r.statuses(ctx) {
		if _, b := r.isByz(i); !b {
			v = max(v, st.view)
		}
	}
	return v
}

func (r *runner) isByz(i int) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.byz[i]
	return m, ok
}

// resolve turns an event's target into replica indexes.
func (r *runner) resolve(ctx context.Context, e Event) ([]int, error) {
	names, _ := targetNames(e.Target)
	count, _ := r.s.count(e.Count)
	r.mu.Lock()
	live := func(i int) bool { return !r.down[i] && !r.paused[i] }
	prev := slices.Clone(r.previous)
	r.mu.Unlock()
	var out []int
	add := func(i int) {
		if !slices.Contains(out, i) {
			out = append(out, i)
		}
	}
	for _, name := range names {
		switch name {
		case "primary":
			add(int(r.currentView(ctx) % uint64(r.s.N)))
		case "backup", "random":
			primary := int(r.currentView(ctx) % uint64(r.s.N))
			r.mu.Lock()
			var pool []int
			for i := range r.s.N {
				if live(i) && (name == "random" || i != primary) && !slices.Contains(out, i) {
					pool = append(pool, i)
				}
			}
			r.mu.Unlock()
			r.rng.Shuffle(len(pool), func(a, b int) { pool[a], pool[b] = pool[b], pool[a] })
			if len(pool) < count {
				return nil, fmt.Errorf("target %s: %d wanted, %d available", name, count, len(pool))
			}
			for _, i := range pool[:count] {
				add(i)
			}
		case "all":
			for i := range r.s.N {
				add(i)
			}
		case "previous":
			if len(prev) == 0 {
				return nil, errors.New("target previous: the previous event had no target")
			}
			for _, i := range prev {
				add(i)
			}
		default:
			i, err := r.s.replica(name)
			if err != nil {
				return nil, err
			}
			add(i)
		}
	}
	sort.Ints(out)
	return out, nil
}

func (r *runner) names(is []int) []string {
	out := make([]string, len(is))
	for k, i := range is {
		out[k] = r.t.Nodes[i].Name
	}
	return out
}

// apply carries out one event and its checks.
func (r *runner) apply(ctx context.Context, k int, e Event) (Step, error) {
	step := Step{Index: k, Action: e.Action, ResumeMs: -1}
	targets, err := r.resolve(ctx, e)
	if err != nil {
		return step, err
	}
	view := r.currentView(ctx)
	primary := int(view % uint64(r.s.N))
	var linkPairs [][2]int
	if e.Action == ActionLink {
		// The links of the current primary, if the event names it; the targets are the senders.
		if linkPairs, err = r.s.Network.pairs(r.s, e.linkSpec(), primary); err != nil {
			return step, err
		}
		for _, pr := range linkPairs {
			if pr[0] < r.s.N && !slices.Contains(targets, pr[0]) {
				targets = append(targets, pr[0])
			}
		}
		sort.Ints(targets)
	}
	step.Targets = r.names(targets)
	onPrimary := slices.Contains(targets, primary)
	label := e.Action
	if len(targets) > 0 {
		label += " " + strings.Join(step.Targets, ",")
	}
	if onPrimary && e.Action != ActionStart {
		label += " (primary)"
	}
	if e.Action == ActionPartition {
		label = r.partitionLabel(e, targets)
	}
	if e.Action == ActionByzantine {
		label += " as " + e.Mode
	}
	if e.Action == ActionLink {
		label = linkLabel(e, r.t.Nodes[primary].Name)
	}
	actStart := time.Now()
	if err := r.act(ctx, e, targets, linkPairs); err != nil {
		return step, err
	}
	step.ActMs = float64(time.Since(actStart)) / float64(time.Millisecond)
	ev := r.run.Mark(label)
	step.Label = label
	// What the others have once the action is done: the height a returning replica must reach.
	var others uint64
	for i, st := range r.statuses(ctx) {
		if _, b := r.isByz(i); !b && !slices.Contains(targets, i) {
			others = max(others, st.height)
		}
	}
	step.AtS = ev.At.Seconds()
	r.say("[%s] %s", r.clock(), label)
	r.mu.Lock()
	r.previous = targets
	r.mu.Unlock()

	// Checks, concurrently: progress resumes; the view changes (if the primary was hit); the targets
	// catch up (if they came back).
	resumeBound := r.s.Expect.ResumeWithin.D()
	if e.ResumeWithin != nil {
		resumeBound = e.ResumeWithin.D()
	}
	catchBound := r.s.Expect.CatchUpWithin.D()
	if e.CatchUpWithin != nil {
		catchBound = e.CatchUpWithin.D()
	}
	var wg sync.WaitGroup
	var errs []error
	var emu sync.Mutex
	fail := func(err error) {
		emu.Lock()
		errs = append(errs, err)
		emu.Unlock()
	}
	w := r.watchResume(ev.At)
	if resumeBound > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTimer(resumeBound)
			defer t.Stop()
			select {
			case done := <-w.done:
				step.ResumeMs = float64(done-ev.At) / float64(time.Millisecond)
				r.say("[%s]   progress resumed %.2fs after %s (bound %s)", r.clock(), (done - ev.At).Seconds(), e.Action, resumeBound)
			case <-t.C:
				fail(fmt.Errorf("no request issued after %s was accepted within %s", label, resumeBound))
			case <-ctx.Done():
				fail(ctx.Err())
			}
		}()
	}
	changesView := onPrimary && (e.Action == ActionKill || e.Action == ActionStop || e.Action == ActionPause ||
		e.Action == ActionPartition || e.Action == ActionByzantine || e.Action == ActionRestart ||
		(e.Action == ActionLink && mutesReplica(linkPairs, e.LinkSettings, primary, r.s.N)))
	if changesView {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bound := max(resumeBound, 30*time.Second)
			d, err := r.waitViewCommit(ctx, view, targets, bound)
			if err != nil {
				r.say("[%s]   no block committed in a view above %d within %s", r.clock(), view, bound)
				return // informative: progress is what the scenario bounds
			}
			step.ViewChangeMs = float64(d) / float64(time.Millisecond)
			r.say("[%s]   first block in a view above %d %.2fs after %s", r.clock(), view, d.Seconds(), e.Action)
		}()
	}
	returning := e.Action == ActionStart || e.Action == ActionRestart || e.Action == ActionResume || e.Action == ActionHeal
	if returning && catchBound > 0 && len(targets) > 0 {
		step.CatchUpTo = others
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.waitCatchUp(ctx, targets, others, catchBound); err != nil {
				fail(err)
				return
			}
			// From the moment the action began: starting the process is part of catching up.
			d := time.Since(actStart)
			step.CatchUpMs = float64(d) / float64(time.Millisecond)
			r.say("[%s]   %s reached height %d %.2fs after the %s began (bound %s)", r.clock(), strings.Join(step.Targets, ","), others, d.Seconds(), e.Action, catchBound)
		}()
	}
	wg.Wait()
	r.wmu.Lock()
	r.waiters = slices.DeleteFunc(r.waiters, func(x *resumeWaiter) bool { return x == w })
	r.wmu.Unlock()
	if err := errors.Join(errs...); err != nil {
		step.Error = err.Error()
		return step, err
	}
	return step, nil
}

func (r *runner) partitionLabel(e Event, targets []int) string {
	if len(e.Groups) == 0 {
		return "partition: isolate " + strings.Join(r.names(targets), ",")
	}
	var gs []string
	for _, g := range e.Groups {
		gs = append(gs, "{"+strings.Join(g, ",")+"}")
	}
	return "partition " + strings.Join(gs, " | ")
}

// mutesReplica reports whether a link event cuts every link from replica i to the other replicas.
func mutesReplica(pairs [][2]int, ls LinkSettings, i, n int) bool {
	if ls.Cut == nil || !*ls.Cut {
		return false
	}
	cut := 0
	for _, pr := range pairs {
		if pr[0] == i && pr[1] < n {
			cut++
		}
	}
	return cut == n-1
}

// act applies an event's action to its targets (for a link event, to the links between linkPairs).
func (r *runner) act(ctx context.Context, e Event, targets []int, linkPairs [][2]int) error {
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for _, i := range targets {
		r.mu.Lock()
		down, paused := r.down[i], r.paused[i]
		r.mu.Unlock()
		name := r.t.Nodes[i].Name
		var err error
		switch e.Action {
		case ActionKill, ActionStop:
			if down {
				return fmt.Errorf("%s: %s does not run", e.Action, name)
			}
			if e.Action == ActionKill {
				err = r.cl.kill(sctx, i)
			} else {
				err = r.cl.stop(sctx, i)
			}
			if err == nil {
				r.mu.Lock()
				r.down[i], r.paused[i] = true, false
				r.mu.Unlock()
			}
		case ActionStart:
			if !down {
				return fmt.Errorf("start: %s runs already", name)
			}
			if err = r.cl.start(sctx, i); err == nil {
				r.mu.Lock()
				r.down[i] = false
				r.mu.Unlock()
			}
		case ActionRestart, ActionByzantine:
			if e.Action == ActionByzantine {
				r.mu.Lock()
				r.byz[i] = e.Mode
				r.args[i] = byzantineArgs(e.Mode)
				r.mu.Unlock()
			}
			if paused {
				if err = r.cl.resume(sctx, i); err != nil {
					return err
				}
			}
			if down {
				err = r.cl.start(sctx, i)
			} else {
				err = r.cl.restart(sctx, i)
			}
			if err == nil {
				r.mu.Lock()
				r.down[i], r.paused[i] = false, false
				r.mu.Unlock()
			}
		case ActionPause:
			if down || paused {
				return fmt.Errorf("pause: %s does not run or is paused", name)
			}
			if err = r.cl.pause(sctx, i); err == nil {
				r.mu.Lock()
				r.paused[i] = true
				r.mu.Unlock()
			}
		case ActionResume:
			if !paused {
				return fmt.Errorf("resume: %s is not paused", name)
			}
			if err = r.cl.resume(sctx, i); err == nil {
				r.mu.Lock()
				r.paused[i] = false
				r.mu.Unlock()
			}
		}
		if err != nil {
			return err
		}
	}
	live := func(i int) bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return !r.down[i] && !r.paused[i]
	}
	switch e.Action {
	case ActionPartition:
		return r.cl.partition(sctx, r.sides(e, targets), live)
	case ActionHeal:
		return r.cl.heal(sctx, live)
	case ActionLink, ActionHealLinks:
		nc, ok := r.cl.(*netCluster)
		if !ok {
			return fmt.Errorf("%s: the replicas are not on emulated links (no [network])", e.Action)
		}
		if e.Action == ActionLink {
			return nc.link(linkPairs, e.LinkSettings)
		}
		return nc.healLinks()
	}
	r.t.PIDs() // the processes observed
	return nil
}

// sides gives every replica its side of a partition: the groups, then one side for the replicas no
// group lists; without groups, the targets against the others.
func (r *runner) sides(e Event, targets []int) []int {
	side := make([]int, r.s.N)
	if len(e.Groups) == 0 {
		for _, i := range targets {
			side[i] = 1
		}
		return side
	}
	for i := range side {
		side[i] = len(e.Groups)
	}
	for g, names := range e.Groups {
		for _, name := range names {
			i, _ := r.s.replica(name)
			side[i] = g
		}
	}
	return side
}

// waitViewCommit waits until a correct live replica other than the targets holds a block committed in a
// view above view.
func (r *runner) waitViewCommit(ctx context.Context, view uint64, targets []int, bound time.Duration) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	tk := time.NewTicker(25 * time.Millisecond)
	defer tk.Stop()
	for {
		r.mu.Lock()
		var live []int
		for i := range r.s.N {
			_, b := r.byz[i]
			if !r.down[i] && !r.paused[i] && !b && !slices.Contains(targets, i) {
				live = append(live, i)
			}
		}
		r.mu.Unlock()
		for _, i := range live {
			bctx, bcancel := context.WithTimeout(ctx, 2*time.Second)
			blk, err := r.t.Block(bctx, i, 0)
			bcancel()
			if err == nil && blk.View > view {
				return time.Since(start), nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-tk.C:
		}
	}
}

// waitCatchUp waits until every target reports a height of at least h.
func (r *runner) waitCatchUp(ctx context.Context, targets []int, h uint64, bound time.Duration) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	tk := time.NewTicker(50 * time.Millisecond)
	defer tk.Stop()
	var last string
	for {
		done := true
		for _, i := range targets {
			sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
			st, err := r.t.Status(sctx, i)
			scancel()
			if err != nil {
				done, last = false, err.Error()
				break
			}
			if st.Height < h {
				done, last = false, fmt.Sprintf("%s at height %d of %d (mode %s)", r.t.Nodes[i].Name, st.Height, h, st.Mode)
				break
			}
		}
		if done {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%s did not reach height %d within %s (last: %s)", strings.Join(r.names(targets), ","), h, bound, last)
		case <-tk.C:
		}
	}
}

// writeResults writes the result folder: the scenario, the outcome (run.json), a table (result.txt), the
// plot, the replicas' trace records (trace.*, phases.png) and their logs.
func (r *runner) writeResults(runErr error) error {
	dir := r.opts.Dir
	var errs []error
	if err := os.WriteFile(filepath.Join(dir, "scenario.toml"), r.s.source, 0o644); err != nil {
		errs = append(errs, err)
	}
	b, err := json.MarshalIndent(r.out, "", "  ")
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "run.json"), append(b, '\n'), 0o644)
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("scenario: run.json: %w", err))
	}
	var txt strings.Builder
	r.out.Summary(&txt, runErr)
	if err := os.WriteFile(filepath.Join(dir, "result.txt"), []byte(txt.String()), 0o644); err != nil {
		errs = append(errs, err)
	}
	if r.out.Figures != nil {
		title := fmt.Sprintf("scenario %s (%s form, n=%d, seed %d)", r.s.Name, r.out.Form, r.s.N, r.out.Seed)
		if err := bench.WritePlot(r.out.Figures, title, filepath.Join(dir, "plot.png")); err != nil {
			errs = append(errs, err)
		}
	}
	if r.trace != nil {
		title := fmt.Sprintf("scenario %s (%s form, n=%d, seed %d): the consensus trace", r.s.Name, r.out.Form, r.s.N, r.out.Seed)
		if err := timeline.WriteFiles(dir, r.trace, title); err != nil {
			errs = append(errs, err)
		}
	}
	netDir := filepath.Join(dir, "testnet")
	if r.t != nil {
		logs := filepath.Join(dir, "logs")
		if err := os.MkdirAll(logs, 0o755); err != nil {
			errs = append(errs, err)
		}
		for i, nd := range r.t.Snapshot() {
			if b, err := os.ReadFile(r.cl.logPath(i)); err == nil {
				if err := os.WriteFile(filepath.Join(logs, nd.Name+".log"), b, 0o644); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	if !r.opts.Keep {
		os.RemoveAll(netDir)
	}
	return errors.Join(errs...)
}

// Summary writes the outcome for people: the verdict, the steps, the checks and the figures.
func (o *Outcome) Summary(w io.Writer, runErr error) {
	verdict := "PASS"
	if !o.Pass {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "scenario %s (%s form, seed %d): %s\n", o.Name, o.Form, o.Seed, verdict)
	if runErr != nil {
		fmt.Fprintf(w, "  error: %v\n", runErr)
	}
	if o.Version != "" {
		fmt.Fprintf(w, "  binary: p2pbft %s\n", o.Version)
	}
	if o.Rerun != "" {
		fmt.Fprintf(w, "  rerun: %s\n", o.Rerun)
	}
	if o.Network != nil {
		fmt.Fprintln(w, "\nnetwork:")
		o.Network.Summary(w)
	}
	fmt.Fprintln(w, "\nsteps:")
	for _, s := range o.Steps {
		line := fmt.Sprintf("  %7.2fs  %-9s %-14s", s.AtS, s.Action, strings.Join(s.Targets, ","))
		if s.Action == ActionLink || s.Action == ActionHealLinks {
			line = fmt.Sprintf("  %7.2fs  %-24s", s.AtS, s.Label)
		}
		if s.ResumeMs >= 0 {
			line += fmt.Sprintf("  progress after %.2fs", s.ResumeMs/1000)
		}
		if s.ViewChangeMs > 0 {
			line += fmt.Sprintf("  new-view commit after %.2fs", s.ViewChangeMs/1000)
		}
		if s.CatchUpMs > 0 {
			line += fmt.Sprintf("  caught up to %d after %.2fs", s.CatchUpTo, s.CatchUpMs/1000)
		}
		if s.Error != "" {
			line += "  ERROR " + s.Error
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintln(w, "\nchecks:")
	for _, c := range o.Checks {
		v := "ok  "
		if !c.Pass {
			v = "FAIL"
		}
		fmt.Fprintf(w, "  %s %-13s %s\n", v, c.Name, c.Detail)
	}
	if o.Figures != nil {
		fmt.Fprintln(w, "\nfigures:")
		o.Figures.Table(w)
	}
}
