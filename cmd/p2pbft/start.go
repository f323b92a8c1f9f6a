package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/p2pbft/p2pbft/node"
	"github.com/p2pbft/p2pbft/node/api"
	"github.com/p2pbft/p2pbft/node/config"
)

// configFlags are the config.toml options that can be set on the command line; a flag given overrides
// the file.
type configFlags struct {
	moniker, genesis, key                        string
	listen, bootstrap, external                  []string
	mdns                                         bool
	broadcast                                    string
	maxMessageSize                               int
	tick, batchTimeout                           time.Duration
	requestTimeout, viewChangeTimeout            time.Duration
	retransmitTimeout                            time.Duration
	checkpointInterval, window                   uint64
	batchMaxRequests, batchMaxBytes, maxInFlight int
	apiAddr                                      string
	dataDir                                      string
	memTableSize                                 int
	storeSync, pprof                             bool
	trace                                        bool
	traceSlots                                   int
	logLevel, logFormat                          string
	byzantineMode                                string
	byzantineDelay                               time.Duration
	byzantineDropRate                            float64
	byzantineSeed                                uint64
	adminAPI                                     bool
}

func addConfigFlags(fs *pflag.FlagSet) *configFlags {
	f := &configFlags{}
	d := config.Default()
	fs.StringVar(&f.moniker, "moniker", "", "a human-readable name for this node, shown in logs and status (config: moniker)")
	fs.StringVar(&f.genesis, "genesis", d.Genesis, "the replica set file, relative to the home (config: genesis)")
	fs.StringVar(&f.key, "key", d.Key, "the node's private key file, relative to the home (config: key)")
	fs.StringSliceVar(&f.listen, "listen", d.P2P.Listen, "p2p listen multiaddrs, TCP and QUIC; port 0 picks a free port (config: p2p.listen)")
	fs.StringArrayVar(&f.bootstrap, "bootstrap", nil, "a peer to dial at start, /ip4/HOST/tcp/PORT/p2p/PEER-ID (repeat; one reachable replica is enough; config: p2p.bootstrap)")
	fs.StringSliceVar(&f.external, "external", nil, "multiaddrs peers should dial instead of the listen addresses, e.g. the public address behind NAT (config: p2p.external)")
	fs.BoolVar(&f.mdns, "mdns", d.P2P.MDNS, "discover peers on the local network with mDNS (config: p2p.mdns)")
	fs.StringVar(&f.broadcast, "broadcast", d.P2P.Broadcast, "how messages to all replicas travel: direct (a stream to each) or gossip (gossipsub) (config: p2p.broadcast)")
	fs.IntVar(&f.maxMessageSize, "max-message-size", d.P2P.MaxMessageSize, "largest consensus message accepted, in bytes (config: p2p.max_message_size)")
	fs.DurationVar(&f.tick, "tick", d.Consensus.Tick, "the engine's unit of time; timers round up to ticks (config: consensus.tick)")
	fs.Uint64Var(&f.checkpointInterval, "checkpoint-interval", d.Consensus.CheckpointInterval, "a checkpoint every this many sequence numbers (config: consensus.checkpoint_interval)")
	fs.Uint64Var(&f.window, "window", d.Consensus.Window, "watermark window above the stable checkpoint, a multiple of the checkpoint interval (config: consensus.window)")
	fs.IntVar(&f.batchMaxRequests, "batch-max-requests", d.Consensus.BatchMaxRequests, "the primary cuts a batch at this many requests (config: consensus.batch_max_requests)")
	fs.IntVar(&f.batchMaxBytes, "batch-max-bytes", d.Consensus.BatchMaxBytes, "... or this many bytes (config: consensus.batch_max_bytes)")
	fs.DurationVar(&f.batchTimeout, "batch-timeout", d.Consensus.BatchTimeout, "... or this long after its first request (config: consensus.batch_timeout)")
	fs.IntVar(&f.maxInFlight, "max-in-flight", d.Consensus.MaxInFlight, "batches the primary keeps in flight (config: consensus.max_in_flight)")
	fs.DurationVar(&f.requestTimeout, "request-timeout", d.Consensus.RequestTimeout, "how long a known request may wait to execute before the replicas change view (config: consensus.request_timeout)")
	fs.DurationVar(&f.viewChangeTimeout, "view-change-timeout", d.Consensus.ViewChangeTimeout, "how long to wait for a NEW-VIEW, doubling on each further view change (config: consensus.view_change_timeout)")
	fs.DurationVar(&f.retransmitTimeout, "retransmit-timeout", d.Consensus.RetransmitTimeout, "how long a replica without progress waits before resending and fetching what it misses (config: consensus.retransmit_timeout)")
	fs.StringVar(&f.apiAddr, "api", d.API.HTTP, "HTTP API and /metrics listen address; loopback by default, empty disables (config: api.http)")
	fs.BoolVar(&f.pprof, "pprof", d.API.Pprof, "serve Go runtime profiles under /debug/pprof/ on the HTTP API, to loopback clients (config: api.pprof)")
	fs.BoolVar(&f.trace, "trace", d.Trace.Enabled, "keep per-slot consensus records for /v1/trace and the phase histograms of /metrics (config: trace.enabled)")
	fs.IntVar(&f.traceSlots, "trace-slots", d.Trace.Slots, "how many of the latest slots the records keep (config: trace.slots)")
	fs.StringVar(&f.dataDir, "data-dir", d.Store.Dir, "data directory, relative to the home (config: store.dir)")
	fs.BoolVar(&f.storeSync, "store-sync", d.Store.Sync, "fsync before consensus messages leave; false breaks crash safety, for experiments only (config: store.sync)")
	fs.IntVar(&f.memTableSize, "store-memtable-size", d.Store.MemTableSize, "the database's write buffer in bytes, which also sizes its write-ahead logs on disk; 67108864 is the large setting (config: store.memtable_size)")
	fs.StringVar(&f.logLevel, "log-level", d.Log.Level, "debug, info, warn or error (config: log.level)")
	fs.StringVar(&f.logFormat, "log-format", d.Log.Format, "text or json (config: log.format)")
	fs.StringVar(&f.byzantineMode, "byzantine-mode", d.Experiment.ByzantineMode, "EXPERIMENTS ONLY: misbehave as a Byzantine replica: "+strings.Join(config.ByzantineModes, ", ")+"; refused unless --experiment-byzantine is given too (config: experiment.byzantine_mode)")
	fs.DurationVar(&f.byzantineDelay, "byzantine-delay", d.Experiment.ByzantineDelay, "EXPERIMENTS ONLY: how long the delay mode holds each message and reply (config: experiment.byzantine_delay)")
	fs.Float64Var(&f.byzantineDropRate, "byzantine-drop-rate", d.Experiment.ByzantineDropRate, "EXPERIMENTS ONLY: fraction of messages and replies the drop mode drops, in (0, 1] (config: experiment.byzantine_drop_rate)")
	fs.Uint64Var(&f.byzantineSeed, "byzantine-seed", d.Experiment.ByzantineSeed, "EXPERIMENTS ONLY: seed of the drop and garbage modes' random choices (config: experiment.byzantine_seed)")
	fs.BoolVar(&f.adminAPI, "experiment-admin-api", d.Experiment.AdminAPI, "EXPERIMENTS ONLY: serve /admin/partition and /admin/heal on the HTTP API, to loopback clients (config: experiment.admin_api)")
	return f
}

