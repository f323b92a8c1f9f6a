package sim

import (
	"testing"

	"github.com/p2pbft/p2pbft/pbft"
)

// Targeted scenarios: one fault at a time, on chosen replicas, with the effects each must have.

func scenario(seed int64, n int, faults []Fault, byz map[int]Fault) Options {
	o := Options{Seed: seed, N: n, Faults: faults, Byzantine: byz, Clients: 3, RequestsPerClient: 12,
		CheckpointInterval: 4, Window: 8, FaultTicks: 400, LivenessTicks: 30000}
	for _, f := range byz {
		o.Faults = append(o.Faults, f)
	}
	if o.has(FaultLoss) {
		o.Loss = 0.1
	}
	if o.has(FaultDup) {
		o.Dup = 0.1
	}
	return o
}

func runScenario(t *testing.T, o Options) *Result {
	t.Helper()
	r := NewCluster(o, nil).Run()
	for _, v := range r.Violations {
		t.Errorf("%s: %s", o, v)
	}
	if r.Requests != o.Clients*o.RequestsPerClient {
		t.Errorf("%s: %d requests completed", o, r.Requests)
	}
	return r
}

// Each Byzantine behaviour, as the primary of view 0 and as a backup, at n=4 and n=7.
func TestByzantineBehaviours(t *testing.T) {
	for _, kind := range []Fault{FaultSilent, FaultEquivocate, FaultForge, FaultStale, FaultTwins} {
		for _, n := range []int{4, 7} {
			for _, who := range []int{0, n - 1} {
				for seed := int64(1); seed <= scenarioSeeds; seed++ {
					o := scenario(seed, n, nil, map[int]Fault{who: kind})
					r := runScenario(t, o)
					s := r.Stats
					switch {
					case kind == FaultSilent && who == 0 && s.NewViews == 0:
						t.Errorf("%s: a silent primary was not replaced", o)
					case (kind == FaultForge || kind == FaultEquivocate) && r.ForgedReplies == 0:
						t.Errorf("%s: no reply with a wrong result was sent", o)
					case kind == FaultForge && s.Rejected[pbft.ReasonBadCertificate]+uint64(r.Dropped["bad outer signature"]) == 0:
						t.Errorf("%s: no forgery was caught", o)
					case kind == FaultStale && s.Rejected[pbft.ReasonOutOfWindow]+s.Rejected[pbft.ReasonStaleView] == 0:
						t.Errorf("%s: no stale or out-of-window message was rejected", o)
					case kind == FaultEquivocate && who == 0 && s.Rejected[pbft.ReasonEquivocation]+s.Rejected[pbft.ReasonBadBatch] == 0 && s.ViewChanges == 0:
						t.Errorf("%s: the equivocating primary went unnoticed", o)
					}
				}
			}
		}
	}
}

// Two Byzantine replicas at n=7 (f=2), of different kinds, together.
func TestTwoByzantineReplicas(t *testing.T) {
	pairs := [][2]Fault{{FaultEquivocate, FaultForge}, {FaultSilent, FaultTwins}, {FaultStale, FaultEquivocate}, {FaultForge, FaultSilent}}
	for i, p := range pairs {
		runScenario(t, scenario(int64(10+i), 7, nil, map[int]Fault{0: p[0], 1: p[1]}))
	}
}

// Each network and crash fault alone, and all of them together, at n=4 and n=7; the lagging replicas catch up.
func TestNetworkAndCrashFaults(t *testing.T) {
	all := []Fault{FaultLoss, FaultDup, FaultDelay, FaultPartition, FaultAsym, FaultCrash}
	for _, n := range []int{4, 7} {
		for _, f := range all {
			for seed := int64(1); seed <= scenarioSeeds; seed++ {
				runScenario(t, scenario(seed, n, []Fault{f}, nil))
			}
		}
		for seed := int64(1); seed <= 1+2*scenarioSeeds; seed++ {
			r := runScenario(t, scenario(seed, n, all, nil))
			if r.Stats.StableCheckpoints == 0 {
				t.Errorf("n=%d seed %d: no checkpoint became stable", n, seed)
			}
		}
	}
}

// Larger replica sets run too.
func TestLargerClusters(t *testing.T) {
	for _, n := range []int{10, 13} {
		runScenario(t, scenario(1, n, []Fault{FaultLoss, FaultCrash}, map[int]Fault{0: FaultSilent, 3: FaultEquivocate, 5: FaultForge}))
	}
}

// FuzzSeed runs the simulation of a fuzzer-chosen seed (n=4 or 7, every fault allowed): `go test -fuzz
// FuzzSeed ./pbft/sim` explores seeds beyond the CI budget.
func FuzzSeed(f *testing.F) {
	for _, s := range []int64{1, 2, 3, 42, 1779, 2459} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, seed int64) {
		r := RunSeed(seed, []int{4, 7}, AllFaults, nil)
		if len(r.Violations) > 0 {
			t.Fatalf("seed %d: %v\nreplay: %s", seed, r.Violations, ReplayCommand(seed, []int{4, 7}, AllFaults))
		}
	})
}
