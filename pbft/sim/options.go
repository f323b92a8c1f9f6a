package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/p2pbft/p2pbft/pbft"
)

// Fault is one kind of fault the simulation can inject.
type Fault string

// The faults. Network and crash faults stop when the fault period ends (the network heals, crashed replicas
// restart); Byzantine replicas stay Byzantine to the end.
const (
	FaultLoss       Fault = "loss"       // messages dropped
	FaultDup        Fault = "dup"        // messages delivered twice
	FaultDelay      Fault = "delay"      // long delays, so messages overtake each other
	FaultPartition  Fault = "partition"  // symmetric partitions that heal
	FaultAsym       Fault = "asym"       // one-way link failures that heal
	FaultCrash      Fault = "crash"      // crashes (sometimes between persisting and sending) and restarts
	FaultSilent     Fault = "silent"     // a Byzantine replica that sends nothing
	FaultEquivocate Fault = "equivocate" // a Byzantine replica that sends different batches and votes to different replicas
	FaultForge      Fault = "forge"      // a Byzantine replica that forges signatures, certificates and snapshots
	FaultStale      Fault = "stale"      // a Byzantine replica that replays old messages and floods far-away ones
	FaultTwins      Fault = "twins"      // two honest instances with the same key, each talking to part of the network
	FaultWipe       Fault = "wipe"       // a correct replica restarts from an empty disk, with only its signed mark
	FaultCertSplit  Fault = "certsplit"  // a batch prepares at one replica in view v, another commits at its sequence number in v+1, both certificates meet in v+2 (certsplit.go)
	FaultSlow       Fault = "slow"       // after the heal, every message takes longer than the base view-change timeout (slow.go)
	// FaultAsyncPersist is a way of driving the replicas rather than a fault: they apply their writes and
	// Advance at once, and send a round's messages once its writes are durable, as the node does
	// (persist.go); a crash loses the rounds not yet durable.
	FaultAsyncPersist Fault = "asyncpersist"
)

// AllFaults lists every fault.
var AllFaults = []Fault{FaultLoss, FaultDup, FaultDelay, FaultPartition, FaultAsym, FaultCrash, FaultSilent,
	FaultEquivocate, FaultForge, FaultStale, FaultTwins, FaultWipe, FaultCertSplit, FaultSlow, FaultAsyncPersist}

var byzantineFaults = []Fault{FaultSilent, FaultEquivocate, FaultForge, FaultStale, FaultTwins}

// ParseFaults parses a comma-separated fault list; "all" means every fault, "none" or "" none.
func ParseFaults(s string) ([]Fault, error) {
	if s == "" || s == "none" {
		return nil, nil
	}
	if s == "all" {
		return slices.Clone(AllFaults), nil
	}
	var out []Fault
	for _, p := range strings.Split(s, ",") {
		f := Fault(strings.TrimSpace(p))
		if !slices.Contains(AllFaults, f) {
			return nil, fmt.Errorf("unknown fault %q (known: %v, or all)", p, AllFaults)
		}
		out = append(out, f)
	}
	return out, nil
}

// Options describe one simulation run. Plan derives them from a seed.
type Options struct {
	Seed int64
	// N is the number of replicas.
	N int
	// Faults enabled in this run.
	Faults []Fault
	// Byzantine assigns a Byzantine behaviour to replica indexes (at most f of them).
	Byzantine map[int]Fault
	// Clients and RequestsPerClient: the load. Each client has one request outstanding at a time.
	Clients           int
	RequestsPerClient int
	// CheckpointInterval and Window for the replicas.
	CheckpointInterval uint64
	Window             uint64
	// FaultTicks is how long faults last; LivenessTicks bounds how long, after that, the run may take to
	// finish every request and bring every correct replica to the same point.
	FaultTicks    int
	LivenessTicks int
	// Loss, Dup are per-message probabilities during the fault period.
	Loss, Dup float64
	// PipelineMinBatch is the primaries' pbft.Config.PipelineMinBatch; DriverDecodes makes the replicas'
	// drivers decode and verify pre-prepare bodies beside the engine (pbft.Replica.StepPrePrepare), as the
	// node does.
	PipelineMinBatch int
	DriverDecodes    bool
	// SyncMin and SyncMax bound the time a round's writes take to become durable under FaultAsyncPersist,
	// in time units (a message takes 1..12, a tick is 10).
	SyncMin, SyncMax int64

	// earlySend breaks the asynchronous driver for the mutation test (persist_test.go): a round's
	// messages leave at once, before its writes are durable.
	earlySend bool
}

