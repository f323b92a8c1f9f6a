package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/p2pbft/p2pbft/internal/buildinfo"
	"github.com/p2pbft/p2pbft/internal/logs"
	"github.com/p2pbft/p2pbft/node/config"
)

// rootOptions are what the subcommands share.
type rootOptions struct {
	// home is the --home of the commands that use a node's home directory (homeFlag).
	home string
	// logs routes go-libp2p's logs; nil in tests (then they are left alone).
	logs *libp2pLogs
}

// defaultP2PPort is the default p2p port, for help texts.
var defaultP2PPort = strconv.Itoa(config.DefaultP2PPort)

// envHome names the environment variable that sets the default of --home.
const envHome = "P2PBFT_HOME"

// newRootCmd builds the command tree (for tests: go-libp2p's logs are left alone).
func newRootCmd() *cobra.Command { return newRootCmdWith(nil) }

func newRootCmdWith(lib *libp2pLogs) *cobra.Command {
	opts := &rootOptions{logs: lib}
	root := &cobra.Command{
		Use:   "p2pbft",
		Short: "A PBFT replica over libp2p",
		Long: `p2pbft runs Practical Byzantine Fault Tolerance (Castro and Liskov) over libp2p.

Replicas find each other through libp2p, multicast signed consensus messages over gossipsub and commit
batches of client transactions into a hash-linked chain of blocks, each with a certificate that proves it.

Quick start, one machine:
  p2pbft testnet                       # 4 replicas as local processes, with a demo load

By hand, per node:
  p2pbft init --home ~/.p2pbft         # node key and config.toml
  p2pbft genesis ...                   # once, from every replica's peer ID; copy to every home
  p2pbft start --home ~/.p2pbft --bootstrap /ip4/10.0.0.1/tcp/` + defaultP2PPort + `/p2p/12D3KooW...

Environment:
  P2PBFT_HOME      the default of --home (else ~/.p2pbft)
  GOLOG_LOG_LEVEL  set: go-libp2p logs to standard error on its own, at this level (e.g. "warn", "identify=debug")

` + exitCodes,
		Version:       buildinfo.Read().String(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("p2pbft {{.Version}}\n")
	root.AddCommand(
		newInitCmd(opts),
		newKeygenCmd(),
		newIDCmd(opts),
		newGenesisCmd(),
		newStartCmd(opts),
		newStatusCmd(opts),
		newTraceCmd(),
		newResetCmd(opts),
		newTxCmd(opts),
		newTestnetCmd(opts),
		newBenchCmd(),
		newScenarioCmd(),
		newVersionCmd(),
	)
	classifyUsage(root)
	return root
}

// homeFlag adds --home to a command that uses a node's home directory (flags is the command's own, or
// its persistent set for a command whose subcommands use it).
func homeFlag(flags *pflag.FlagSet, opts *rootOptions) {
	flags.StringVar(&opts.home, "home", defaultHome(), "the node's home directory: key, config.toml, genesis, data (default from $"+envHome+", else ~/.p2pbft)")
}

func defaultHome() string {
	if h := os.Getenv(envHome); h != "" {
		return h
	}
	if d, err := os.UserHomeDir(); err == nil {
		return d + "/.p2pbft"
	}
	return ".p2pbft"
}

func newVersionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version and the revision the binary was built from (also: p2pbft --version)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bi := buildinfo.Read()
			if asJSON {
				return printJSON(cmd.OutOrStdout(), struct {
					Version   string `json:"version"`
					Revision  string `json:"revision,omitempty"`
					Modified  bool   `json:"modified,omitempty"`
					GoVersion string `json:"go_version"`
				}{bi.Version, bi.Revision, bi.Modified, bi.GoVersion})
			}
			_, err := fmt.Fprintln(cmd.OutOrStdout(), "p2pbft", bi)
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// version is the binary's version line, recorded in bench and scenario results.
func version() string { return buildinfo.Read().String() }

// printJSON writes v as indented JSON and a newline.
func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

// newLogger builds the process logger from the config's log settings. Every key appears once per line
// (logs.Dedup): the node, its p2p host and their parts each add what they know.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("log level %q: want debug, info, warn or error", level)
	}
	hopts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(logs.Dedup(slog.NewTextHandler(w, hopts))), nil
	case "json":
		return slog.New(logs.Dedup(slog.NewJSONHandler(w, hopts))), nil
	default:
		return nil, usagef("log format %q: want text or json", format)
	}
}
