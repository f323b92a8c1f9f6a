package sim

import (
	"flag"
	"strings"
	"testing"
)

var flagEarlySendAll = flag.Bool("earlysend-all", false, "TestAsyncEarlySendCaught: run every asyncpersist seed of the budget (-seeds, -first) and count the failures")

// A driver that breaks the asynchronous-persist contract (pbft.Ready): it sends a round's messages at once,
// before the round's writes are durable. A crash then loses votes that others hold, and the restarted
// replica signs conflicting ones, which the non-equivocation invariant sees. The test runs the seeds of the
// CI budget that draw asyncpersist, in order, with the broken driver, and wants the simulator to flag it
// within the first earlySendSeeds of them (seed 1, the first, fails; MUTATIONS.md has the figures over the
// whole budget, from -earlysend-all). The correct driver passes these seeds in TestSeeds.
func TestAsyncEarlySendCaught(t *testing.T) {
	const earlySendSeeds = 100
	ns := []int{4, 7}
	runs, caught := 0, 0
	last := *flagFirst + int64(ciSeeds) - 1
	if *flagSeeds > 0 {
		last = *flagFirst + *flagSeeds - 1
	}
	byKind := map[string]int{}
	for seed := *flagFirst; seed <= last && (*flagEarlySendAll || runs < earlySendSeeds && caught == 0); seed++ {
		o := Plan(seed, ns, AllFaults)
		if !o.has(FaultAsyncPersist) {
			continue
		}
		runs++
		o.earlySend = true
		r := NewCluster(o, nil).Run()
		if len(r.Violations) == 0 {
			continue
		}
		caught++
		t.Logf("seed %d (%s): %s", seed, o, r.Violations[0])
		kind := "other"
		for _, k := range []string{"PRE-PREPAREs", "PREPAREs", "COMMITs", "VIEW-CHANGEs"} {
			if strings.Contains(r.Violations[0], "signed two "+k) {
				kind = k
				break
			}
		}
		byKind[kind]++
	}
	if caught == 0 {
		t.Errorf("a driver that sends before its writes are durable passed %d asyncpersist seeds", runs)
	}
	t.Logf("caught in %d of the first %d asyncpersist seeds: %v", caught, runs, byKind)
}
