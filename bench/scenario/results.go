package scenario

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/p2pbft/p2pbft/bench"
	"github.com/p2pbft/p2pbft/internal/timeline"
)

// Outcome is a scenario run's result: written to the result folder as run.json.
type Outcome struct {
	Name     string    `json:"name"`
	Form     string    `json:"form"` // "full" or "short"
	Seed     int64     `json:"seed"`
	Version  string    `json:"version,omitempty"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Pass     bool      `json:"pass"`
	Rerun    string    `json:"rerun,omitempty"`
	// Checks are the verdicts, in order; Steps what each event did and how the network recovered.
	Checks []Check `json:"checks"`
	Steps  []Step  `json:"steps"`
	// Figures are the load's measurements over the run (the bench result, with the events marked).
	Figures *bench.Result `json:"figures,omitempty"`
	// Network is the emulated network of a scenario with [network]: hosts, regions, the latency matrix,
	// and what every link did to its packets.
	Network *NetworkRecord `json:"network,omitempty"`
}

// Check is one verdict.
type Check struct {
	Name   string `json:"name"`
	Pass   bool   `json:"pass"`
	Detail string `json:"detail"`
}

// Step is what one event did.
type Step struct {
	Index   int      `json:"index"`
	Action  string   `json:"action"`
	Targets []string `json:"targets,omitempty"`
	// Label is how the plot marks the event.
	Label string `json:"label,omitempty"`
	// AtS is when the action was applied, in seconds since the load started.
	AtS float64 `json:"at_s"`
	// ResumeMs: time from the action to the first acceptance of a request issued after it (-1: not seen).
	ResumeMs float64 `json:"resume_ms"`
	// ViewChangeMs: for an action on the primary, time to the first block committed in a later view.
	ViewChangeMs float64 `json:"view_change_ms,omitempty"`
	// ActMs is how long the action itself took (a start: until the replica's API answered).
	ActMs float64 `json:"act_ms"`
	// CatchUpMs: for start, restart, resume and heal, time from the beginning of the action until the
	// targets reached the height the others had once it was done.
	CatchUpMs float64 `json:"catch_up_ms,omitempty"`
	CatchUpTo uint64  `json:"catch_up_height,omitempty"`
	Error     string  `json:"error,omitempty"`
}

func (r *runner) check(name string, pass bool, format string, args ...any) bool {
	c := Check{Name: name, Pass: pass, Detail: fmt.Sprintf(format, args...)}
	r.out.Checks = append(r.out.Checks, c)
	verdict := "ok  "
	if !pass {
		verdict = "FAIL"
	}
	r.say("check %s %s: %s", verdict, name, c.Detail)
	return pass
}

// collectTrace fetches the replicas' trace records while they still run. A replica that is down (or
// restarted, and so without the earlier records) only leaves its lanes empty.
func (r *runner) collectTrace(ctx context.Context) {
	var urls []string
	for _, n := range r.t.Snapshot() {
		urls = append(urls, n.API)
	}
	tr, err := timeline.Collect(ctx, urls, 20*time.Second)
	if err != nil {
		r.say("trace records: %v", err)
		return
	}
	r.trace = tr
}

// writeResults writes the result folder: the scenario, the outcome (run.json), a table (result.txt), the
// plot, the replicas' trace records (trace.*, phases.png) and their logs.
func (r *runner) writeResults(runErr error) error {
	dir := r.opts.Dir
	var errs []error
	if err := os.WriteFile(filepath.Join(dir, "scenario.toml"), r.s.source, 0o644); err != nil {
		errs = append(errs, err)
	}
	b, err := json.MarshalIndent(r.out, "", "  ")
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "run.json"), append(b, '\n'), 0o644)
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("scenario: run.json: %w", err))
	}
	var txt strings.Builder
	r.out.Summary(&txt, runErr)
	if err := os.WriteFile(filepath.Join(dir, "result.txt"), []byte(txt.String()), 0o644); err != nil {
		errs = append(errs, err)
	}
	if r.out.Figures != nil {
		title := fmt.Sprintf("scenario %s (%s form, n=%d, seed %d)", r.s.Name, r.out.Form, r.s.N, r.out.Seed)
		if err := bench.WritePlot(r.out.Figures, title, filepath.Join(dir, "plot.png")); err != nil {
			errs = append(errs, err)
		}
	}
	if r.trace != nil {
		title := fmt.Sprintf("scenario %s (%s form, n=%d, seed %d): the consensus trace", r.s.Name, r.out.Form, r.s.N, r.out.Seed)
		if err := timeline.WriteFiles(dir, r.trace, title); err != nil {
			errs = append(errs, err)
		}
	}
	netDir := filepath.Join(dir, "testnet")
	if r.t != nil {
		logs := filepath.Join(dir, "logs")
		if err := os.MkdirAll(logs, 0o755); err != nil {
			errs = append(errs, err)
		}
		for i, nd := range r.t.Snapshot() {
			if b, err := os.ReadFile(r.cl.logPath(i)); err == nil {
				if err := os.WriteFile(filepath.Join(logs, nd.Name+".log"), b, 0o644); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	if !r.opts.Keep {
		os.RemoveAll(netDir)
	}
	return errors.Join(errs...)
}

// Summary writes the outcome for people: the verdict, the steps, the checks and the figures.
func (o *Outcome) Summary(w io.Writer, runErr error) {
	verdict := "PASS"
	if !o.Pass {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "scenario %s (%s form, seed %d): %s\n", o.Name, o.Form, o.Seed, verdict)
	if runErr != nil {
		fmt.Fprintf(w, "  error: %v\n", runErr)
	}
	if o.Version != "" {
		fmt.Fprintf(w, "  binary: p2pbft %s\n", o.Version)
	}
	if o.Rerun != "" {
		fmt.Fprintf(w, "  rerun: %s\n", o.Rerun)
	}
	if o.Network != nil {
		fmt.Fprintln(w, "\nnetwork:")
		o.Network.Summary(w)
	}
	fmt.Fprintln(w, "\nsteps:")
	for _, s := range o.Steps {
		line := fmt.Sprintf("  %7.2fs  %-9s %-14s", s.AtS, s.Action, strings.Join(s.Targets, ","))
		if s.Action == ActionLink || s.Action == ActionHealLinks {
			line = fmt.Sprintf("  %7.2fs  %-24s", s.AtS, s.Label)
		}
		if s.ResumeMs >= 0 {
			line += fmt.Sprintf("  progress after %.2fs", s.ResumeMs/1000)
		}
		if s.ViewChangeMs > 0 {
			line += fmt.Sprintf("  new-view commit after %.2fs", s.ViewChangeMs/1000)
		}
		if s.CatchUpMs > 0 {
			line += fmt.Sprintf("  caught up to %d after %.2fs", s.CatchUpTo, s.CatchUpMs/1000)
		}
		if s.Error != "" {
			line += "  ERROR " + s.Error
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintln(w, "\nchecks:")
	for _, c := range o.Checks {
		v := "ok  "
		if !c.Pass {
			v = "FAIL"
		}
		fmt.Fprintf(w, "  %s %-13s %s\n", v, c.Name, c.Detail)
	}
	if o.Figures != nil {
		fmt.Fprintln(w, "\nfigures:")
		o.Figures.Table(w)
	}
}