// apply sets the options whose flags were given.
func (f *configFlags) apply(fs *pflag.FlagSet, cfg *config.Config) {
	set := func(name string, do func()) {
		if fs.Changed(name) {
			do()
		}
	}
	set("moniker", func() { cfg.Moniker = f.moniker })
	set("genesis", func() { cfg.Genesis = f.genesis })
	set("key", func() { cfg.Key = f.key })
	set("listen", func() { cfg.P2P.Listen = f.listen })
	set("bootstrap", func() { cfg.P2P.Bootstrap = f.bootstrap })
	set("external", func() { cfg.P2P.External = f.external })
	set("mdns", func() { cfg.P2P.MDNS = f.mdns })
	set("broadcast", func() { cfg.P2P.Broadcast = f.broadcast })
	set("max-message-size", func() { cfg.P2P.MaxMessageSize = f.maxMessageSize })
	set("tick", func() { cfg.Consensus.Tick = f.tick })
	set("checkpoint-interval", func() { cfg.Consensus.CheckpointInterval = f.checkpointInterval })
	set("window", func() { cfg.Consensus.Window = f.window })
	set("batch-max-requests", func() { cfg.Consensus.BatchMaxRequests = f.batchMaxRequests })
	set("batch-max-bytes", func() { cfg.Consensus.BatchMaxBytes = f.batchMaxBytes })
	set("batch-timeout", func() { cfg.Consensus.BatchTimeout = f.batchTimeout })
	set("max-in-flight", func() { cfg.Consensus.MaxInFlight = f.maxInFlight })
	set("request-timeout", func() { cfg.Consensus.RequestTimeout = f.requestTimeout })
	set("view-change-timeout", func() { cfg.Consensus.ViewChangeTimeout = f.viewChangeTimeout })
	set("retransmit-timeout", func() { cfg.Consensus.RetransmitTimeout = f.retransmitTimeout })
	set("api", func() { cfg.API.HTTP = f.apiAddr })
	set("pprof", func() { cfg.API.Pprof = f.pprof })
	set("trace", func() { cfg.Trace.Enabled = f.trace })
	set("trace-slots", func() { cfg.Trace.Slots = f.traceSlots })
	set("data-dir", func() { cfg.Store.Dir = f.dataDir })
	set("store-sync", func() { cfg.Store.Sync = f.storeSync })
	set("store-memtable-size", func() { cfg.Store.MemTableSize = f.memTableSize })
	set("log-level", func() { cfg.Log.Level = f.logLevel })
	set("log-format", func() { cfg.Log.Format = f.logFormat })
	set("byzantine-mode", func() { cfg.Experiment.ByzantineMode = f.byzantineMode })
	set("byzantine-delay", func() { cfg.Experiment.ByzantineDelay = f.byzantineDelay })
	set("byzantine-drop-rate", func() { cfg.Experiment.ByzantineDropRate = f.byzantineDropRate })
	set("byzantine-seed", func() { cfg.Experiment.ByzantineSeed = f.byzantineSeed })
	set("experiment-admin-api", func() { cfg.Experiment.AdminAPI = f.adminAPI })
}

