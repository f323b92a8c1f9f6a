package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/p2pbft/p2pbft/bench"
	"github.com/p2pbft/p2pbft/internal/timeline"
	"github.com/p2pbft/p2pbft/node/config"
)

type benchOptions struct {
	// Target.
	dir       string
	apis      []string
	genesis   string
	bootstrap []string
	n         int
	workDir   string
	keep      bool
	bin       string
	docker    bool
	// Replicas the bench starts.
	node nodeTuning
	// Load.
	load     bench.LoadConfig
	duration time.Duration
	opTO     time.Duration
	retryTO  time.Duration
	warmup   time.Duration
	halfLoad bool
	sweep    []int
	// Output.
	out      string
	jsonOut  bool
	plot     string
	progress bool
	cpuProf  string
}

// nodeTuning are the configuration options a bench or scenario may set on replicas it starts.
type nodeTuning struct {
	batchMaxRequests int
	batchTimeout     time.Duration
	maxInFlight      int
	pipelineMin      int
	requestTimeout   time.Duration
	viewChange       time.Duration
	checkpoint       uint64
	window           uint64
	broadcast        string
	storeSync        bool
	memTableSize     int
	logLevel         string
	pprof            bool
	trace            bool
}

func addNodeTuningFlags(fs *pflag.FlagSet, t *nodeTuning) {
	d := config.Default()
	fs.IntVar(&t.batchMaxRequests, "batch-max-requests", d.Consensus.BatchMaxRequests, "replicas started here: consensus.batch_max_requests")
	fs.DurationVar(&t.batchTimeout, "batch-timeout", d.Consensus.BatchTimeout, "replicas started here: consensus.batch_timeout")
	fs.IntVar(&t.maxInFlight, "max-in-flight", d.Consensus.MaxInFlight, "replicas started here: consensus.max_in_flight (pipelining depth)")
	fs.IntVar(&t.pipelineMin, "pipeline-min-requests", d.Consensus.PipelineMinRequests, "replicas started here: consensus.pipeline_min_requests")
	fs.DurationVar(&t.requestTimeout, "request-timeout", d.Consensus.RequestTimeout, "replicas started here: consensus.request_timeout (the view-change timer)")
	fs.DurationVar(&t.viewChange, "view-change-timeout", d.Consensus.ViewChangeTimeout, "replicas started here: consensus.view_change_timeout")
	fs.Uint64Var(&t.checkpoint, "checkpoint-interval", d.Consensus.CheckpointInterval, "replicas started here: consensus.checkpoint_interval")
	fs.Uint64Var(&t.window, "window", d.Consensus.Window, "replicas started here: consensus.window")
	fs.StringVar(&t.broadcast, "broadcast", d.P2P.Broadcast, "replicas started here: p2p.broadcast (direct or gossip)")
	fs.BoolVar(&t.storeSync, "store-sync", d.Store.Sync, "replicas started here: store.sync (fsync; false breaks crash safety)")
	fs.IntVar(&t.memTableSize, "store-memtable-size", d.Store.MemTableSize, "replicas started here: store.memtable_size (bytes; 67108864 is the large setting)")
	fs.StringVar(&t.logLevel, "log-level", "info", "replicas started here: log.level (their logs are in the testnet folder)")
	fs.BoolVar(&t.trace, "trace", d.Trace.Enabled, "replicas started here: trace.enabled (per-slot consensus records; off to measure their cost)")
	fs.BoolVar(&t.pprof, "pprof", false, "replicas started here: api.pprof (profiles under /debug/pprof/ on each replica's API; take one with go tool pprof during the run)")
}

// apply sets the options whose flags were given on a replica's configuration.
func (t nodeTuning) apply(fs *pflag.FlagSet, c *config.Config) {
	set := func(name string, do func()) {
		if fs.Changed(name) {
			do()
		}
	}
	set("batch-max-requests", func() { c.Consensus.BatchMaxRequests = t.batchMaxRequests })
	set("batch-timeout", func() { c.Consensus.BatchTimeout = t.batchTimeout })
	set("max-in-flight", func() { c.Consensus.MaxInFlight = t.maxInFlight })
	set("pipeline-min-requests", func() { c.Consensus.PipelineMinRequests = t.pipelineMin })
	set("request-timeout", func() { c.Consensus.RequestTimeout = t.requestTimeout })
	set("view-change-timeout", func() { c.Consensus.ViewChangeTimeout = t.viewChange })
	set("checkpoint-interval", func() { c.Consensus.CheckpointInterval = t.checkpoint })
	set("window", func() { c.Consensus.Window = t.window })
	set("broadcast", func() { c.P2P.Broadcast = t.broadcast })
	set("store-sync", func() { c.Store.Sync = t.storeSync })
	set("store-memtable-size", func() { c.Store.MemTableSize = t.memTableSize })
	set("pprof", func() { c.API.Pprof = t.pprof })
	set("trace", func() { c.Trace.Enabled = t.trace })
	c.Log.Level = t.logLevel
}

