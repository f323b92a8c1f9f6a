package scenario

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
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

func (r *runner) clock() string {
	if r.run == nil {
		return "--:--"
	}
	d := r.run.Elapsed()
	return fmt.Sprintf("%02d:%05.2f", int(d.Minutes()), d.Seconds()-60*float64(int(d.Minutes())))
}

func (r *runner) isByz(i int) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.byz[i]
	return m, ok
}
