package scenario

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/p2pbft/p2pbft/bench"
	"github.com/p2pbft/p2pbft/node/store"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// correctLive returns the replicas that were never Byzantine and run (not stopped, not paused) now.
func (r *runner) correctLive() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int
	for i := range r.s.N {
		if _, b := r.byz[i]; !b && !r.down[i] && !r.paused[i] {
			out = append(out, i)
		}
	}
	return out
}

// finalChecks: the correct replicas converge, hold the same chain, and every accepted request is in it
// exactly once.
func (r *runner) finalChecks(ctx context.Context, res *bench.Result) {
	replicas := r.correctLive()
	if len(replicas) == 0 {
		r.check("chain", false, "no correct replica runs at the end")
		return
	}
	height, err := r.converge(ctx, replicas)
	if err != nil {
		r.check("convergence", false, "%v", err)
	} else {
		r.check("convergence", true, "%s reached height %d", strings.Join(r.names(replicas), ", "), height)
	}
	r.checkExperiment(ctx, replicas)
	chains, common, err := r.readChains(ctx, replicas)
	if err != nil {
		r.check("same chain", false, "%v", err)
		return
	}
	hashes, detail, err := compareChains(chains, common, r.names(replicas))
	if err != nil {
		r.check("same chain", false, "%v", err)
		return
	}
	r.check("same chain", true, "%s", detail)
	r.checkExactlyOnce(ctx, res, chains, hashes, common)
}

// checkDegradation checks, for every event with a throughput or p99 bound, the load while its fault
// lasted (from its action to the next event's, or the end of the load) against the healthy load around
// it: as long a window just before the action and, when the next event ends the fault, as long a window
// after that (cut at the event after it or the end of the load; used if at least half as long). The
// baseline is the weaker of the two: the lower throughput and the higher p99. On a machine whose load
// drifts (other processes, the load generator's own share of the CPU) the fault is then compared with
// what the machine gave on both sides of it, not with one window that happened to run on a quieter machine;
// a fault that costs the load shows against both.
func (r *runner) checkDegradation(records []bench.Record) {
	var end time.Duration // when the load stopped issuing
	for _, rec := range records {
		end = max(end, rec.Issued)
	}
	stepAt := func(k int) time.Duration {
		if k >= len(r.out.Steps) {
			return end
		}
		return min(time.Duration(r.out.Steps[k].AtS*float64(time.Second)), end)
	}
	for k, e := range r.s.Events {
		if e.MinThroughputRatio == 0 && e.MaxP99Ratio == 0 {
			continue
		}
		if k >= len(r.out.Steps) {
			return
		}
		t0, t1 := stepAt(k), stepAt(k+1)
		length := t1 - t0
		before := window(records, max(t0-length, 0), t0)
		during := window(records, t0, t1)
		baseline, against, detail := before, "before", ""
		if k+1 < len(r.s.Events) && endsFault(e, r.s.Events[k+1]) {
			a0 := t1
			a1 := min(a0+length, stepAt(k+2))
			if a1-a0 >= length/2 && a1 > a0 {
				after := window(records, a0, a1)
				if after.accepted > 0 {
					baseline.rate = min(before.rate, after.rate)
					baseline.p99 = max(before.p99, after.p99)
					against = "around"
					detail = fmt.Sprintf(" (before: %.0f/s, p99 %s; after it ends: %.0f/s, p99 %s)",
						before.rate, before.p99.Round(time.Millisecond/10), after.rate, after.p99.Round(time.Millisecond/10))
				}
			}
		}
		name := fmt.Sprintf("event %d (%s %s) load", k+1, e.Action, strings.Join(r.out.Steps[k].Targets, ","))
		if before.accepted == 0 {
			r.check(name, false, "no request accepted in the window before the action")
			continue
		}
		ok := true
		var parts []string
		if e.MinThroughputRatio > 0 {
			ratio := during.rate / baseline.rate
			ok = ok && ratio >= e.MinThroughputRatio
			parts = append(parts, fmt.Sprintf("throughput %.0f/s during against %.0f/s %s (%.0f%%, at least %.0f%%)",
				during.rate, baseline.rate, against, 100*ratio, 100*e.MinThroughputRatio))
		}
		if e.MaxP99Ratio > 0 {
			ratio := float64(during.p99) / float64(max(baseline.p99, time.Microsecond))
			ok = ok && ratio <= e.MaxP99Ratio
			parts = append(parts, fmt.Sprintf("p99 %s during against %s %s (%.1fx, at most %.1fx)",
				during.p99.Round(time.Millisecond/10), baseline.p99.Round(time.Millisecond/10), against, ratio, e.MaxP99Ratio))
		}
		r.check(name, ok, "%s over %.1fs windows%s", strings.Join(parts, "; "), length.Seconds(), detail)
	}
}

