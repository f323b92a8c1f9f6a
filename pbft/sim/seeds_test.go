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
	checkAdversaries(t, camp, count >= ciSeeds) // adversary_test.go
	for i, r := range camp.Failed {
		if i == 10 {
			t.Errorf("... and %d more failing seeds", len(camp.Failed)-10)
			break
		}
		t.Errorf("seed %d failed (%s):\n  %v\n  replay: %s", r.Options.Seed, r.Options, r.Violations, ReplayCommand(r.Options.Seed, ns, AllFaults))
	}
	_ = fmt.Sprint()
}