func newBenchCmd() *cobra.Command {
	o := &benchOptions{}
	cmd := &cobra.Command{
		Use:   "bench [--n 4 | --dir DIR | --api ADDR... --genesis FILE]",
		Short: "Measure a network: throughput, commit latency, batching, messages, bytes and CPU under load",
		Long: `bench drives a key-value write load against a p2pbft network and reports what it measured.

The network is one of:
  --n N                 a new local testnet of N replicas this command starts (the default, n=4) in
                        --work-dir (a temporary folder, removed afterwards unless --keep)
  --dir DIR             a local testnet running in folder DIR ("p2pbft testnet --dir DIR")
  --api ADDR --genesis FILE
                        replicas given by their HTTP APIs (repeat --api) and the chain's genesis; the
                        load reaches them over libp2p at the genesis addresses (or --bootstrap)

The load is closed-loop (--clients concurrent clients, each sending its next request when the last was
accepted) or open-loop (--mode open --rate R: R requests per second offered whatever the replies, from up
to --clients outstanding requests; latency counts from when a request was due). It stops after
--duration or --requests, whichever comes first. Each request is a put of --size bytes to a key drawn
--keys uniform or zipf from --key-space keys. A request is accepted once f+1 replicas sent matching
signed replies.

So that the load generator does not take the CPU the replicas need, requests are signed before the load
starts (--presign; the count used and any signed later are reported), and reply signatures are checked
once per replica and batch (a replica signs one reply header per batch).

Reported, over the window after --warmup: requests accepted per second and the replicas' executed rate;
commit latency p50/p90/p99/max; requests per block; view changes; consensus messages per request (from
the replicas' /metrics); bytes per request (the replica processes' TCP byte counters, read with ss, for
local replicas); CPU per replica (/proc/PID/stat for local processes, process_cpu_seconds_total
otherwise); the load generator's own CPU. --out DIR writes result.json, result.txt and plot.png (latency
and throughput over time), and the replicas' consensus trace records of the run: trace.json, trace.txt
(the slowest slot, the view changes, the latest slots), trace.png (the latest slots as swimlanes) and
phases.png (the time each phase took; see p2pbft trace). --half-load then measures an open loop at half the throughput
reached (latency at half load).`,
		Example: `  p2pbft bench                                   # 4 local replicas, 64 closed-loop clients, 20s
  p2pbft bench --n 7 --clients 128 --duration 30s --out results/n7
  p2pbft bench --mode open --rate 2000 --duration 30s
  p2pbft bench --dir testnet/run --requests 50000 --keys zipf
  p2pbft bench --api 10.0.0.1:26680 --api 10.0.0.2:26680 --genesis genesis.toml --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBench(cmd.Context(), cmd, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dir, "dir", "", "drive the local testnet running in this folder")
	f.StringArrayVar(&o.apis, "api", nil, "drive the replica whose HTTP API is at ADDR (host:port or URL; repeat for each replica)")
	f.StringVar(&o.genesis, "genesis", "", "with --api: the chain's genesis file")
	f.StringArrayVar(&o.bootstrap, "bootstrap", nil, "with --api: a replica's multiaddr to dial besides the genesis addresses (repeat)")
	f.IntVar(&o.n, "n", 4, "start a local testnet of this many replicas (when neither --dir nor --api is given)")
	f.StringVar(&o.workDir, "work-dir", "", "folder for the testnet the bench starts (default: a new temporary folder)")
	f.BoolVar(&o.keep, "keep", false, "keep the testnet folder the bench started (keys, data, logs)")
	f.StringVar(&o.bin, "bin", "", "the p2pbft binary the started replicas run (default: this program)")
	f.BoolVar(&o.docker, "docker", false, "start the replicas as docker containers on a private network (image p2pbft:bench built FROM scratch around --bin, which must be static)")
	addNodeTuningFlags(f, &o.node)

	f.StringVar(&o.load.Mode, "mode", bench.Closed, "closed (concurrent clients) or open (fixed offered rate)")
	f.IntVar(&o.load.Clients, "clients", 0, "concurrent clients (closed loop), or most requests outstanding (open loop) (default 64 closed, 256 open)")
	f.Float64Var(&o.load.Rate, "rate", 0, "open loop: offered requests per second")
	f.DurationVar(&o.duration, "duration", 20*time.Second, "stop issuing requests after this long (0: only --requests bounds the run)")
	f.IntVar(&o.load.Requests, "requests", 0, "stop issuing requests after this many (0: only --duration bounds the run)")
	f.DurationVar(&o.warmup, "warmup", 3*time.Second, "leave the first part of the run out of the figures")
	f.IntVar(&o.load.Size, "size", 100, "bytes of each request's key-value operation")
	f.StringVar(&o.load.Keys, "keys", bench.KeysUniform, "key distribution: uniform or zipf")
	f.IntVar(&o.load.KeySpace, "key-space", 100000, "number of distinct keys")
	f.Float64Var(&o.load.ZipfS, "zipf-s", 1.1, "zipf exponent (> 1)")
	f.IntVar(&o.load.Presign, "presign", 0, "requests to sign before the load starts (0: enough for the bounds; -1: sign while sending)")
	f.DurationVar(&o.opTO, "op-timeout", 30*time.Second, "abandon a request not accepted after this long (it counts as failed)")
	f.DurationVar(&o.retryTO, "retry-timeout", time.Second, "send a request to every replica when f+1 replies did not come in this long")
	f.Int64Var(&o.load.Seed, "seed", 0, "seed of the key choice (0: random; the result records it)")
	f.BoolVar(&o.halfLoad, "half-load", false, "afterwards, measure an open loop at half the throughput reached")
	f.IntSliceVar(&o.sweep, "sweep-clients", nil, "closed loop: measure each of these client counts in turn (e.g. 32,64,128,256) and keep the one with the highest throughput as the peak")

	f.StringVar(&o.out, "out", "", "write result.json, result.txt, plot.png (and half-load.*) and the replicas' trace (trace.*, phases.png) into this folder")
	f.BoolVar(&o.jsonOut, "json", false, "print the result as JSON instead of a table")
	f.StringVar(&o.plot, "plot", "", "write the latency and throughput plot to this file (.png or .svg)")
	f.BoolVar(&o.progress, "progress", true, "print a progress line every second (on standard error)")
	f.StringVar(&o.cpuProf, "cpuprofile", "", "write a CPU profile of the load generator (this process) to this file")
	cmd.AddCommand(newBenchPlotCmd())
	return cmd
}

func newBenchPlotCmd() *cobra.Command {
	var title string
	cmd := &cobra.Command{
		Use:   "plot RESULT.json OUT.png|OUT.svg",
		Short: "Draw the plot of a saved result again (a bench result.json, or a scenario run.json)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := readAnyResult(args[0])
			if err != nil {
				return err
			}
			if title == "" {
				title = fmt.Sprintf("p2pbft, n=%d: %s", res.N, describeLoad(res.Load))
			}
			return bench.WritePlot(res, title, args[1])
		},
	}
	cmd.Flags().StringVar(&title, "title", "", "the plot's title")
	return cmd
}

// readAnyResult reads a bench result, or the figures of a scenario's run.json.
func readAnyResult(path string) (*bench.Result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var probe struct {
		Figures json.RawMessage `json:"figures"`
	}
	if json.Unmarshal(b, &probe) == nil && len(probe.Figures) > 0 {
		b = probe.Figures
	}
	return bench.ReadResult(bytes.NewReader(b))
}

func runBench(ctx context.Context, cmd *cobra.Command, o *benchOptions) error {
	out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
	o.load.Duration = bench.Duration(o.duration)
	o.load.OpTimeout = bench.Duration(o.opTO)
	o.load.RetryTimeout = bench.Duration(o.retryTO)
	if err := o.load.Validate(); err != nil {
		return withCode(exitUsage, err)
	}
	if o.warmup >= o.duration && o.duration > 0 {
		return usagef("--warmup %s must be shorter than --duration %s", o.warmup, o.duration)
	}
	t, cleanup, err := benchTarget(ctx, cmd, o, errOut)
	if err != nil {
		return err
	}
	defer cleanup()
	var progress io.Writer
	if o.progress {
		progress = errOut
	}
	if o.cpuProf != "" {
		pf, err := os.Create(o.cpuProf)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			pf.Close()
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			pf.Close()
		}()
	}
	cfg := bench.Config{Load: o.load, Warmup: o.warmup, Progress: progress}
	if len(o.sweep) == 0 {
		fmt.Fprintf(errOut, "bench: %d replicas; %s\n", t.N(), describeLoad(o.load))
	}
	var results []*bench.Result
	var names []string
	var res *bench.Result
	if len(o.sweep) > 0 {
		if o.load.Mode != bench.Closed {
			return usagef("--sweep-clients is for a closed loop")
		}
		fmt.Fprintf(errOut, "bench: %d replicas; sweep over %v clients\n", t.N(), o.sweep)
		for _, c := range o.sweep {
			sc := cfg
			sc.Load.Clients = c
			fmt.Fprintf(errOut, "bench: %s\n", describeLoad(sc.Load))
			r, err := bench.Measure(ctx, t, sc)
			if err != nil {
				return err
			}
			r.Version = version()
			fmt.Fprintf(errOut, "bench: %d clients: %.0f req/s, p50 %.1f ms, p99 %.1f ms\n", c, r.Throughput, r.Latency.P50, r.Latency.P99)
			results = append(results, r)
			names = append(names, fmt.Sprintf("clients-%d", c))
			if res == nil || r.Throughput > res.Throughput {
				res = r
			}
			if ctx.Err() != nil {
				break
			}
		}
		fmt.Fprintf(errOut, "bench: peak at %d clients: %.0f req/s\n", res.Load.Clients, res.Throughput)
		// The peak run is also the "result".
		results = append([]*bench.Result{res}, results...)
		names = append([]string{"result"}, names...)
	} else {
		r, err := bench.Measure(ctx, t, cfg)
		if err != nil {
			return err
		}
		r.Version = version()
		res = r
		results, names = []*bench.Result{r}, []string{"result"}
	}
	if o.halfLoad && ctx.Err() == nil {
		if res.Throughput <= 0 {
			return errors.New("--half-load: the first run accepted no request")
		}
		half := o.load
		// As many clients as the peak had (at least 512): an open loop must never run out of clients, or
		// requests wait for one and the latency measures the generator, not the network.
		half.Mode, half.Rate, half.Clients, half.Seed = bench.Open, res.Throughput/2, max(res.Load.Clients, 512), res.Load.Seed+1
		if o.load.Requests > 0 {
			half.Requests = o.load.Requests / 2
		}
		fmt.Fprintf(errOut, "bench: half load (half of %.0f req/s): %s\n", res.Throughput, describeLoad(half))
		hr, err := bench.Measure(ctx, t, bench.Config{Load: half, Warmup: o.warmup, Progress: progress})
		if err != nil {
			return err
		}
		hr.Version = version()
		results = append(results, hr)
		names = append(names, "half-load")
	}
	for k, r := range results {
		if o.jsonOut {
			if err := r.JSON(out); err != nil {
				return err
			}
		} else {
			if k > 0 {
				fmt.Fprintln(out)
			}
			title := names[k]
			if names[k] == "result" && len(o.sweep) > 0 {
				title = fmt.Sprintf("result: the peak of the sweep, %d clients", r.Load.Clients)
			}
			fmt.Fprintf(out, "== %s ==\n", title)
			r.Table(out)
		}
	}
	if o.out != "" {
		if err := os.MkdirAll(o.out, 0o755); err != nil {
			return err
		}
		for k, r := range results {
			if err := writeResultFiles(o.out, names[k], r, fmt.Sprintf("p2pbft bench, n=%d: %s", r.N, describeLoad(r.Load))); err != nil {
				return err
			}
		}
		if err := writeTraceFiles(ctx, o.out, t, fmt.Sprintf("p2pbft bench, n=%d: the consensus trace of the run", res.N)); err != nil {
			fmt.Fprintf(errOut, "bench: warning: the trace records: %v\n", err)
		}
		fmt.Fprintf(errOut, "bench: results in %s\n", o.out)
	}
	if o.plot != "" {
		if err := bench.WritePlot(res, fmt.Sprintf("p2pbft bench, n=%d: %s", res.N, describeLoad(res.Load)), o.plot); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// writeResultFiles writes DIR/NAME.json, DIR/NAME.txt and the plot DIR/NAME.png (plot.png for "result").
func writeResultFiles(dir, name string, r *bench.Result, title string) error {
	jf, err := os.Create(filepath.Join(dir, name+".json"))
	if err != nil {
		return err
	}
	if err := r.JSON(jf); err != nil {
		jf.Close()
		return err
	}
	if err := jf.Close(); err != nil {
		return err
	}
	tf, err := os.Create(filepath.Join(dir, name+".txt"))
	if err != nil {
		return err
	}
	r.Table(tf)
	if err := tf.Close(); err != nil {
		return err
	}
	plotName := name + ".png"
	if name == "result" {
		plotName = "plot.png"
	}
	return bench.WritePlot(r, title, filepath.Join(dir, plotName))
}

// writeTraceFiles fetches the trace records of the target's replicas and writes them into the result
// folder (trace.json, trace.txt, trace.png, phases.png). A replica that is down is only left out.
func writeTraceFiles(ctx context.Context, dir string, t *bench.Target, title string) error {
	var urls []string
	for _, n := range t.Snapshot() {
		urls = append(urls, n.API)
	}
	tr, err := timeline.Collect(ctx, urls, 20*time.Second)
	if err != nil {
		return err
	}
	return timeline.WriteFiles(dir, tr, title)
}

func describeLoad(l bench.LoadConfig) string {
	s := fmt.Sprintf("closed loop, %d clients", l.Clients)
	if l.Clients == 0 {
		s = "closed loop, 64 clients"
	}
	if l.Mode == bench.Open {
		s = fmt.Sprintf("open loop, %.0f req/s", l.Rate)
	}
	s += fmt.Sprintf(", %d-byte puts, %s keys", l.Size, l.Keys)
	if l.Duration > 0 {
		s += ", " + l.Duration.String()
	}
	if l.Requests > 0 {
		s += fmt.Sprintf(", at most %d requests", l.Requests)
	}
	return s
}

// benchTarget opens the network the flags name, or starts one.
func benchTarget(ctx context.Context, cmd *cobra.Command, o *benchOptions, errOut io.Writer) (*bench.Target, func(), error) {
	fl := cmd.Flags()
	switch {
	case o.dir != "" && len(o.apis) > 0:
		return nil, nil, usagef("give --dir or --api, not both")
	case o.dir != "":
		t, err := bench.OpenTestnet(o.dir)
		if err != nil {
			return nil, nil, err
		}
		for _, nd := range t.Nodes {
			if nd.PID == 0 {
				fmt.Fprintf(errOut, "bench: warning: %s has no running process recorded in %s; its CPU comes from its metrics, if any\n", nd.Name, o.dir)
			}
		}
		return t, func() {}, nil
	case len(o.apis) > 0:
		if o.genesis == "" {
			return nil, nil, usagef("--api needs --genesis FILE (the chain's replica set)")
		}
		t, err := bench.FromAPIs(ctx, o.genesis, o.apis, o.bootstrap)
		if err != nil {
			return nil, nil, err
		}
		return t, func() {}, nil
	}
	if o.n < 1 {
		return nil, nil, usagef("--n %d: want at least 1", o.n)
	}
	bin := o.bin
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, nil, fmt.Errorf("find this program's binary (give --bin): %w", err)
		}
		bin = exe
	}
	dir := o.workDir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "p2pbft-bench-"); err != nil {
			return nil, nil, err
		}
	}
	fmt.Fprintf(errOut, "bench: starting %d replicas in %s ...\n", o.n, dir)
	configure := func(_ int, c *config.Config) { o.node.apply(fl, c) }
	var t *bench.Target
	var stop func() error
	var err error
	if o.docker {
		var d *bench.Docker
		t, d, err = bench.StartDocker(ctx, bench.DockerConfig{Dir: dir, N: o.n, Image: "p2pbft:bench", Binary: bin, Configure: configure})
		if err == nil {
			stop = d.Close
		}
	} else {
		t, err = bench.StartLocal(ctx, bench.LocalConfig{Dir: dir, N: o.n, Binary: bin, Configure: configure})
		if err == nil {
			stop = t.Close
		}
	}
	if err != nil {
		if !o.keep && o.workDir == "" {
			os.RemoveAll(dir)
		}
		return nil, nil, err
	}
	return t, func() {
		if err := stop(); err != nil {
			fmt.Fprintf(errOut, "bench: stop the replicas: %v\n", err)
		}
		if o.keep || o.workDir != "" {
			fmt.Fprintf(errOut, "bench: testnet kept in %s\n", dir)
			return
		}
		os.RemoveAll(dir)
	}, nil
}
