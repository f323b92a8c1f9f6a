// Command pbftsim runs the PBFT simulator: a long campaign of seeds in parallel, or one seed replayed with a
// trace.
//
//	go run ./pbft/sim/cmd/pbftsim --seeds 100000 -n 4,7,10 --faults all
//	go run ./pbft/sim/cmd/pbftsim --replay 1234 -n 4,7 --faults all --trace
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/p2pbft/p2pbft/pbft/sim"
	"github.com/spf13/cobra"
)

func main() {
	if err := newCommand().Execute(); err != nil {
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	var (
		seeds   int64
		first   int64
		nsFlag  string
		faults  string
		workers int
		replay  int64
		trace   bool
		every   time.Duration
		stopAt  int
	)
	cmd := &cobra.Command{
		Use:   "pbftsim",
		Short: "Run the deterministic PBFT simulator",
		Long: `pbftsim runs the deterministic PBFT simulator of package pbft/sim.

Each seed builds a network of replicas (n drawn from -n), clients, and a random mix of the faults allowed by
--faults (loss, dup, delay, partition, asym, crash, wipe, certsplit, slow, asyncpersist, and Byzantine replicas:
silent, equivocate, forge, stale, twins), runs it on a virtual clock, and checks agreement, checkpoint agreement,
exactly-once execution, non-equivocation of correct replicas across restarts and wipes, the memory bounds, and
liveness after the faults heal. The same seed with the same -n and -faults always replays the same run.

slow: after the heal every message takes 1.5 to 3 times the base view-change timeout until a new request
executes, which must happen within a bound derived from the engine's timeout backoff (an engine without the
backoff never commits). Forging and equivocating replicas serve lagging replicas tampered catch-up data of the
right size: fetch replies and blocks with altered certified batches (under the real certificate, or under
COMMITs they sign themselves), and snapshots with an altered application digest or client table, or another
checkpoint's state. The report counts the slow runs and how many tampered answers the engine rejected.

asyncpersist (half the seeds that allow it) drives the replicas as the node does: a round's writes are applied
and the engine advanced at once, and the round's messages and executed blocks wait for a simulated disk sync
(SyncMin..SyncMax time units, in commit order); a crash loses the rounds not yet durable, and power cuts crash
a replica with such rounds pending and restart it within ten ticks. The report counts the lost rounds.

certsplit is a targeted schedule of deliveries: a batch prepares at one replica only in view v, another batch
commits at its sequence number in view v+1 without that replica, and the NEW-VIEW of view v+2 holds both
prepared certificates (the one of the highest view must win). The report counts the rounds and every NEW-VIEW
whose view changes hold prepared certificates for one sequence number from different views.

A campaign (--seeds N) runs seeds in parallel, prints progress, and ends with a report; it exits with status 1
if any seed violated an invariant, and prints the command that replays each failing seed. --replay S runs one
seed (with --trace, every notable event).`,
		Example: `  pbftsim --seeds 100000 -n 4,7,10 --faults all
  pbftsim --replay 1234 -n 4,7 --faults all --trace`,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, err := parseInts(nsFlag)
			if err != nil {
				return err
			}
			fs, err := sim.ParseFaults(faults)
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("replay") {
				return runOne(replay, ns, fs, trace)
			}
			return runCampaign(first, seeds, ns, fs, workers, every, stopAt)
		},
	}
	f := cmd.Flags()
	f.Int64Var(&seeds, "seeds", 1000, "number of seeds to run")
	f.Int64Var(&first, "first", 1, "first seed")
	f.StringVarP(&nsFlag, "replicas", "n", "4,7", "replica counts to draw from, comma-separated")
	f.StringVar(&faults, "faults", "all", "faults to draw from: all, none, or a comma-separated list")
	f.IntVar(&workers, "workers", runtime.GOMAXPROCS(0), "seeds run in parallel")
	f.Int64Var(&replay, "replay", 0, "run only this seed and print its result")
	f.BoolVar(&trace, "trace", false, "with --replay: print the event trace")
	f.DurationVar(&every, "progress", 5*time.Second, "progress report interval")
	f.IntVar(&stopAt, "stop-after", 0, "stop the campaign after this many failing seeds (0: run them all)")
	return cmd
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, p := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad replica count %q", p)
		}
		out = append(out, n)
	}
	return out, nil
}

func runOne(seed int64, ns []int, fs []sim.Fault, trace bool) error {
	var w *os.File
	if trace {
		w = os.Stdout
	}
	opt := sim.Plan(seed, ns, fs)
	fmt.Println(opt)
	r := sim.NewCluster(opt, w).Run()
	fmt.Printf("ticks=%d requests=%d batches=%d view-changes=%d new-views=%d stable-checkpoints=%d state-transfers=%d snapshots=%d cert-commits=%d fetches=%d wipes=%d\n",
		r.Ticks, r.Requests, r.MaxSeq, r.Stats.ViewChanges, r.Stats.NewViews, r.Stats.StableCheckpoints, r.Stats.StateTransfers,
		r.Stats.SnapshotsInstalled, r.Stats.CertCommits, r.Stats.Fetches, r.Wipes)
	fmt.Printf("lost rounds: %d (%d with messages)\n", r.LostRounds, r.LostMessages)
	fmt.Printf("certsplit: %+v\n", r.Split)
	fmt.Printf("rejected: %v\ndropped by transport: %v\n", r.Stats.Rejected, r.Dropped)
	fmt.Printf("adversary: %+v\n", r.Adversary)
	if len(r.Violations) > 0 {
		for _, v := range r.Violations {
			fmt.Println("VIOLATION:", v)
		}
		return fmt.Errorf("seed %d violated an invariant", seed)
	}
	fmt.Println("ok")
	return nil
}

