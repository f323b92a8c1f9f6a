package sim

import (
	"strings"
	"testing"
)

// A driver that breaks the asynchronous-persist contract (pbft.Ready): it sends a round's messages at once,
// before the round's writes are durable. A crash then loses votes that others hold, and the restarted
// replica signs conflicting ones, which the non-equivocation invariant sees. The test runs the seeds of the
// CI budget that draw asyncpersist, in order, with the broken driver, and wants the simulator to flag it
// within the first earlySendSeeds of them (the first of them, seed 1, fails; MUTATIONS.md has the figures). The correct
// driver passes these seeds in TestSeeds.
func TestAsyncEarlySendCaught(t *testing.T) {
	const earlySendSeeds = 100
	ns := []int{4, 7}
	runs, caught := 0, 0
	for seed := int64(1); runs < earlySendSeeds && caught == 0; seed++ {
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
		if !strings.Contains(r.Violations[0], "non-equivocation") {
			t.Errorf("seed %d: the broken driver was caught by another invariant than non-equivocation: %v", seed, r.Violations)
		}
	}
	if caught == 0 {
		t.Errorf("a driver that sends before its writes are durable passed %d asyncpersist seeds", runs)
	}
	t.Logf("caught in %d of the first %d asyncpersist seeds", caught, runs)
}
