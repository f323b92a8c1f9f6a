package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/p2pbft/p2pbft/internal/timeline"
	"github.com/p2pbft/p2pbft/testnet"
)

func newTraceCmd() *cobra.Command {
	var dir string
	var apis []string
	var from uint64
	var limit int
	var asJSON bool
	var pngPath, phasesPath, in string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "trace [--dir DIR | --api ADDR... | --in FILE] [--from SEQ] [--limit N] [--json] [--png FILE] [--phases FILE]",
		Short: "Merge the consensus trace records of every replica into one timeline per slot",
		Long: `trace fetches GET /v1/trace from every replica of a local testnet (--dir, the folder of
"p2pbft testnet") or from the replicas whose HTTP APIs are given with --api (repeat it), and lines up their
records slot by slot (a sequence number in a view) and view change by view change.

For each slot it prints one line per replica with the times of its steps in milliseconds after the
primary's pre-prepare: pre-prepare sent or received, prepared and committed (the quorum moments, marked
with *), executed, durable (block synced to disk), replies handed out, and then the PREPAREs and COMMITs
it got, as replica@ms. For each view change, one line per replica: its VIEW-CHANGE, the NEW-VIEW and
the first commit in the new view, in milliseconds after the first VIEW-CHANGE sent.

--png FILE draws the latest slots (at most 12) as a swimlane picture: a group of lanes per slot, one lane
per replica, each phase a coloured bar on a common time axis, the quorum moments marked, and the view
changes in that time as bands. --phases FILE draws where the time of every slot fetched went, phase by
phase (a box per phase, over slots and replicas). --in FILE reads records saved before (the JSON of
trace --json, or trace.json of a bench or scenario result folder) instead of asking replicas.

Times come from each replica's clock: the timeline is exact on one machine and as good as the clocks'
synchronisation across machines. Replicas keep the records of their last slots only (trace.slots), and
none with trace.enabled off.`,
		Example: `  p2pbft trace --dir testnet/run --limit 5
  p2pbft trace --api 127.0.0.1:26680 --api 127.0.0.1:26681 --from 120 --limit 3
  p2pbft trace --dir testnet/run --json
  p2pbft trace --dir testnet/run --limit 1000 --png trace.png --phases phases.png
  p2pbft trace --in results/crash/trace.json --from 52 --limit 4 --png view-change.png`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 1 || limit > 10000 {
				return usagef("--limit %d: want 1 to 10000", limit)
			}
			var m *timeline.Trace
			if in != "" {
				if dir != "" || len(apis) > 0 {
					return usagef("give --in, or --dir or --api, not both")
				}
				f, err := os.Open(in)
				if err != nil {
					return fmt.Errorf("trace: %w", err)
				}
				all, err := timeline.Read(f)
				f.Close()
				if err != nil {
					return fmt.Errorf("trace: %s: %w", in, err)
				}
				m = all.Select(timeline.Query{From: from, Limit: limit})
			} else {
				urls, err := traceTargets(dir, apis)
				if err != nil {
					return err
				}
				ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
				defer cancel()
				m, err = timeline.Fetch(ctx, nil, urls, timeline.Query{From: from, Limit: limit})
				if errors.Is(err, timeline.ErrNoAnswer) {
					return withCode(exitUnavailable, fmt.Errorf("trace: %w", err))
				} else if err != nil {
					return err
				}
			}
			for _, s := range m.Sources {
				if s.Error != "" {
					fmt.Fprintf(cmd.ErrOrStderr(), "trace: warning: %s: %s\n", s.API, s.Error)
				} else if !s.Enabled {
					fmt.Fprintf(cmd.ErrOrStderr(), "trace: warning: replica %d (%s) keeps no records (trace.enabled is off)\n", s.Replica, s.API)
				}
			}
			title := fmt.Sprintf("p2pbft trace: %d replicas answered", answered(m))
			if in != "" {
				title = "p2pbft trace: " + in
			}
			if pngPath != "" {
				if err := timeline.WriteTimelinePNG(m, title, pngPath); err != nil {
					return err
				}
			}
			if phasesPath != "" {
				if err := timeline.WritePhasesPNG(m, title, phasesPath); err != nil {
					return err
				}
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), m)
			}
			timeline.WriteText(cmd.OutOrStdout(), m)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "the folder of a local testnet (p2pbft testnet --dir DIR): ask each of its replicas")
	f.StringArrayVar(&apis, "api", nil, "a replica's HTTP API, host:port or URL (repeat for each replica)")
	f.Uint64Var(&from, "from", 0, "the slots from this sequence number upward (default: the latest)")
	f.IntVar(&limit, "limit", 20, "at most this many slots")
	f.BoolVar(&asJSON, "json", false, "print the merged records as JSON")
	f.StringVar(&in, "in", "", "read merged records saved before (trace --json, or trace.json of a bench or scenario result folder) instead of asking replicas")
	f.StringVar(&pngPath, "png", "", "also draw the latest slots (at most 12) as a swimlane picture to this PNG file")
	f.StringVar(&phasesPath, "phases", "", "also draw how long each phase took, over every slot fetched, to this PNG file")
	f.DurationVar(&timeout, "timeout", 10*time.Second, "give up after this long")
	return cmd
}

// traceTargets returns the base URLs of the replicas' APIs, from --dir or --api.
func traceTargets(dir string, apis []string) ([]string, error) {
	switch {
	case dir != "" && len(apis) > 0:
		return nil, usagef("give --dir or --api, not both")
	case dir == "" && len(apis) == 0:
		return nil, usagef("give --dir DIR (a local testnet) or --api ADDR for each replica")
	case dir != "":
		n, err := testnet.Open(dir)
		if err != nil {
			return nil, err
		}
		var urls []string
		for _, ni := range n.Nodes() {
			if ni.API == "" {
				return nil, fmt.Errorf("trace: %s in %s has no HTTP API", ni.Name, dir)
			}
			urls = append(urls, "http://"+ni.API)
		}
		return urls, nil
	}
	urls := make([]string, len(apis))
	for i, a := range apis {
		u, err := apiURL(a, "")
		if err != nil {
			return nil, err
		}
		urls[i] = u
	}
	return urls, nil
}

// answered counts the replicas whose records t holds.
func answered(t *timeline.Trace) int {
	n := 0
	for _, s := range t.Sources {
		if s.Error == "" {
			n++
		}
	}
	return n
}
