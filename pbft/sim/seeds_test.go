package sim

import (
	"flag"
	"fmt"
	"testing"
)

var (
	flagSeeds = flag.Int64("seeds", 0, "number of simulator seeds for TestSeeds (default: the CI budget)")
	flagFirst = flag.Int64("first", 1, "first seed for TestSeeds")
)

// TestSeeds runs the CI seed budget with every fault, at n=4 and n=7. A failing seed prints the command that
// replays it with a trace.
func TestSeeds(t *testing.T) {
	count := int64(ciSeeds)
	if *flagSeeds > 0 {
		count = *flagSeeds
	}
	if testing.Short() {
		count = min(count, 100)
	}
	ns := []int{4, 7}
	camp := RunSeeds(*flagFirst, count, ns, AllFaults, 0, nil)
	t.Logf("%d seeds (n=4: %d, n=7: %d): %d requests, %d batches, %d view changes, %d new views, %d stable checkpoints, %d state transfers (%d snapshots), %d certificate commits, %d fetches, %d wipes in %d seeds",
		camp.Seeds, camp.ByN[4], camp.ByN[7], camp.Requests, camp.Batches, camp.ViewChanges, camp.NewViews, camp.StableCheckpoints,
		camp.StateTransfers, camp.SnapshotsInstalled, camp.CertCommits, camp.Fetches, camp.Wipes, camp.WipedSeeds)
	sp := camp.Split
	t.Logf("certsplit: %d seeds, %d rounds, %d with the batch prepared at one replica only, %d NEW-VIEWs of v+2 with both certificates (%d for different batches); NEW-VIEWs with certificates for one sequence number from different views: %d (%d for different batches)",
		camp.SplitSeeds, sp.Rounds, sp.Minority, sp.Hits, sp.HitsConflicting, sp.MixedNewViews, sp.ConflictingNewViews)
	if observed, rounds := certSplitFloors(count); count >= 100 && (sp.ConflictingNewViews < observed || sp.HitsConflicting < rounds) {
		t.Errorf("%d NEW-VIEWs held certificates for different batches at one sequence number from different views, %d of them at the end of a certsplit round; want at least %d and %d: the certsplit schedule no longer produces them",
			sp.ConflictingNewViews, sp.HitsConflicting, observed, rounds)
	}
	checkAdversaries(t, camp, count >= ciSeeds) // adversary_test.go
	t.Logf("asyncpersist: %d seeds; crashes lost %d rounds before their sync, %d of them with messages", camp.AsyncSeeds, camp.LostRounds, camp.LostMessages)
	if count >= 100 && (camp.AsyncSeeds < count/4 || camp.LostMessages < camp.AsyncSeeds/4) {
		t.Errorf("%d asyncpersist seeds of %d, with %d rounds with messages lost in crashes: want at least %d and %d",
			camp.AsyncSeeds, count, camp.LostMessages, count/4, camp.AsyncSeeds/4)
	}
	for i, r := range camp.Failed {
		if i == 10 {
			t.Errorf("... and %d more failing seeds", len(camp.Failed)-10)
			break
		}
		t.Errorf("seed %d failed (%s):\n  %v\n  replay: %s", r.Options.Seed, r.Options, r.Violations, ReplayCommand(r.Options.Seed, ns, AllFaults))
	}
	_ = fmt.Sprint()
}
