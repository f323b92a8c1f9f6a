package scenario

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// timeline applies the events in order.
func (r *runner) timeline(ctx context.Context) error {
	r.sleep(ctx, r.s.Warmup.D())
	for k, e := range r.s.Events {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := r.waitFor(ctx, k, e); err != nil {
			return err
		}
		step, err := r.apply(ctx, k, e)
		r.out.Steps = append(r.out.Steps, step)
		if err != nil {
			return fmt.Errorf("events[%d] (%s): %w", k, e.Action, err)
		}
	}
	return nil
}

// apply carries out one event and its checks.
func (r *runner) apply(ctx context.Context, k int, e Event) (Step, error) {
	step := Step{Index: k, Action: e.Action, ResumeMs: -1}
	targets, err := r.resolve(ctx, e)
	if err != nil {
		return step, err
	}
	view := r.currentView(ctx)
	primary := int(view % uint64(r.s.N))
	var linkPairs [][2]int
	if e.Action == ActionLink {
		// The links of the current primary, if the event names it; the targets are the senders.
		if linkPairs, err = r.s.Network.pairs(r.s, e.linkSpec(), primary); err != nil {
			return step, err
		}
		for _, pr := range linkPairs {
			if pr[0] < r.s.N && !slices.Contains(targets, pr[0]) {
				targets = append(targets, pr[0])
			}
		}
		sort.Ints(targets)
	}
	step.Targets = r.names(targets)
	onPrimary := slices.Contains(targets, primary)
	label := e.Action
	if len(targets) > 0 {
		label += " " + strings.Join(step.Targets, ",")
	}
	if onPrimary && e.Action != ActionStart {
		label += " (primary)"
	}
	if e.Action == ActionPartition {
		label = r.partitionLabel(e, targets)
	}
	if e.Action == ActionByzantine {
		label += " as " + e.Mode
	}
	if e.Action == ActionLink {
		label = linkLabel(e, r.t.Nodes[primary].Name)
	}
	actStart := time.Now()
	if err := r.act(ctx, e, targets, linkPairs); err != nil {
		return step, err
	}
	step.ActMs = float64(time.Since(actStart)) / float64(time.Millisecond)
	ev := r.run.Mark(label)
	step.Label = label
	// What the others have once the action is done: the height a returning replica must reach.
	var others uint64
	for i, st := range r.statuses(ctx) {
		if _, b := r.isByz(i); !b && !slices.Contains(targets, i) {
			others = max(others, st.height)
		}
	}
	step.AtS = ev.At.Seconds()
	r.say("[%s] %s", r.clock(), label)
	r.mu.Lock()
	r.previous = targets
	r.mu.Unlock()

	// Checks, concurrently: progress resumes; the view changes (if the primary was hit); the targets
	// catch up (if they came back).
	resumeBound := r.s.Expect.ResumeWithin.D()
	if e.ResumeWithin != nil {
		resumeBound = e.ResumeWithin.D()
	}
	catchBound := r.s.Expect.CatchUpWithin.D()
	if e.CatchUpWithin != nil {
		catchBound = e.CatchUpWithin.D()
	}
	var wg sync.WaitGroup
	var errs []error
	var emu sync.Mutex
	fail := func(err error) {
		emu.Lock()
		errs = append(errs, err)
		emu.Unlock()
	}
	w := r.watchResume(ev.At)
	if resumeBound > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTimer(resumeBound)
			defer t.Stop()
			select {
			case done := <-w.done:
				step.ResumeMs = float64(done-ev.At) / float64(time.Millisecond)
				r.say("[%s]   progress resumed %.2fs after %s (bound %s)", r.clock(), (done - ev.At).Seconds(), e.Action, resumeBound)
			case <-t.C:
				fail(fmt.Errorf("no request issued after %s was accepted within %s", label, resumeBound))
			case <-ctx.Done():
				fail(ctx.Err())
			}
		}()
	}
	changesView := onPrimary && (e.Action == ActionKill || e.Action == ActionStop || e.Action == ActionPause ||
		e.Action == ActionPartition || e.Action == ActionByzantine || e.Action == ActionRestart ||
		(e.Action == ActionLink && mutesReplica(linkPairs, e.LinkSettings, primary, r.s.N)))
	if changesView {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bound := max(resumeBound, 30*time.Second)
			d, err := r.waitViewCommit(ctx, view, targets, bound)
			if err != nil {
				r.say("[%s]   no block committed in a view above %d within %s", r.clock(), view, bound)
				return // informative: progress is what the scenario bounds
			}
			step.ViewChangeMs = float64(d) / float64(time.Millisecond)
			r.say("[%s]   first block in a view above %d %.2fs after %s", r.clock(), view, d.Seconds(), e.Action)
		}()
	}
	returning := e.Action == ActionStart || e.Action == ActionRestart || e.Action == ActionResume || e.Action == ActionHeal
	if returning && catchBound > 0 && len(targets) > 0 {
		step.CatchUpTo = others
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.waitCatchUp(ctx, targets, others, catchBound); err != nil {
				fail(err)
				return
			}
			// From the moment the action began: starting the process is part of catching up.
			d := time.Since(actStart)
			step.CatchUpMs = float64(d) / float64(time.Millisecond)
			r.say("[%s]   %s reached height %d %.2fs after the %s began (bound %s)", r.clock(), strings.Join(step.Targets, ","), others, d.Seconds(), e.Action, catchBound)
		}()
	}
	wg.Wait()
	r.wmu.Lock()
	r.waiters = slices.DeleteFunc(r.waiters, func(x *resumeWaiter) bool { return x == w })
	r.wmu.Unlock()
	if err := errors.Join(errs...); err != nil {
		step.Error = err.Error()
		return step, err
	}
	return step, nil
}

func (r *runner) partitionLabel(e Event, targets []int) string {
	if len(e.Groups) == 0 {
		return "partition: isolate " + strings.Join(r.names(targets), ",")
	}
	var gs []string
	for _, g := range e.Groups {
		gs = append(gs, "{"+strings.Join(g, ",")+"}")
	}
	return "partition " + strings.Join(gs, " | ")
}

// mutesReplica reports whether a link event cuts every link from replica i to the other replicas.
func mutesReplica(pairs [][2]int, ls LinkSettings, i, n int) bool {
	if ls.Cut == nil || !*ls.Cut {
		return false
	}
	cut := 0
	for _, pr := range pairs {
		if pr[0] == i && pr[1] < n {
			cut++
		}
	}
	return cut == n-1
}
