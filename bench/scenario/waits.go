package scenario

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/p2pbft/p2pbft/bench"
)

type resumeWaiter struct {
	since time.Duration
	done  chan time.Duration
	fired bool
}

func (r *runner) sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// onRecord counts accepted requests and wakes the waiters for progress after an event.
func (r *runner) onRecord(rec bench.Record) {
	if !rec.OK {
		return
	}
	r.accepted.Add(1)
	r.wmu.Lock()
	for _, w := range r.waiters {
		if !w.fired && rec.Issued >= w.since {
			w.fired = true
			w.done <- rec.Done
		}
	}
	r.wmu.Unlock()
}

func (r *runner) watchResume(since time.Duration) *resumeWaiter {
	w := &resumeWaiter{since: since, done: make(chan time.Duration, 1)}
	r.wmu.Lock()
	r.waiters = append(r.waiters, w)
	r.wmu.Unlock()
	return w
}

// waitFor waits for an event's after and after_requests.
func (r *runner) waitFor(ctx context.Context, k int, e Event) error {
	base := r.accepted.Load()
	r.sleep(ctx, e.After.D())
	if e.AfterRequests <= 0 {
		return nil
	}
	r.say("[%s] waiting for %d more accepted requests", r.clock(), e.AfterRequests)
	// Progress must not stall for longer than the resume bound meanwhile.
	stall := r.s.Expect.ResumeWithin.D()
	last, lastAt := r.accepted.Load(), time.Now()
	tk := time.NewTicker(20 * time.Millisecond)
	defer tk.Stop()
	for {
		n := r.accepted.Load()
		if n-base >= int64(e.AfterRequests) {
			return nil
		}
		if n != last {
			last, lastAt = n, time.Now()
		} else if time.Since(lastAt) > stall {
			return fmt.Errorf("events[%d]: waiting for %d more accepted requests: none accepted for %s (%d of %d)", k, e.AfterRequests, stall, n-base, e.AfterRequests)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.run.LoadDone():
			return fmt.Errorf("events[%d]: the load ended (its duration bound) while waiting for %d more accepted requests", k, e.AfterRequests)
		case <-tk.C:
		}
	}
}

// statuses reads the status of every replica that runs and is not paused.
func (r *runner) statuses(ctx context.Context) map[int]*statusView {
	r.mu.Lock()
	var live []int
	for i := range r.s.N {
		if !r.down[i] && !r.paused[i] {
			live = append(live, i)
		}
	}
	r.mu.Unlock()
	out := make(map[int]*statusView)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, i := range live {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			st, err := r.t.Status(sctx, i)
			if err == nil {
				mu.Lock()
				out[i] = &statusView{view: st.View, height: st.Height, mode: st.Mode}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

type statusView struct {
	view, height uint64
	mode         string
}

// currentView is the highest view a correct live replica reports (0 if none answers).
func (r *runner) currentView(ctx context.Context) uint64 {
	var v uint64
	for i, st := range r.statuses(ctx) {
		if _, b := r.isByz(i); !b {
			v = max(v, st.view)
		}
	}
	return v
}

// waitViewCommit waits until a correct live replica other than the targets holds a block committed in a
// view above view.
func (r *runner) waitViewCommit(ctx context.Context, view uint64, targets []int, bound time.Duration) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	tk := time.NewTicker(25 * time.Millisecond)
	defer tk.Stop()
	for {
		r.mu.Lock()
		var live []int
		for i := range r.s.N {
			_, b := r.byz[i]
			if !r.down[i] && !r.paused[i] && !b && !slices.Contains(targets, i) {
				live = append(live, i)
			}
		}
		r.mu.Unlock()
		for _, i := range live {
			bctx, bcancel := context.WithTimeout(ctx, 2*time.Second)
			blk, err := r.t.Block(bctx, i, 0)
			bcancel()
			if err == nil && blk.View > view {
				return time.Since(start), nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-tk.C:
		}
	}
}

// waitCatchUp waits until every target reports a height of at least h.
func (r *runner) waitCatchUp(ctx context.Context, targets []int, h uint64, bound time.Duration) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	tk := time.NewTicker(50 * time.Millisecond)
	defer tk.Stop()
	var last string
	for {
		done := true
		for _, i := range targets {
			sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
			st, err := r.t.Status(sctx, i)
			scancel()
			if err != nil {
				done, last = false, err.Error()
				break
			}
			if st.Height < h {
				done, last = false, fmt.Sprintf("%s at height %d of %d (mode %s)", r.t.Nodes[i].Name, st.Height, h, st.Mode)
				break
			}
		}
		if done {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%s did not reach height %d within %s (last: %s)", strings.Join(r.names(targets), ","), h, bound, last)
		case <-tk.C:
		}
	}
}
