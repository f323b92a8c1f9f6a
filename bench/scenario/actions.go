package scenario

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"
)

// byzantineArgs are the `p2pbft start` arguments that make a replica Byzantine.
func byzantineArgs(mode string) []string {
	return []string{"--experiment-byzantine", "--byzantine-mode", mode}
}

// resolve turns an event's target into replica indexes.
func (r *runner) resolve(ctx context.Context, e Event) ([]int, error) {
	names, _ := targetNames(e.Target)
	count, _ := r.s.count(e.Count)
	r.mu.Lock()
	live := func(i int) bool { return !r.down[i] && !r.paused[i] }
	prev := slices.Clone(r.previous)
	r.mu.Unlock()
	var out []int
	add := func(i int) {
		if !slices.Contains(out, i) {
			out = append(out, i)
		}
	}
	for _, name := range names {
		switch name {
		case "primary":
			add(int(r.currentView(ctx) % uint64(r.s.N)))
		case "backup", "random":
			primary := int(r.currentView(ctx) % uint64(r.s.N))
			r.mu.Lock()
			var pool []int
			for i := range r.s.N {
				if live(i) && (name == "random" || i != primary) && !slices.Contains(out, i) {
					pool = append(pool, i)
				}
			}
			r.mu.Unlock()
			r.rng.Shuffle(len(pool), func(a, b int) { pool[a], pool[b] = pool[b], pool[a] })
			if len(pool) < count {
				return nil, fmt.Errorf("target %s: %d wanted, %d available", name, count, len(pool))
			}
			for _, i := range pool[:count] {
				add(i)
			}
		case "all":
			for i := range r.s.N {
				add(i)
			}
		case "previous":
			if len(prev) == 0 {
				return nil, errors.New("target previous: the previous event had no target")
			}
			for _, i := range prev {
				add(i)
			}
		default:
			i, err := r.s.replica(name)
			if err != nil {
				return nil, err
			}
			add(i)
		}
	}
	sort.Ints(out)
	return out, nil
}

func (r *runner) names(is []int) []string {
	out := make([]string, len(is))
	for k, i := range is {
		out[k] = r.t.Nodes[i].Name
	}
	return out
}

// act applies an event's action to its targets (for a link event, to the links between linkPairs).
func (r *runner) act(ctx context.Context, e Event, targets []int, linkPairs [][2]int) error {
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for _, i := range targets {
		r.mu.Lock()
		down, paused := r.down[i], r.paused[i]
		r.mu.Unlock()
		name := r.t.Nodes[i].Name
		var err error
		switch e.Action {
		case ActionKill, ActionStop:
			if down {
				return fmt.Errorf("%s: %s does not run", e.Action, name)
			}
			if e.Action == ActionKill {
				err = r.cl.kill(sctx, i)
			} else {
				err = r.cl.stop(sctx, i)
			}
			if err == nil {
				r.mu.Lock()
				r.down[i], r.paused[i] = true, false
				r.mu.Unlock()
			}
		case ActionStart:
			if !down {
				return fmt.Errorf("start: %s runs already", name)
			}
			if err = r.cl.start(sctx, i); err == nil {
				r.mu.Lock()
				r.down[i] = false
				r.mu.Unlock()
			}
		case ActionRestart, ActionByzantine:
			if e.Action == ActionByzantine {
				r.mu.Lock()
				r.byz[i] = e.Mode
				r.args[i] = byzantineArgs(e.Mode)
				r.mu.Unlock()
			}
			if paused {
				if err = r.cl.resume(sctx, i); err != nil {
					return err
				}
			}
			if down {
				err = r.cl.start(sctx, i)
			} else {
				err = r.cl.restart(sctx, i)
			}
			if err == nil {
				r.mu.Lock()
				r.down[i], r.paused[i] = false, false
				r.mu.Unlock()
			}
		case ActionPause:
			if down || paused {
				return fmt.Errorf("pause: %s does not run or is paused", name)
			}
			if err = r.cl.pause(sctx, i); err == nil {
				r.mu.Lock()
				r.paused[i] = true
				r.mu.Unlock()
			}
		case ActionResume:
			if !paused {
				return fmt.Errorf("resume: %s is not paused", name)
			}
			if err = r.cl.resume(sctx, i); err == nil {
				r.mu.Lock()
				r.paused[i] = false
				r.mu.Unlock()
			}
		}
		if err != nil {
			return err
		}
	}
	live := func(i int) bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return !r.down[i] && !r.paused[i]
	}
	switch e.Action {
	case ActionPartition:
		return r.cl.partition(sctx, r.sides(e, targets), live)
	case ActionHeal:
		return r.cl.heal(sctx, live)
	case ActionLink, ActionHealLinks:
		nc, ok := r.cl.(*netCluster)
		if !ok {
			return fmt.Errorf("%s: the replicas are not on emulated links (no [network])", e.Action)
		}
		if e.Action == ActionLink {
			return nc.link(linkPairs, e.LinkSettings)
		}
		return nc.healLinks()
	}
	r.t.PIDs() // the processes observed
	return nil
}

// sides gives every replica its side of a partition: the groups, then one side for the replicas no
// group lists; without groups, the targets against the others.
func (r *runner) sides(e Event, targets []int) []int {
	side := make([]int, r.s.N)
	if len(e.Groups) == 0 {
		for _, i := range targets {
			side[i] = 1
		}
		return side
	}
	for i := range side {
		side[i] = len(e.Groups)
	}
	for g, names := range e.Groups {
		for _, name := range names {
			i, _ := r.s.replica(name)
			side[i] = g
		}
	}
	return side
}
