package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	stdnet "net"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/p2pbft/p2pbft/client"
	"github.com/p2pbft/p2pbft/node/config"
	"github.com/p2pbft/p2pbft/testnet"
)

type testnetOptions struct {
	dir         string
	create      createOptions
	reset       bool
	bin         string
	loadRate    float64
	loadWorkers int
	noLoad      bool
	noStdin     bool
	duration    time.Duration
	ui          bool
	uiListen    string
	uiOpen      bool
}

// createOptions are the settings of a new testnet folder, the same for `testnet` (when it creates the
// folder) and `testnet init`.
type createOptions struct {
	n                 int
	chainID           string
	logLevel          string
	logFormat         string
	reqTimeout        time.Duration
	viewChangeTimeout time.Duration
	adminAPI          bool
}

// addCreateFlags adds the flags of createOptions; when names when they apply ("when the folder is
// created" for `testnet`, which reuses an existing folder).
func addCreateFlags(f *pflag.FlagSet, o *createOptions, when string) {
	f.IntVar(&o.n, "n", 4, "number of replicas"+when+" (n = 3f+1 tolerates f faults)")
	f.StringVar(&o.chainID, "chain-id", "p2pbft-testnet", "chain ID"+when)
	f.StringVar(&o.logLevel, "log-level", "info", "the replicas' log level (in their node.log)"+when)
	f.StringVar(&o.logFormat, "log-format", "text", "the replicas' log format, text or json"+when)
	f.DurationVar(&o.reqTimeout, "request-timeout", 0, "the replicas' consensus.request_timeout, the view-change timer"+when+" (default: the config default)")
	f.DurationVar(&o.viewChangeTimeout, "view-change-timeout", 0, "the replicas' consensus.view_change_timeout"+when+" (default: the config default)")
	f.BoolVar(&o.adminAPI, "experiment-admin-api", false, "EXPERIMENTS ONLY: turn on the replicas' admin API (partition, heal)"+when)
}

