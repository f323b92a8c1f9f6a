package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/p2pbft/p2pbft/bench/scenario"
)

func newScenarioCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "scenario",
		Short: "Run fault-injection scenarios (crashes, restarts, pauses, partitions, Byzantine replicas, WAN links) against a local testnet",
		Long: `A scenario is a TOML file: a network (n replicas as local processes, their configuration), a load,
a timeline of events (kill, stop, start, restart, pause, resume, partition, heal, byzantine, link,
heal-links) and what must hold: progress resumes within a bound after each event, returning replicas catch
up within a bound.

A scenario with a [network] section runs every replica on a host of its own (a Linux network namespace
with its own address) in a region, with the links between regions emulated in user space: one-way delay,
jitter, loss and bandwidth (a latency matrix), and one-way cuts (link events). It needs root.

After the load, every scenario checks that all correct replicas reach the same height and hold the same
chain (the same block hashes), and that every request the clients saw accepted (f+1 matching replies) is
in the chain exactly once (by the client table's rule: a request executes iff its timestamp is above the
last one executed for its client).

Example scenarios are in scenarios/ of the source tree; each has a short form (--short) that runs a few
seconds of load, which the test suite runs.`,
	}
	cmd.AddCommand(newScenarioRunCmd(), newScenarioCheckCmd())
	return cmd
}

func newScenarioRunCmd() *cobra.Command {
	var out, bin, image string
	var short, keep, useDocker bool
	var seed int64
	cmd := &cobra.Command{
		Use:   "run FILE",
		Short: "Run a scenario and write its result folder",
		Long: `run starts the scenario's network in the result folder, drives its load, applies its timeline,
checks what must hold, and writes the result folder:

  scenario.toml   the scenario as given
  run.json        the verdict, every check, every step (when, what, how long until progress resumed,
                  until a block committed in a new view, until a returning replica caught up), the seed,
                  the binary's version, the command to rerun it, and the load's figures and time series
  result.txt      the same for people
  plot.png        latency and throughput over time, with the events marked
  trace.json      the replicas' consensus trace records at the end of the run (see p2pbft trace), with
  trace.txt       the slowest slot, the view changes and the latest slots, trace.png the latest slots
  trace.png       as swimlanes (one lane per replica, phases coloured) and phases.png the time each
  phases.png      phase took
  logs/           every replica's log (--keep also keeps their keys and data in testnet/)

The replicas are local processes, or with --docker containers on a private docker network (their HTTP
APIs and p2p ports published on 127.0.0.1): kill, stop, start, pause and resume become docker kill, stop,
run, pause and unpause; a partition disconnects from the network every replica outside its largest side
(so such a replica reaches nobody, clients included). With [network] (root only) they are processes on
network namespaces joined by a link emulator, the load comes from the client's region, partitions cut
links, and run.json also records the network.

It exits with status 1 if a check fails.`,
		Example: `  p2pbft scenario run scenarios/primary-crash.toml
  p2pbft scenario run scenarios/offline-100k.toml --out results/offline
  p2pbft scenario run scenarios/rolling-restarts.toml --short --seed 7`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := scenario.Load(args[0], short)
			if err != nil {
				return err
			}
			if bin == "" {
				exe, err := os.Executable()
				if err != nil {
					return fmt.Errorf("find this program's binary (give --bin): %w", err)
				}
				bin = exe
			}
			if out == "" {
				out = filepath.Join("scenario-results", s.Name+"-"+time.Now().Format("20060102-150405"))
			}
			o, err := scenario.Run(cmd.Context(), s, scenario.Options{
				Binary: bin, Dir: out, Seed: seed, Keep: keep, Progress: cmd.ErrOrStderr(), Version: version(),
				Rerun: rerunCommand(out, short, useDocker), Docker: useDocker, DockerImage: image,
			})
			if o != nil {
				fmt.Fprintln(cmd.OutOrStdout())
				o.Summary(cmd.OutOrStdout(), err)
				fmt.Fprintf(cmd.OutOrStdout(), "\nresult folder: %s\n", out)
			}
			if err != nil {
				return err
			}
			if !o.Pass {
				return errors.New("scenario failed: see the checks above")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "the result folder (default scenario-results/NAME-TIME); must not exist or be empty")
	f.BoolVar(&short, "short", false, "run the scenario's short form (its [short] overrides: a few seconds of load)")
	f.Int64Var(&seed, "seed", 0, "seed of the load's keys and of random targets (default: the scenario's, else random)")
	f.BoolVar(&keep, "keep", false, "keep the replicas' homes (keys, data) in the result folder, not only their logs")
	f.StringVar(&bin, "bin", "", "the p2pbft binary the replicas run (default: this program)")
	f.BoolVar(&useDocker, "docker", false, "run the replicas as docker containers on a private network (the image is built FROM scratch around --bin, which must be static: CGO_ENABLED=0); partitions disconnect containers from the network")
	f.StringVar(&image, "docker-image", "p2pbft:scenario", "with --docker: the image to build (from --bin) and run")
	return cmd
}

// rerunCommand is the command that runs a result folder's scenario again (with its seed, filled in by
// the runner's outcome).
func rerunCommand(out string, short, useDocker bool) string {
	s := fmt.Sprintf("p2pbft scenario run %s --seed {seed}", filepath.Join(out, "scenario.toml"))
	if short {
		s += " --short"
	}
	if useDocker {
		s += " --docker"
	}
	return s
}

func newScenarioCheckCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "check FILE...",
		Short: "Check scenario files without running them",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var errs []string
			for _, p := range args {
				for _, short := range []bool{false, true} {
					s, err := scenario.Load(p, short)
					if err != nil {
						errs = append(errs, err.Error())
						break
					}
					if !short {
						fmt.Fprintf(cmd.OutOrStdout(), "%s: %s, n=%d, %d events\n", p, s.Name, s.N, len(s.Events))
					}
				}
			}
			if len(errs) > 0 {
				return errors.New(strings.Join(errs, "\n"))
			}
			return nil
		},
	}
}