func newStartCmd(opts *rootOptions) *cobra.Command {
	var flags *configFlags
	var apiSessions int
	var allowByzantine bool
	cmd := &cobra.Command{
		Use:   "start [--home DIR] [--bootstrap MULTIADDR]...",
		Short: "Run a replica until interrupted",
		Long: `start runs the replica whose home directory is --home: it loads config.toml, applies the flags given
on top of it, opens the store, joins the chain's peer-to-peer network and serves the HTTP API
(loopback by default). It runs until SIGINT or SIGTERM, then shuts down cleanly: the HTTP API stops
accepting work, the event loop stops, the store is closed. A second signal during shutdown exits at once
(the store is crash-safe either way).

Before it starts, it checks what is often wrong and says how to fix it: a missing home directory, a
node key that other users can read, a genesis that does not list this node, a listen address in use.

Logs go to standard error (--log-format text or json); every consensus line carries the replica index
and the view.

For fault-injection experiments only, a replica can misbehave on purpose: --byzantine-mode (or
experiment.byzantine_mode in config.toml) names the misbehaviour, and it takes effect only together with
the explicit --experiment-byzantine flag; a mode without the flag is refused, so a configuration copied
from an experiment never starts a Byzantine replica by accident. --experiment-admin-api serves partition
and heal endpoints to loopback clients (see "p2pbft scenario").`,
		Example: `  p2pbft start --home ~/.p2pbft
  p2pbft start --home n1 --bootstrap /ip4/10.0.0.1/tcp/26690/p2p/12D3KooW... --api 127.0.0.1:26681
  p2pbft start --home n0 --log-format json --log-level debug
  p2pbft start --home n3 --experiment-byzantine --byzantine-mode equivocate   # experiments only`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(opts.home)
			if err != nil {
				return err
			}
			flags.apply(cmd.Flags(), &cfg)
			if err := cfg.Validate(); err != nil {
				return withCode(exitUsage, err) // a bad value, from a flag or config.toml
			}
			return runStart(cmd.Context(), cfg, opts, apiSessions, allowByzantine, cmd.ErrOrStderr())
		},
	}
	homeFlag(cmd.Flags(), opts)
	flags = addConfigFlags(cmd.Flags())
	cmd.Flags().IntVar(&apiSessions, "api-sessions", 16, "signing sessions of the HTTP API: how many JSON transactions can be outstanding at once")
	cmd.Flags().BoolVar(&allowByzantine, "experiment-byzantine", false, "EXPERIMENTS ONLY: allow this replica to run the Byzantine mode --byzantine-mode (or experiment.byzantine_mode) names; never set it on a real node")
	return cmd
}

