package sim

import (
	"testing"
)

// checkAdversaries logs what the slow network and the tampering replicas did in a campaign and, for the
// whole CI budget (full), that they did it often enough to catch the engine mutations MUTATIONS.md lists,
// and that the engine rejected every tampered block and snapshot it looked at.
func checkAdversaries(t *testing.T, camp *Campaign, full bool) {
	t.Helper()
	a := camp.Adversary
	t.Logf("slow networks in %d seeds, %d of which progressed: the first request issued after the heal executed %d ticks after it on average, %d at most; tampered answers: %d fetch replies delivered (%d rejected), %d blocks (%d rejected), %d snapshots (%d rejected)",
		a.SlowSeeds, a.SlowProgressed, a.SlowProgressTicks/max(1, a.SlowProgressed), a.SlowProgressMax, a.FetchReplies, a.FetchRepliesRejected,
		a.Blocks, a.BlocksRejected, a.Snapshots, a.SnapshotsRejected)
	if a.BlocksRejected != a.Blocks || a.SnapshotsRejected != a.Snapshots {
		t.Errorf("the engine accepted %d tampered blocks and %d tampered snapshots", a.Blocks-a.BlocksRejected, a.Snapshots-a.SnapshotsRejected)
	}
	if !full {
		return
	}
	// Under the race detector the budget is 150 seeds: 7 slow runs, a few hundred tampered fetch replies,
	// but only a handful of tampered snapshots and blocks; the plain budget has many more.
	if a.SlowSeeds < 5 || a.FetchRepliesRejected < 20 || a.Snapshots < 1 || a.Blocks < 1 {
		t.Errorf("the CI budget exercised the adversaries too little: %d slow seeds, %d tampered fetch replies rejected, %d tampered snapshots, %d tampered blocks",
			a.SlowSeeds, a.FetchRepliesRejected, a.Snapshots, a.Blocks)
	}
}

// A slow network after the heal, at n=4 and n=7, with and without a Byzantine primary: the first new request
// executes within the bound, and the network is fast again after it.
func TestSlowNetwork(t *testing.T) {
	for _, n := range []int{4, 7} {
		for _, byz := range []map[int]Fault{nil, {0: FaultSilent}, {0: FaultForge}} {
			for seed := int64(1); seed <= scenarioSeeds; seed++ {
				o := scenario(seed, n, []Fault{FaultSlow}, byz)
				c := NewCluster(o, nil)
				r := c.Run()
				for _, v := range r.Violations {
					t.Errorf("%s: %s", o, v)
				}
				if r.Requests != o.Clients*o.RequestsPerClient {
					t.Errorf("%s: %d requests completed", o, r.Requests)
				}
				p := c.slow.progress
				if p <= 0 || p > c.slow.bound {
					t.Errorf("%s: first progress %d units after the heal, bound %d", o, p, c.slow.bound)
				}
				if c.slow.lo <= int64(c.config(0).RequestTimeout)*tickEvery {
					t.Errorf("%s: slow delays %d..%d not above the base timeout", o, c.slow.lo, c.slow.hi)
				}
			}
		}
	}
}

// slowBound for the simulator's configuration (base 40 ticks, hops up to 120, MaxBackoff 4), spelled out.
func TestSlowBound(t *testing.T) {
	base, hop := int64(400), int64(1200)
	ramp := (400 + 800 + 1600 + 3200 + 6400) + 5*3*hop // one failed view per doubling
	top := 6400 + 3*hop                                // a Byzantine primary at the top timeout
	if got, want := slowBound(base, hop, 4), 2*(ramp+2*top+4*hop); got != want {
		t.Fatalf("slowBound = %d, want %d", got, want)
	}
}

// A lagging replica behind a forging or equivocating one: it is served tampered fetch replies, blocks and
// snapshots, rejects every block and snapshot, and still catches up.
func TestTamperedCatchUp(t *testing.T) {
	var total AdversaryCounts
	for _, kind := range []Fault{FaultForge, FaultEquivocate} {
		for _, n := range []int{4, 7} {
			for seed := int64(1); seed <= 2*scenarioSeeds; seed++ {
				o := scenario(seed, n, []Fault{FaultPartition, FaultCrash, FaultLoss}, map[int]Fault{n - 1: kind})
				o.CheckpointInterval, o.Window = 2, 4 // checkpoints often, so that laggards transfer state
				r := runScenario(t, o)
				total.add(r.Adversary)
			}
		}
	}
	t.Logf("%+v", total)
	if total.FetchRepliesRejected == 0 || total.Blocks+total.Snapshots == 0 {
		t.Errorf("no tampered catch-up answer was rejected: %+v", total)
	}
	if total.BlocksRejected != total.Blocks || total.SnapshotsRejected != total.Snapshots {
		t.Errorf("tampered blocks or snapshots accepted: %+v", total)
	}
}