// Plan derives the options of a run from its seed, the replica counts to choose from and the faults
// allowed. The same arguments always give the same options, so a seed replays exactly.
func Plan(seed int64, ns []int, allowed []Fault) Options {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x5eed))
	o := Options{Seed: seed, N: ns[rng.IntN(len(ns))], Byzantine: map[int]Fault{}}
	f := pbft.F(o.N)
	o.Clients = 2 + rng.IntN(4)
	o.RequestsPerClient = 5 + rng.IntN(20)
	o.CheckpointInterval = uint64([]int{2, 4, 8}[rng.IntN(3)])
	o.Window = 2 * o.CheckpointInterval
	o.FaultTicks = 200 + rng.IntN(600)
	o.LivenessTicks = 30000
	// Each allowed fault is on with probability 1/2; Byzantine behaviours go to at most f replicas.
	var byz []Fault
	for _, flt := range allowed {
		if flt == FaultWipe || flt == FaultCertSplit || flt == FaultSlow || flt == FaultAsyncPersist {
			continue // drawn below, from streams of their own
		}
		if rng.IntN(2) == 0 {
			continue
		}
		if slices.Contains(byzantineFaults, flt) {
			byz = append(byz, flt)
			continue
		}
		o.Faults = append(o.Faults, flt)
	}
	if slices.Contains(o.Faults, FaultLoss) {
		o.Loss = 0.02 + 0.2*rng.Float64()
	}
	if slices.Contains(o.Faults, FaultDup) {
		o.Dup = 0.05 + 0.2*rng.Float64()
	}
	rng.Shuffle(len(byz), func(i, j int) { byz[i], byz[j] = byz[j], byz[i] })
	idx := rng.Perm(o.N)
	for i := 0; i < len(byz) && i < f; i++ {
		o.Byzantine[idx[i]] = byz[i]
		o.Faults = append(o.Faults, byz[i])
	}
	// Drawn from a stream of their own, so that the draws above, and every seed recorded before these
	// options existed, replay as they did.
	extra := rand.New(rand.NewPCG(uint64(seed), 0xd21fe))
	o.PipelineMinBatch = []int{0, 0, 2, 4}[extra.IntN(4)]
	o.DriverDecodes = extra.IntN(2) == 0
	// The wipe fault came later still, with a stream of its own for the same reason. A third of the seeds
	// that allow it get it: enough for the CI budget to wipe replicas in every fault mix.
	//
	// A wiped replica counts against f until a stable checkpoint covers its signed mark: it sends no
	// VIEW-CHANGE until then (its VIEW-CHANGEs would lack the prepared certificates it forgot), so with f
	// Byzantine replicas beside it a view change could not complete. Such a run has one wiped replica
	// (cluster.go) and at most f-1 Byzantine ones: the highest-numbered Byzantine replica turns correct
	// when there would be f.
	if slices.Contains(allowed, FaultWipe) && rand.New(rand.NewPCG(uint64(seed), 0x817e)).IntN(3) == 0 {
		if len(o.Byzantine) == f && f > 0 {
			top := -1
			for i := range o.Byzantine {
				top = max(top, i)
			}
			o.Faults = slices.DeleteFunc(o.Faults, func(x Fault) bool { return x == o.Byzantine[top] })
			delete(o.Byzantine, top)
		}
		o.Faults = append(o.Faults, FaultWipe)
	}
	// The certsplit schedule came last, again with a stream of its own. A third of the seeds that allow it
	// get it: the CI budget then runs it in about 330 seeds, beside every other fault mix.
	if slices.Contains(allowed, FaultCertSplit) && rand.New(rand.NewPCG(uint64(seed), 0xce7)).IntN(3) == 0 {
		o.Faults = append(o.Faults, FaultCertSplit)
	}
	planSlow(&o, allowed)
	planAsync(&o, allowed)
	return o
}

func (o Options) String() string {
	var byz []string
	for i := 0; i < o.N; i++ {
		if b, ok := o.Byzantine[i]; ok {
			byz = append(byz, fmt.Sprintf("%d:%s", i, b))
		}
	}
	s := fmt.Sprintf("seed=%d n=%d faults=%v byzantine=[%s] clients=%dx%d K=%d L=%d faultTicks=%d loss=%.2f dup=%.2f pipelineMin=%d driverDecodes=%v",
		o.Seed, o.N, o.Faults, strings.Join(byz, " "), o.Clients, o.RequestsPerClient, o.CheckpointInterval, o.Window,
		o.FaultTicks, o.Loss, o.Dup, o.PipelineMinBatch, o.DriverDecodes)
	if o.has(FaultAsyncPersist) {
		s += fmt.Sprintf(" sync=%d..%d", o.SyncMin, o.SyncMax)
	}
	if o.earlySend {
		s += " earlySend"
	}
	return s
}

func (o Options) has(f Fault) bool { return slices.Contains(o.Faults, f) }
