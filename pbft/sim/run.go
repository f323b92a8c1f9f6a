package sim

import (
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
)

// RunSeed runs the simulation of one seed. trace, if not nil, receives the event trace.
func RunSeed(seed int64, ns []int, faults []Fault, trace io.Writer) *Result {
	return NewCluster(Plan(seed, ns, faults), trace).Run()
}

// ReplayCommand is the command that replays a seed with a trace.
func ReplayCommand(seed int64, ns []int, faults []Fault) string {
	return fmt.Sprintf("go run ./pbft/sim/cmd/pbftsim --replay %d -n %s --faults %s --trace", seed, joinInts(ns), joinFaults(faults))
}

func joinInts(ns []int) string {
	s := ""
	for i, n := range ns {
		if i > 0 {
			s += ","
		}
		s += fmt.Sprint(n)
	}
	return s
}

func joinFaults(fs []Fault) string {
	if len(fs) == len(AllFaults) {
		return "all"
	}
	if len(fs) == 0 {
		return "none"
	}
	s := ""
	for i, f := range fs {
		if i > 0 {
			s += ","
		}
		s += string(f)
	}
	return s
}

// Campaign is the summary of many runs.
type Campaign struct {
	Seeds              int64
	Failed             []*Result
	Ticks              int64
	Requests           int64
	Batches            int64
	ViewChanges        uint64
	NewViews           uint64
	StableCheckpoints  uint64
	StateTransfers     uint64
	SnapshotsInstalled uint64
	OlderSnapshots     int64 // snapshots installed below the checkpoint asked for
	CertCommits        uint64
	Fetches            uint64
	Wipes              int64 // restarts from an empty disk
	WipedSeeds         int64 // seeds with at least one
	Rejected           map[string]uint64
	ByN                map[int]int64
	Split              SplitStats      // summed over the seeds
	SplitSeeds         int64           // seeds that drew the certsplit fault
	Adversary          AdversaryCounts // slow networks and tampered catch-up answers
	// AsyncSeeds counts the seeds whose replicas persisted asynchronously (FaultAsyncPersist); LostRounds
	// and LostMessages the rounds crashes lost before their sync, and those of them with messages.
	AsyncSeeds, LostRounds, LostMessages int64
}

// RunSeeds runs seeds [first, first+count) on `workers` goroutines (0: GOMAXPROCS). progress, if not nil, is
// called (from the workers, serialized) after each run; when it returns false no further seeds start.
func RunSeeds(first, count int64, ns []int, faults []Fault, workers int, progress func(done int64, r *Result) bool) *Campaign {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	camp := &Campaign{Rejected: map[string]uint64{}, ByN: map[int]int64{}}
	var next atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= count {
					return
				}
				r := RunSeed(first+i, ns, faults, nil)
				mu.Lock()
				camp.add(r)
				if progress != nil && !progress(camp.Seeds, r) {
					next.Store(count)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return camp
}

func (c *Campaign) add(r *Result) {
	c.Seeds++
	c.ByN[r.Options.N]++
	if len(r.Violations) > 0 {
		c.Failed = append(c.Failed, r)
	}
	c.Ticks += r.Ticks
	c.Requests += int64(r.Requests)
	c.Batches += int64(r.MaxSeq)
	s := r.Stats
	c.ViewChanges += s.ViewChanges
	c.NewViews += s.NewViews
	c.StableCheckpoints += s.StableCheckpoints
	c.StateTransfers += s.StateTransfers
	c.SnapshotsInstalled += s.SnapshotsInstalled
	c.OlderSnapshots += int64(r.OlderSnapshots)
	c.CertCommits += s.CertCommits
	c.Fetches += s.Fetches
	c.Wipes += int64(r.Wipes)
	if r.Wipes > 0 {
		c.WipedSeeds++
	}
	for k, v := range s.Rejected {
		c.Rejected[string(k)] += v
	}
	c.Split.add(r.Split)
	if r.Options.has(FaultCertSplit) {
		c.SplitSeeds++
	}
	c.Adversary.add(r.Adversary)
	if r.Options.has(FaultAsyncPersist) {
		c.AsyncSeeds++
	}
	c.LostRounds += int64(r.LostRounds)
	c.LostMessages += int64(r.LostMessages)
}