// endsFault reports whether event next undoes the fault of event e (a resume after a pause, a heal after
// a partition, a start after a kill, ...), so that the window after next is healthy load again.
func endsFault(e, next Event) bool {
	switch e.Action {
	case ActionPause:
		return next.Action == ActionResume
	case ActionPartition:
		return next.Action == ActionHeal
	case ActionKill, ActionStop:
		return next.Action == ActionStart
	}
	return false
}

// loadWindow is the load over a window of time.
type loadWindow struct {
	accepted int
	rate     float64       // requests accepted in the window, per second
	p99      time.Duration // latency of the accepted requests issued in the window
}

func window(records []bench.Record, t0, t1 time.Duration) loadWindow {
	var w loadWindow
	var lat []time.Duration
	for _, rec := range records {
		if !rec.OK {
			continue
		}
		if rec.Done >= t0 && rec.Done < t1 {
			w.accepted++
		}
		if rec.Issued >= t0 && rec.Issued < t1 {
			lat = append(lat, rec.Latency())
		}
	}
	if t1 > t0 {
		w.rate = float64(w.accepted) / (t1 - t0).Seconds()
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		w.p99 = lat[min(len(lat)-1, len(lat)*99/100)]
	}
	return w
}

// checkExperiment checks that the Byzantine replicas ran their modes (as their status reports, if they
// answer) and that the correct replicas reached the scenario's minimum view.
func (r *runner) checkExperiment(ctx context.Context, replicas []int) {
	r.mu.Lock()
	byz := make(map[int]string, len(r.byz))
	for i, m := range r.byz {
		if !r.down[i] && !r.paused[i] {
			byz[i] = m
		}
	}
	r.mu.Unlock()
	if len(byz) > 0 {
		var parts []string
		ok := true
		for i, mode := range byz {
			st, err := r.t.Status(ctx, i)
			switch {
			case err != nil:
				parts = append(parts, fmt.Sprintf("%s does not answer (%v)", r.t.Nodes[i].Name, err))
			case st.Byzantine != mode:
				ok = false
				parts = append(parts, fmt.Sprintf("%s reports mode %q, not %q", r.t.Nodes[i].Name, st.Byzantine, mode))
			default:
				parts = append(parts, fmt.Sprintf("%s ran as %s", r.t.Nodes[i].Name, mode))
			}
		}
		sort.Strings(parts)
		r.check("byzantine", ok, "%s", strings.Join(parts, "; "))
	}
	if min, max := r.s.Expect.MinView, r.s.Expect.MaxView; min > 0 || max != nil {
		var views []string
		ok := true
		for _, i := range replicas {
			st, err := r.t.Status(ctx, i)
			if err != nil || st.View < min || (max != nil && st.View > *max) {
				ok = false
			}
			if err == nil {
				views = append(views, fmt.Sprintf("%s %d", r.t.Nodes[i].Name, st.View))
			}
		}
		want := fmt.Sprintf("at least view %d", min)
		switch {
		case max != nil && *max == min:
			want = fmt.Sprintf("view %d", min)
		case max != nil && min == 0:
			want = fmt.Sprintf("at most view %d", *max)
		case max != nil:
			want = fmt.Sprintf("a view from %d to %d", min, *max)
		}
		r.check("view", ok, "%s wanted: %s", want, strings.Join(views, ", "))
	}
}

