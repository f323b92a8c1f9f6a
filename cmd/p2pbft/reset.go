package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/p2pbft/p2pbft/node/config"
	"github.com/p2pbft/p2pbft/node/signstate"
	"github.com/p2pbft/p2pbft/node/store"
)

func newResetCmd(opts *rootOptions) *cobra.Command {
	var yes, asJSON bool
	cmd := &cobra.Command{
		Use:   "reset --home DIR --yes",
		Short: "Wipe a stopped replica's data (blocks, log, application state) so that it catches up afresh",
		Long: `reset deletes the data folder of the replica whose home is --home (store.dir in config.toml: the
chain of blocks, the consensus log and the application's state). It keeps the node key, config.toml,
genesis.toml and the signed state (signed_state): the record of the highest view and sequence number
this replica has signed. Started again, the replica catches up from the others (state transfer) and,
from the signed state, does not vote again where it already voted until it has moved past that point.

Use it when the store is damaged ("the data is damaged" at start) or to rejoin from scratch. The replica
must be stopped: reset refuses while a process has the store open. It asks for nothing: without --yes it
only says what it would delete.

Reset one replica at a time: until it has caught up, a reset replica takes no part in view changes (it
cannot vouch for what it forgot), so for the chain to stay live, reset replicas not yet caught up, crashed
and Byzantine ones together must be at most f. Wait until its height in "p2pbft status" has passed the
others' before resetting another.`,
		Example: `  p2pbft reset --home ~/.p2pbft          # what would be deleted
  p2pbft reset --home ~/.p2pbft --yes    # delete it`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(opts.home)
			if err != nil {
				return err
			}
			dir := cfg.Path(cfg.Store.Dir)
			out := cmd.OutOrStdout()
			st, hasMark, err := signstate.Read(cfg.Path(signstate.FileName))
			if err != nil {
				return fmt.Errorf("read the signed state: %w (reset keeps it; restore it from a backup before you wipe the data)", err)
			}
			if !yes {
				if asJSON {
					return printJSON(out, resetReport{Data: dir, SignedState: cfg.Path(signstate.FileName), Signed: markOf(st, hasMark)})
				}
				fmt.Fprintf(out, "would delete: %s (blocks, consensus log, application state)\n", dir)
				fmt.Fprintf(out, "would keep:   node key, config.toml, genesis.toml, %s\n", signstate.FileName)
				fmt.Fprintln(out, "run again with --yes to delete it (the replica must be stopped)")
				return nil
			}
			files, size, err := store.Wipe(dir)
			if errors.Is(err, store.ErrInUse) {
				return withCode(exitUnavailable, fmt.Errorf("%w: is the replica running? stop it first", err))
			}
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(out, resetReport{Data: dir, SignedState: cfg.Path(signstate.FileName), Signed: markOf(st, hasMark),
					Deleted: true, Files: files, Bytes: size})
			}
			fmt.Fprintf(out, "deleted %s (%d files, %.1f MB)\n", dir, files, float64(size)/1e6)
			if hasMark && !st.Mark.IsZero() {
				fmt.Fprintf(out, "kept %s: this replica signed up to %s; started again it catches up from the others and does not vote at or below that\n",
					signstate.FileName, st.Mark)
			} else {
				fmt.Fprintf(out, "kept the node key, config and genesis; started again the replica catches up from the others\n")
			}
			return nil
		},
	}
	homeFlag(cmd.Flags(), opts)
	cmd.Flags().BoolVar(&yes, "yes", false, "delete the data (without it reset only says what it would delete)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

// resetReport is reset's --json output.
type resetReport struct {
	Data        string      `json:"data"`
	SignedState string      `json:"signed_state"`
	Signed      *signedMark `json:"signed,omitempty"`
	Deleted     bool        `json:"deleted"`
	Files       int         `json:"files,omitempty"`
	Bytes       int64       `json:"bytes,omitempty"`
}

type signedMark struct {
	View uint64 `json:"view"`
	Seq  uint64 `json:"seq"`
}

func markOf(st signstate.State, ok bool) *signedMark {
	if !ok {
		return nil
	}
	return &signedMark{View: st.View, Seq: st.Seq}
}