// config is the testnet.Config these options describe.
func (o createOptions) config(dir string, docker bool) (testnet.Config, error) {
	switch o.logFormat {
	case "text", "json":
	default:
		return testnet.Config{}, usagef("--log-format %q: want text or json", o.logFormat)
	}
	switch o.logLevel {
	case "debug", "info", "warn", "error":
	default:
		return testnet.Config{}, usagef("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	return testnet.Config{Dir: dir, N: o.n, ChainID: o.chainID, Docker: docker, AdminAPI: o.adminAPI,
		Configure: func(_ int, c *config.Config) {
			c.Log.Level, c.Log.Format = o.logLevel, o.logFormat
			if o.reqTimeout > 0 {
				c.Consensus.RequestTimeout = o.reqTimeout
			}
			if o.viewChangeTimeout > 0 {
				c.Consensus.ViewChangeTimeout = o.viewChangeTimeout
			}
		}}, nil
}

const defaultTestnetDir = "testnet/run"

func newTestnetCmd(opts *rootOptions) *cobra.Command {
	o := &testnetOptions{}
	cmd := &cobra.Command{
		Use:   "testnet [--dir DIR] [--n 4]",
		Short: "Run a local testnet of N replicas as separate processes, with a demo load",
		Long: `testnet starts a local network of N replicas (default 4) on 127.0.0.1, each a separate
"p2pbft start" process of this same binary, with free ports, and keeps it running until interrupted
(Ctrl-C stops every replica cleanly). Keys, genesis, configurations, data and logs live under one folder
(--dir, default ./testnet/run): run the command again and the same network starts again with its chain;
--reset starts over.

By default it drives a small demo load (key-value puts through the Go client, which waits for f+1
matching replies) and prints a line per second: chain height, view and primary, committed requests per
second, each replica's connected peers, and the demo load's acknowledged requests and latency. It prints
each replica's HTTP API and a ready-to-paste "p2pbft tx" command.

Faults, while it runs: type a command on its standard input,

  kill NAME      kill -9 the replica (a crash)        stop NAME     SIGTERM, a clean stop
  start NAME     start it again                        restart NAME  stop and start
  pause NAME     SIGSTOP (a hung replica)              resume NAME   SIGCONT
  partition NAME cut it off from the other replicas    heal          undo every partition
  status         every replica's status                help, quit

(partition and heal need a testnet created with --experiment-admin-api.)

or, from another terminal, "p2pbft testnet kill node1 --dir DIR" (and stop, start, restart, pause,
resume, nodes). NAME is node0 ... nodeN-1 (or the index).

With --ui it also serves a live page (printed at startup, default http://127.0.0.1:26670/ui/): every
replica (up, view, height, role, reachable peers) with buttons for the same faults, a swimlane of the last
slots across replicas, the view changes, throughput and latency, updated live.`,
		Example: `  go run ./cmd/p2pbft testnet
  p2pbft testnet --n 7 --dir /tmp/tn --load-rate 200
  p2pbft testnet kill node0 --dir testnet/run        # from a second terminal
  p2pbft testnet --duration 30s --no-load              # run for 30 seconds, no demo load
  p2pbft testnet --ui --experiment-admin-api           # with the live page (partition needs the admin API)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runTestnet(cmd.Context(), cmd, o, opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dir, "dir", defaultTestnetDir, "the testnet folder (created if missing, reused if it holds a testnet)")
	addCreateFlags(f, &o.create, ", when the folder is created")
	f.BoolVar(&o.reset, "reset", false, "delete the testnet in the folder and create a new one")
	f.StringVar(&o.bin, "bin", "", "the p2pbft binary the replicas run (default: this program)")
	f.Float64Var(&o.loadRate, "load-rate", 20, "demo load: target requests per second; 0 runs closed-loop, as fast as replies come")
	f.IntVar(&o.loadWorkers, "load-workers", 4, "demo load: concurrent requests")
	f.BoolVar(&o.noLoad, "no-load", false, "do not drive a demo load")
	f.BoolVar(&o.noStdin, "no-stdin", false, "do not read commands from standard input")
	f.DurationVar(&o.duration, "duration", 0, "stop after this long (0: until interrupted)")
	f.BoolVar(&o.ui, "ui", false, "serve a live page of the testnet (replicas, slots, view changes, fault buttons) on --ui-listen")
	f.StringVar(&o.uiListen, "ui-listen", "127.0.0.1:26670", "with --ui: the page's address (port 0 picks a free one; the URL is printed). It has no authentication: keep it on loopback")
	f.BoolVar(&o.uiOpen, "ui-open", false, "with --ui: also try to open the page in a browser (xdg-open or open)")

	for _, action := range testnet.Actions {
		cmd.AddCommand(newTestnetActionCmd(action))
	}
	cmd.AddCommand(newTestnetNodesCmd(), newTestnetInitCmd())
	return cmd
}

func newTestnetActionCmd(action string) *cobra.Command {
	var dir string
	short := map[string]string{
		testnet.ActionStop:      "Stop a replica of a running testnet cleanly (SIGTERM)",
		testnet.ActionKill:      "Kill a replica of a running testnet (SIGKILL, a crash)",
		testnet.ActionStart:     "Start a stopped replica of a running testnet",
		testnet.ActionRestart:   "Restart a replica of a running testnet",
		testnet.ActionPause:     "Pause a replica of a running testnet (SIGSTOP)",
		testnet.ActionResume:    "Resume a paused replica (SIGCONT)",
		testnet.ActionPartition: "Cut a replica off from the other replicas of a running testnet (its admin API)",
		testnet.ActionHeal:      "Undo every partition of a running testnet",
	}[action]
	use, args := action+" NAME [--dir DIR]", cobra.ExactArgs(1)
	long := short + `.

It talks to the "p2pbft testnet" that runs the folder, through its control socket (DIR/control.addr),
so the testnet keeps track of its replicas. NAME is node0 ... nodeN-1, or the index.`
	if action == testnet.ActionHeal {
		use, args = action+" [--dir DIR]", cobra.NoArgs
		long = short + `.

It talks to the "p2pbft testnet" that runs the folder, through its control socket (DIR/control.addr).`
	}
	if action == testnet.ActionPartition || action == testnet.ActionHeal {
		long += `
It needs a testnet created with --experiment-admin-api.`
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args:  args,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			name := "all"
			if len(args) > 0 {
				name = args[0]
			}
			msg, err := testnet.Control(ctx, dir, action, name)
			if errors.Is(err, testnet.ErrNotRunning) {
				return withCode(exitUnavailable, err)
			}
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), msg)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", defaultTestnetDir, "the testnet folder")
	return cmd
}

func newTestnetNodesCmd() *cobra.Command {
	var dir string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "nodes [--dir DIR]",
		Short: "List the replicas of a testnet folder: running or not, PID, addresses",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			out := cmd.OutOrStdout()
			states, err := testnet.ControlNodes(ctx, dir)
			running := err == nil
			if errors.Is(err, testnet.ErrNotRunning) {
				n, oerr := testnet.Open(dir)
				if oerr != nil {
					return oerr
				}
				for _, ni := range n.Nodes() {
					states = append(states, testnet.NodeState{NodeInfo: ni})
				}
			} else if err != nil {
				return err
			}
			if asJSON {
				return printJSON(out, struct {
					Dir     string              `json:"dir"`
					Running bool                `json:"running"`
					Nodes   []testnet.NodeState `json:"nodes"`
				}{dir, running, states})
			}
			if !running {
				fmt.Fprintf(out, "(no p2pbft testnet runs %s)\n", dir)
			}
			for _, s := range states {
				state := "stopped"
				if s.Running {
					state = fmt.Sprintf("running (pid %d)", s.PID)
				}
				fmt.Fprintf(out, "%-7s %-18s api http://%-21s %s\n", s.Name, state, s.API, s.Addr)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", defaultTestnetDir, "the testnet folder")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the replicas as JSON")
	return cmd
}

func newTestnetInitCmd() *cobra.Command {
	var dir string
	var co createOptions
	var docker bool
	cmd := &cobra.Command{
		Use:   "init --dir DIR [--n 4] [--docker]",
		Short: "Create a testnet folder without starting it (--docker: for the compose file)",
		Long: `init writes a testnet folder (keys, genesis, configurations, a client home) and starts nothing. It
takes the options "p2pbft testnet" takes when it creates a folder (replicas, chain ID, logs, timers, the
experiment admin API); "p2pbft testnet --dir DIR" then starts it.

With --docker the replicas are laid out for containers on a private docker network, as
testnet/docker/compose.yaml expects: each listens on 0.0.0.0:26690 (TCP and QUIC) and serves its HTTP API
on 0.0.0.0:26680 inside its container, and the genesis names the replicas by their service names
(/dns4/node0/tcp/26690, ...). testnet/docker/up.sh runs this for you.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if docker && co.n != 4 {
				return usagef("--docker: the compose file runs 4 replicas; use --n 4 (or extend compose.yaml)")
			}
			tc, err := co.config(dir, docker)
			if err != nil {
				return err
			}
			net, err := testnet.Create(tc)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created testnet %q with %d replicas in %s\n", co.chainID, net.N(), dir)
			if w := faultToleranceWarning(net.N(), net.Genesis().F()); w != "" {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning: "+w)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", defaultTestnetDir, "the testnet folder to create")
	addCreateFlags(cmd.Flags(), &co, "")
	cmd.Flags().BoolVar(&docker, "docker", false, "lay the folder out for testnet/docker/compose.yaml")
	return cmd
}

// selfCommand is how to print "run this program" in instructions: "go run ./cmd/p2pbft" under go run,
// else the binary's path.
func selfCommand() string {
	exe, err := os.Executable()
	if err != nil {
		return "p2pbft"
	}
	if strings.Contains(exe, "go-build") {
		return "go run ./cmd/p2pbft"
	}
	if p, err := exec.LookPath("p2pbft"); err == nil && p == exe {
		return "p2pbft"
	}
	return exe
}

func runTestnet(ctx context.Context, cmd *cobra.Command, o *testnetOptions, opts *rootOptions) error {
	// A closed output (`p2pbft testnet | tee log`, and Ctrl-C kills tee first) must not kill this process
	// before it stops its replicas: writes then fail with EPIPE instead.
	signal.Ignore(syscall.SIGPIPE)
	out := cmd.OutOrStdout()
	fl := cmd.Flags()
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	bin := o.bin
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find this program's binary (give --bin): %w", err)
		}
		bin = exe
	}
	if o.reset && testnet.Exists(o.dir) {
		if _, err := testnet.ControlNodes(ctx, o.dir); err == nil {
			return fmt.Errorf("a p2pbft testnet runs %s: stop it before --reset", o.dir)
		}
		if err := os.RemoveAll(o.dir); err != nil {
			return fmt.Errorf("reset %s: %w", o.dir, err)
		}
	}
	var net *testnet.Network
	var err error
	if testnet.Exists(o.dir) {
		net, err = testnet.Open(o.dir)
		if err != nil {
			return err
		}
		if fl.Changed("n") && o.create.n != net.N() {
			return usagef("%s holds a testnet of %d replicas, not %d: add --reset to create a new one", o.dir, net.N(), o.create.n)
		}
		fmt.Fprintf(out, "reusing the testnet in %s (chain %s, %d replicas; --reset starts over)\n", o.dir, net.Genesis().ChainID(), net.N())
	} else {
		tc, err := o.create.config(o.dir, false)
		if err != nil {
			return err
		}
		if net, err = testnet.Create(tc); err != nil {
			return err
		}
		fmt.Fprintf(out, "created a testnet of %d replicas in %s (chain %s)\n", net.N(), o.dir, o.create.chainID)
		if w := faultToleranceWarning(net.N(), net.Genesis().F()); w != "" {
			fmt.Fprintln(cmd.ErrOrStderr(), "warning: "+w)
		}
	}
	unlock, err := net.Lock()
	if err != nil {
		return err
	}
	defer unlock()
	var uiLn stdnet.Listener
	if o.ui {
		// Listen before the replicas start: a taken port fails at once, not after a minute of startup.
		if uiLn, err = stdnet.Listen("tcp", o.uiListen); err != nil {
			return fmt.Errorf("--ui-listen %s: %w", o.uiListen, err)
		}
		defer uiLn.Close()
	}
	var printMu sync.Mutex
	say := func(format string, args ...any) {
		printMu.Lock()
		fmt.Fprintf(out, format+"\n", args...)
		printMu.Unlock()
	}
	stopping := make(chan struct{})
	net.SetProcessOptions(testnet.ProcessOptions{Binary: bin, OnExit: func(i int, err error, expected bool) {
		select {
		case <-stopping:
			return
		default:
		}
		if !expected {
			say("!! node%d exited on its own (%v); last lines of %s:\n%s", i, err, net.LogPath(i), net.LogTail(i, 8))
		}
	}})

	ctlCtx, stopCtl := context.WithCancel(context.Background())
	ctlDone := make(chan error, 1)
	go func() { ctlDone <- net.ServeControl(ctlCtx) }()
	defer func() {
		stopCtl()
		<-ctlDone
	}()

	say("starting %d replicas (binary %s) ...", net.N(), bin)
	shutdown := func() {
		close(stopping)
		say("stopping the replicas ...")
		if err := net.Close(); err != nil {
			say("%v", err)
		}
		say("stopped. The chain is kept in %s: run the same command to continue, add --reset to start over.", o.dir)
	}
	if err := net.Start(ctx); err != nil {
		shutdown()
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	if err := net.WaitConnected(wctx); err != nil {
		say("warning: %v", err)
	}
	cancel()
	printEndpoints(out, net, o.dir)
	if uiLn != nil {
		uiCtx, stopUI := context.WithCancel(ctx)
		uiDone := make(chan error, 1)
		go func() {
			uiDone <- net.ServeUI(uiCtx, uiLn, testnet.UIOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		}()
		defer func() {
			stopUI()
			if err := <-uiDone; err != nil {
				say("%v", err)
			}
		}()
		url := "http://" + uiLn.Addr().String() + "/ui/"
		say("live page: %s", url)
		if o.uiOpen {
			openBrowser(url, say)
		}
	}

	var load *testnet.Load
	var cl *client.Client
	loadStart := time.Now()
	if !o.noLoad {
		cl, err = net.NewClient(nil, slog.New(slog.NewTextHandler(io.Discard, nil)), func(c *client.Config) {
			c.Sessions = max(1, o.loadWorkers)
		})
		if err != nil {
			shutdown()
			return err
		}
		load, err = testnet.StartLoad(ctx, testnet.LoadConfig{Client: cl, Workers: max(1, o.loadWorkers), Rate: o.loadRate, Prefix: "demo", OpTimeout: 10 * time.Second})
		if err != nil {
			cl.Close()
			shutdown()
			return err
		}
		if o.loadRate > 0 {
			say("demo load: %.0f puts/s from %d concurrent clients, each accepted on f+1 matching replies", o.loadRate, o.loadWorkers)
		} else {
			say("load: %d concurrent clients, closed loop (each sends its next put when the last is accepted on f+1 matching replies)", o.loadWorkers)
		}
	}

	quit := make(chan struct{})
	var quitOnce sync.Once
	if !o.noStdin {
		go readCommands(ctx, net, say, func() { quitOnce.Do(func() { close(quit) }) })
	}
	live(ctx, quit, net, load, say)

	if load != nil {
		load.Stop()
		elapsed := time.Since(loadStart)
		acks := load.Acked()
		_, failed, _ := load.Counts()
		lat := make([]time.Duration, len(acks))
		for i, a := range acks {
			lat[i] = a.Latency
		}
		slices.Sort(lat)
		say("load: %d puts acknowledged in %s (%.1f/s), %d failed; latency p50 %s p90 %s p99 %s max %s",
			len(acks), elapsed.Round(time.Millisecond), float64(len(acks))/elapsed.Seconds(), failed,
			fmtMs(testnet.Percentile(lat, 0.5)), fmtMs(testnet.Percentile(lat, 0.9)), fmtMs(testnet.Percentile(lat, 0.99)), fmtMs(testnet.Percentile(lat, 1)))
		cl.Close()
	}
	shutdown()
	return nil
}