// converge waits until the replicas report the same height, and returns it.
func (r *runner) converge(ctx context.Context, replicas []int) (uint64, error) {
	bound := r.s.Expect.ConvergeWithin.D()
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	tk := time.NewTicker(100 * time.Millisecond)
	defer tk.Stop()
	var last string
	for {
		var heights []uint64
		ok := true
		for _, i := range replicas {
			st, err := r.t.Status(ctx, i)
			if err != nil {
				ok, last = false, err.Error()
				break
			}
			heights = append(heights, st.Height)
		}
		if ok && slices.Min(heights) == slices.Max(heights) {
			return heights[0], nil
		}
		if ok {
			var parts []string
			for k, i := range replicas {
				parts = append(parts, fmt.Sprintf("%s %d", r.t.Nodes[i].Name, heights[k]))
			}
			last = "heights " + strings.Join(parts, ", ")
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("the correct replicas did not reach the same height within %s (last: %s)", bound, last)
		case <-tk.C:
		}
	}
}

// readChains reads the block hashes of every replica up to the lowest head among them (common).
func (r *runner) readChains(ctx context.Context, replicas []int) (map[int]map[uint64]string, uint64, error) {
	var common uint64
	for k, i := range replicas {
		st, err := r.t.Status(ctx, i)
		if err != nil {
			return nil, 0, err
		}
		if k == 0 || st.Height < common {
			common = st.Height
		}
	}
	chains := make(map[int]map[uint64]string)
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, len(replicas))
	for k, i := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := make(map[uint64]string)
			for from := uint64(1); from <= common; from += 100 {
				bs, err := r.t.Blocks(ctx, i, from, 100)
				if err != nil {
					errs[k] = fmt.Errorf("%s: blocks from %d: %w", r.t.Nodes[i].Name, from, err)
					return
				}
				for _, b := range bs {
					if b.Height <= common {
						m[b.Height] = b.Hash
					}
				}
			}
			mu.Lock()
			chains[i] = m
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, 0, err
		}
	}
	return chains, common, nil
}