func runCampaign(first, count int64, ns []int, fs []sim.Fault, workers int, every time.Duration, stopAt int) error {
	start := time.Now()
	last := start
	fmt.Printf("running %d seeds from %d, n in %v, faults %v, %d workers\n", count, first, ns, fs, workers)
	failed := 0
	camp := sim.RunSeeds(first, count, ns, fs, workers, func(done int64, r *sim.Result) bool {
		if len(r.Violations) > 0 {
			failed++
			fmt.Printf("FAIL seed %d (%s): %v\n  replay: %s\n", r.Options.Seed, r.Options, r.Violations[0],
				sim.ReplayCommand(r.Options.Seed, ns, fs))
		}
		if now := time.Now(); now.Sub(last) >= every || done == count {
			last = now
			el := now.Sub(start)
			rate := float64(done) / el.Seconds()
			eta := time.Duration(float64(count-done)/rate) * time.Second
			fmt.Printf("%d/%d seeds (%.1f%%), %.0f seeds/s, %d failed, elapsed %s, eta %s\n", done, count,
				100*float64(done)/float64(count), rate, failed, el.Round(time.Second), eta.Round(time.Second))
		}
		if stopAt > 0 && failed >= stopAt {
			fmt.Printf("stopping after %d failing seeds\n", failed)
			return false
		}
		return true
	})
	el := time.Since(start)
	fmt.Printf("\n== report ==\nseeds run:            %d (%s)\nseeds/s:              %.1f\nelapsed:              %s\n",
		camp.Seeds, byN(camp.ByN), float64(camp.Seeds)/el.Seconds(), el.Round(time.Second))
	fmt.Printf("requests completed:   %d\nbatches committed:    %d (agreed chain length, summed over seeds)\nview changes:         %d VIEW-CHANGEs sent, %d views entered via NEW-VIEW\nstable checkpoints:   %d\nstate transfers:      %d asked, %d by snapshot (%d of an older certified checkpoint)\ncertificate commits:  %d\nfetches:              %d\n",
		camp.Requests, camp.Batches, camp.ViewChanges, camp.NewViews, camp.StableCheckpoints, camp.StateTransfers,
		camp.SnapshotsInstalled, camp.OlderSnapshots, camp.CertCommits, camp.Fetches)
	fmt.Printf("wipes:                %d restarts from an empty disk, in %d seeds\n", camp.Wipes, camp.WipedSeeds)
	fmt.Printf("asyncpersist:         %d seeds; crashes lost %d rounds before their sync, %d of them with messages\n", camp.AsyncSeeds, camp.LostRounds, camp.LostMessages)
	sp := camp.Split
	fmt.Printf("certsplit:            %d seeds, %d rounds, %d with the batch prepared at one replica only, %d NEW-VIEWs of v+2 with both certificates (%d for different batches)\n",
		camp.SplitSeeds, sp.Rounds, sp.Minority, sp.Hits, sp.HitsConflicting)
	fmt.Printf("mixed NEW-VIEWs:      %d with prepared certificates for one sequence number from different views (%d for different batches)\n",
		sp.MixedNewViews, sp.ConflictingNewViews)
	a := camp.Adversary
	fmt.Printf("slow networks:        %d seeds, %d of which progressed: the first request issued after the heal executed %d ticks after it on average, %d at most\n",
		a.SlowSeeds, a.SlowProgressed, a.SlowProgressTicks/max(1, a.SlowProgressed), a.SlowProgressMax)
	fmt.Printf("tampered answers:     %d fetch replies delivered (%d rejected), %d blocks (%d rejected), %d snapshots (%d rejected)\n",
		a.FetchReplies, a.FetchRepliesRejected, a.Blocks, a.BlocksRejected, a.Snapshots, a.SnapshotsRejected)
	fmt.Printf("rejected by reason:   %v\n", camp.Rejected)
	fmt.Printf("violations:           %d seeds\n", len(camp.Failed))
	if len(camp.Failed) > 0 {
		return fmt.Errorf("%d of %d seeds violated an invariant", len(camp.Failed), camp.Seeds)
	}
	return nil
}

func byN(m map[int]int64) string {
	var parts []string
	for n := 1; n <= 1024; n++ {
		if c, ok := m[n]; ok {
			parts = append(parts, fmt.Sprintf("n=%d: %d", n, c))
		}
	}
	return strings.Join(parts, ", ")
}
