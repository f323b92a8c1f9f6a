package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// rootOptions are the flags every subcommand shares.
type rootOptions struct {
	home string
	// logs routes go-libp2p's logs; nil in tests (then they are left alone).
	logs *libp2pLogs
}

// newRootCmd builds the command tree (for tests: go-libp2p's logs are left alone).
func newRootCmd() *cobra.Command { return newRootCmdWith(nil) }

func newRootCmdWith(logs *libp2pLogs) *cobra.Command {
	opts := &rootOptions{logs: logs}
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
  p2pbft start --home ~/.p2pbft --bootstrap /ip4/10.0.0.1/tcp/26656/p2p/12D3KooW...`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&opts.home, "home", defaultHome(), "the node's home directory (key, config.toml, genesis, data)")
	root.AddCommand(
		newInitCmd(opts),
		newKeygenCmd(),
		newIDCmd(opts),
		newGenesisCmd(),
		newStartCmd(opts),
		newStatusCmd(opts),
		newTxCmd(opts),
		newTestnetCmd(opts),
		newBenchCmd(),
		newScenarioCmd(),
		newVersionCmd(),
	)
	return root
}

func defaultHome() string {
	if h := os.Getenv("P2PBFT_HOME"); h != "" {
		return h
	}
	if d, err := os.UserHomeDir(); err == nil {
		return d + "/.p2pbft"
	}
	return ".p2pbft"
}

// version returns the module version and VCS revision the binary was built from.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v += " " + s.Value
		case "vcs.modified":
			if s.Value == "true" {
				v += " (modified)"
			}
		}
	}
	return v
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version and the revision the binary was built from",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), "p2pbft", version())
			return err
		},
	}
}

// newLogger builds the process logger from the config's log settings.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	hopts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, hopts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, hopts)), nil
	default:
		return nil, fmt.Errorf("log format %q: want text or json", format)
	}
}