// compareChains checks that at every height the replicas holding a block hold the same one, and that
// every replica holds the block at the common height. It returns the hash at every height (held by at
// least one replica).
func compareChains(chains map[int]map[uint64]string, common uint64, names []string) (map[uint64]string, string, error) {
	idx := make([]int, 0, len(chains))
	for i := range chains {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	hashes := make(map[uint64]string, common)
	compared := 0
	for h := uint64(1); h <= common; h++ {
		holders := 0
		for _, i := range idx {
			hash, ok := chains[i][h]
			if !ok {
				continue
			}
			holders++
			if prev, ok := hashes[h]; ok && prev != hash {
				return nil, "", fmt.Errorf("block %d differs: %s… and %s…", h, prev[:min(12, len(prev))], hash[:min(12, len(hash))])
			}
			hashes[h] = hash
		}
		if holders > 1 {
			compared++
		}
	}
	var partial []string
	for k, i := range idx {
		if _, ok := chains[i][common]; !ok && common > 0 {
			return nil, "", fmt.Errorf("%s lacks the block at the common height %d", names[k], common)
		}
		if n := len(chains[i]); uint64(n) < common {
			partial = append(partial, fmt.Sprintf("%s holds %d of them (copied a snapshot)", names[k], n))
		}
	}
	detail := fmt.Sprintf("%s hold the same blocks up to height %d (%d heights compared across replicas)", strings.Join(names, ", "), common, compared)
	if len(partial) > 0 {
		detail += "; " + strings.Join(partial, "; ")
	}
	return hashes, detail, nil
}

// nearest orders replicas by how far the runner is from them, nearest first: by the round trip of their
// emulated links with [network], else by index.
func (r *runner) nearest(replicas []int) []int {
	out := slices.Clone(replicas)
	sort.Ints(out)
	if nc, ok := r.cl.(*netCluster); ok {
		c := r.s.N
		rtt := func(i int) time.Duration { return nc.base[c][i].Delay + nc.base[i][c].Delay }
		sort.SliceStable(out, func(a, b int) bool { return rtt(out[a]) < rtt(out[b]) })
	}
	return out
}

// checkExactlyOnce reads the whole chain (each block from a replica that holds it) and checks that every
// accepted request executed exactly once. A block holds its batch as ordered; a request ordered twice (a
// retransmission after a view change) executes only the first time: by the client table's rule, a
// request executes iff its timestamp is above the last one executed for its client.
func (r *runner) checkExactlyOnce(ctx context.Context, res *bench.Result, chains map[int]map[uint64]string, hashes map[uint64]string, common uint64) {
	var held []int
	for i := range chains {
		held = append(held, i)
	}
	order := r.nearest(held)
	holder := make(map[uint64]int, common)
	for h := uint64(1); h <= common; h++ {
		found := false
		for _, i := range order {
			if _, ok := chains[i][h]; ok {
				holder[h], found = i, true
				break
			}
		}
		if !found {
			r.check("exactly once", false, "no correct replica holds block %d (all copied snapshots): the chain cannot be checked", h)
			return
		}
	}
	blocks := make([]*store.Block, common+1)
	work := make(chan uint64)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for h := range work {
				b, err := r.t.Block(ctx, holder[h], h)
				if err == nil {
					var raw []byte
					if raw, err = base64.StdEncoding.DecodeString(b.Raw); err == nil {
						blocks[h], err = store.DecodeBlock(raw)
					}
				}
				if hash := blocks[h].Hash(); err == nil && hex.EncodeToString(hash[:]) != hashes[h] {
					err = fmt.Errorf("block %d: hash %x, the summaries said %s", h, hash[:], hashes[h])
				}
				if err != nil {
					select {
					case errc <- fmt.Errorf("block %d from %s: %w", h, r.t.Nodes[holder[h]].Name, err):
					default:
					}
				}
			}
		}()
	}
	for h := uint64(1); h <= common; h++ {
		work <- h
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errc:
		r.check("exactly once", false, "%v", err)
		return
	default:
	}
	type reqKey struct {
		client string
		ts     uint64
	}
	once := pbft.ExactlyOnce{}
	executed := make(map[reqKey]int)
	ordered, repeats := 0, 0
	for h := uint64(1); h <= common; h++ {
		for _, rb := range blocks[h].Batch {
			e, err := wire.DecodeEnvelope(rb)
			if err != nil {
				r.check("exactly once", false, "block %d: %v", h, err)
				return
			}
			req, err := pbft.DecodeRequest(e.Payload)
			if err != nil {
				r.check("exactly once", false, "block %d: %v", h, err)
				return
			}
			ordered++
			if !once.Admit(e.Author, req.Timestamp) {
				repeats++ // ordered again, not executed again
				continue
			}
			executed[reqKey{string(e.Author), req.Timestamp}]++
		}
	}
	gen := r.run.Generator()
	accepted, missing, twice := 0, 0, 0
	var example string
	for _, rec := range res.Records() {
		if !rec.OK {
			continue
		}
		accepted++
		switch executed[reqKey{string(gen.PublicKey(rec.Session)), rec.TS}] {
		case 1:
		case 0:
			missing++
			if example == "" {
				example = fmt.Sprintf("client %d request %d (block %d per its replies) is not in the chain", rec.Session, rec.TS, rec.Height)
			}
		default:
			twice++
			if example == "" {
				example = fmt.Sprintf("client %d request %d executed more than once", rec.Session, rec.TS)
			}
		}
	}
	if missing+twice > 0 {
		r.check("exactly once", false, "%d of %d accepted requests missing from the chain, %d executed more than once; e.g. %s", missing, accepted, twice, example)
		return
	}
	r.check("exactly once", true, "each of the %d accepted requests executed exactly once in the %d blocks (%d requests ordered, %d of them repeats not executed)",
		accepted, common, ordered, repeats)
}