// runStart runs a replica and its API until ctx ends.
func runStart(ctx context.Context, cfg config.Config, opts *rootOptions, apiSessions int, allowByzantine bool, logOut io.Writer) error {
	log, err := newLogger(logOut, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return err
	}
	// libp2p's own logs: warnings and errors only, unless we debug.
	libLevel := slog.LevelWarn
	if cfg.Log.Level == "debug" {
		libLevel = slog.LevelDebug
	}
	opts.logs.set(log.Handler(), libLevel)

	// The API address first: failing here leaves the store untouched.
	var ln net.Listener
	if cfg.API.HTTP != "" {
		if ln, err = api.Listen(cfg.API.HTTP); err != nil {
			return err
		}
		defer ln.Close()
	}
	if allowByzantine && cfg.Experiment.ByzantineMode == "" {
		return errors.New("--experiment-byzantine without a mode: give --byzantine-mode (" + strings.Join(config.ByzantineModes, ", ") + ") or set experiment.byzantine_mode")
	}
	// The experiment comes from the configuration, with the flag as its opt-in: a mode without the flag
	// makes New refuse to start.
	nlog := log
	if cfg.Moniker != "" {
		nlog = log.With("moniker", cfg.Moniker)
	}
	n, err := node.New(cfg, node.Options{Logger: nlog,
		Experiment: node.ExperimentFromConfig(cfg.Experiment, allowByzantine)})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// After the first signal, a second one must kill the process.
	stopForcing := context.AfterFunc(ctx, func() {
		signal.Reset(os.Interrupt, syscall.SIGTERM)
		log.Info("shutting down (signal again to exit at once)")
	})
	defer stopForcing()

	apiDone := make(chan error, 1)
	if ln != nil {
		opts := api.Options{Sessions: apiSessions, Logger: log, Pprof: cfg.API.Pprof}
		if cfg.Experiment.AdminAPI {
			opts.Admin = n // the replica cuts itself off from others on request
		}
		srv, err := api.New(n, opts)
		if err != nil {
			n.Close()
			return err
		}
		if cfg.Experiment.AdminAPI {
			log.Warn("EXPERIMENT: the HTTP API serves /admin/partition and /admin/heal to loopback clients (experiment.admin_api)")
		}
		go func() {
			err := srv.Serve(ctx, ln)
			if err != nil {
				log.Error("HTTP API failed; stopping the replica", "err", err)
				cancel()
			}
			apiDone <- err
		}()
	} else {
		apiDone <- nil
		log.Info("HTTP API disabled (api.http is empty)")
	}
	runErr := n.Run(ctx)
	cancel()
	apiErr := <-apiDone
	if runErr != nil {
		return fmt.Errorf("replica stopped: %w", runErr)
	}
	if apiErr != nil && !errors.Is(apiErr, context.Canceled) {
		return apiErr
	}
	return nil
}
