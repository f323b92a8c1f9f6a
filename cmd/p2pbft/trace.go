package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/p2pbft/p2pbft/node/api"
	"github.com/p2pbft/p2pbft/node/trace"
	"github.com/p2pbft/p2pbft/testnet"
)

// mergedTrace is the trace records of several replicas lined up: one entry per slot (sequence number in a
// view) and per view change, holding every replica's record of it. It is what `p2pbft trace --json`
// prints.
type mergedTrace struct {
	// Sources are the replicas asked, with their answer's metadata or the error that kept them out.
	Sources     []traceSource       `json:"sources"`
	Slots       []mergedSlot        `json:"slots"`
	ViewChanges []mergedViewChanges `json:"view_changes"`
}

// traceSource is one replica's HTTP API and how it answered.
type traceSource struct {
	API     string `json:"api"`
	Replica int    `json:"replica"`
	Enabled bool   `json:"enabled"`
	// Now is the replica's clock when it answered (Unix ns): compare the sources' to see how far their
	// clocks disagree (the timeline assumes they agree).
	Now   int64  `json:"now,omitempty"`
	Error string `json:"error,omitempty"`
}

// mergedSlot is one slot across replicas. Origin is the time offsets count from: the primary's pre-prepare
// sent, or, without the primary's record, the earliest pre-prepare received.
type mergedSlot struct {
	View     uint64       `json:"view"`
	Seq      uint64       `json:"seq"`
	Primary  int          `json:"primary"` // -1 if unknown
	Origin   int64        `json:"origin"`
	Requests int          `json:"requests"`
	Bytes    int          `json:"bytes"`
	Replicas []replicaRec `json:"replicas"`
}

// replicaRec is one replica's record of a slot.
type replicaRec struct {
	Replica int `json:"replica"`
	trace.Slot
}

// mergedViewChanges is one view change across replicas; Origin is the earliest VIEW-CHANGE sent (or, if no
// replica recorded its own, received).
type mergedViewChanges struct {
	View     uint64      `json:"view"`
	Origin   int64       `json:"origin"`
	Replicas []replicaVC `json:"replicas"`
}

// replicaVC is one replica's record of a view change.
type replicaVC struct {
	Replica int `json:"replica"`
	trace.ViewChange
}

func newTraceCmd() *cobra.Command {
	var dir string
	var apis []string
	var from uint64
	var limit int
	var asJSON bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "trace [--dir DIR | --api ADDR...] [--from SEQ] [--limit N] [--json]",
		Short: "Merge the consensus trace records of every replica into one timeline per slot",
		Long: `trace fetches GET /v1/trace from every replica of a local testnet (--dir, the folder of
"p2pbft testnet") or from the replicas whose HTTP APIs are given with --api (repeat it), and lines up their
records slot by slot (a sequence number in a view) and view change by view change.

For each slot it prints one line per replica with the times of its steps in milliseconds after the
primary's pre-prepare: pre-prepare sent or received, prepared and committed (the quorum moments, marked
with *), executed, durable (block synced to disk), replies handed out, and then the PREPAREs and COMMITs
it got, as replica@ms. For each view change, one line per replica: its VIEW-CHANGE, the NEW-VIEW and
the first commit in the new view, in milliseconds after the first VIEW-CHANGE sent.

Times come from each replica's clock: the timeline is exact on one machine and as good as the clocks'
synchronisation across machines. Replicas keep the records of their last slots only (trace.slots), and
none with trace.enabled off.`,
		Example: `  p2pbft trace --dir testnet/run --limit 5
  p2pbft trace --api 127.0.0.1:26680 --api 127.0.0.1:26681 --from 120 --limit 3
  p2pbft trace --dir testnet/run --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 1 || limit > 10000 {
				return usagef("--limit %d: want 1 to 10000", limit)
			}
			urls, err := traceTargets(dir, apis)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			m, err := fetchTraces(ctx, urls, from, limit)
			if err != nil {
				return err
			}
			for _, s := range m.Sources {
				if s.Error != "" {
					fmt.Fprintf(cmd.ErrOrStderr(), "trace: warning: %s: %s\n", s.API, s.Error)
				} else if !s.Enabled {
					fmt.Fprintf(cmd.ErrOrStderr(), "trace: warning: replica %d (%s) keeps no records (trace.enabled is off)\n", s.Replica, s.API)
				}
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), m)
			}
			printTrace(cmd.OutOrStdout(), m)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "the folder of a local testnet (p2pbft testnet --dir DIR): ask each of its replicas")
	f.StringArrayVar(&apis, "api", nil, "a replica's HTTP API, host:port or URL (repeat for each replica)")
	f.Uint64Var(&from, "from", 0, "the slots from this sequence number upward (default: the latest)")
	f.IntVar(&limit, "limit", 20, "at most this many slots")
	f.BoolVar(&asJSON, "json", false, "print the merged records as JSON")
	f.DurationVar(&timeout, "timeout", 10*time.Second, "give up after this long")
	return cmd
}

// traceTargets returns the base URLs of the replicas' APIs, from --dir or --api.
func traceTargets(dir string, apis []string) ([]string, error) {
	switch {
	case dir != "" && len(apis) > 0:
		return nil, usagef("give --dir or --api, not both")
	case dir == "" && len(apis) == 0:
		return nil, usagef("give --dir DIR (a local testnet) or --api ADDR for each replica")
	case dir != "":
		n, err := testnet.Open(dir)
		if err != nil {
			return nil, err
		}
		var urls []string
		for _, ni := range n.Nodes() {
			if ni.API == "" {
				return nil, fmt.Errorf("trace: %s in %s has no HTTP API", ni.Name, dir)
			}
			urls = append(urls, "http://"+ni.API)
		}
		return urls, nil
	}
	urls := make([]string, len(apis))
	for i, a := range apis {
		u, err := apiURL(a, "")
		if err != nil {
			return nil, err
		}
		urls[i] = u
	}
	return urls, nil
}

// fetchTraces asks every replica at once and merges the answers. Replicas that do not answer are listed
// with their error; it fails only if none answers.
func fetchTraces(ctx context.Context, urls []string, from uint64, limit int) (*mergedTrace, error) {
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	if from > 0 {
		q.Set("from", strconv.FormatUint(from, 10))
	}
	resps := make([]api.TraceResponse, len(urls))
	errs := make([]error, len(urls))
	var wg sync.WaitGroup
	for i, u := range urls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = apiCall(ctx, http.MethodGet, u+"/v1/trace?"+q.Encode(), nil, &resps[i])
		}()
	}
	wg.Wait()
	var answered []api.TraceResponse
	m := &mergedTrace{}
	for i, u := range urls {
		src := traceSource{API: u, Replica: -1}
		if errs[i] != nil {
			src.Error = errs[i].Error()
		} else {
			r := resps[i]
			src.Replica, src.Enabled, src.Now = r.Replica, r.Enabled, r.Now
			answered = append(answered, r)
		}
		m.Sources = append(m.Sources, src)
	}
	if len(answered) == 0 {
		return nil, withCode(exitUnavailable, fmt.Errorf("trace: no replica answered: %w", errors.Join(errs...)))
	}
	m.Slots, m.ViewChanges = mergeTraces(answered)
	if from == 0 && len(m.Slots) > limit {
		m.Slots = m.Slots[len(m.Slots)-limit:]
	} else if len(m.Slots) > limit {
		m.Slots = m.Slots[:limit]
	}
	return m, nil
}

// mergeTraces lines up the replicas' records by slot and by view change, in order.
func mergeTraces(rs []api.TraceResponse) ([]mergedSlot, []mergedViewChanges) {
	type key struct{ view, seq uint64 }
	slots := map[key]*mergedSlot{}
	vcs := map[uint64]*mergedViewChanges{}
	for _, r := range rs {
		for _, s := range r.Slots {
			k := key{s.View, s.Seq}
			ms := slots[k]
			if ms == nil {
				ms = &mergedSlot{View: s.View, Seq: s.Seq, Primary: -1}
				slots[k] = ms
			}
			ms.Replicas = append(ms.Replicas, replicaRec{Replica: r.Replica, Slot: s})
		}
		for _, v := range r.ViewChanges {
			mv := vcs[v.View]
			if mv == nil {
				mv = &mergedViewChanges{View: v.View}
				vcs[v.View] = mv
			}
			mv.Replicas = append(mv.Replicas, replicaVC{Replica: r.Replica, ViewChange: v})
		}
	}
	out := make([]mergedSlot, 0, len(slots))
	for _, ms := range slots {
		slices.SortFunc(ms.Replicas, func(a, b replicaRec) int { return cmp.Compare(a.Replica, b.Replica) })
		for _, rr := range ms.Replicas {
			switch {
			case rr.PrePrepareSent != 0:
				ms.Primary, ms.Origin = rr.Replica, rr.PrePrepareSent
			case rr.PrePrepareFrom >= 0 && ms.Primary < 0:
				ms.Primary = rr.PrePrepareFrom
			}
			ms.Requests = max(ms.Requests, rr.Requests)
			ms.Bytes = max(ms.Bytes, rr.Bytes)
		}
		if ms.Origin == 0 { // the primary's record is missing: count from the first pre-prepare seen
			for _, rr := range ms.Replicas {
				if t := rr.PrePrepare(); t != 0 && (ms.Origin == 0 || t < ms.Origin) {
					ms.Origin = t
				}
			}
		}
		out = append(out, *ms)
	}
	slices.SortFunc(out, func(a, b mergedSlot) int { return cmp.Or(cmp.Compare(a.Seq, b.Seq), cmp.Compare(a.View, b.View)) })
	vout := make([]mergedViewChanges, 0, len(vcs))
	for _, mv := range vcs {
		slices.SortFunc(mv.Replicas, func(a, b replicaVC) int { return cmp.Compare(a.Replica, b.Replica) })
		for _, rv := range mv.Replicas {
			if rv.Sent != 0 && (mv.Origin == 0 || rv.Sent < mv.Origin) {
				mv.Origin = rv.Sent
			}
		}
		if mv.Origin == 0 { // no replica asked recorded its own VIEW-CHANGE: count from the first one received
			for _, rv := range mv.Replicas {
				for _, v := range rv.Received {
					if mv.Origin == 0 || v.At < mv.Origin {
						mv.Origin = v.At
					}
				}
			}
		}
		vout = append(vout, *mv)
	}
	slices.SortFunc(vout, func(a, b mergedViewChanges) int { return cmp.Compare(a.View, b.View) })
	return out, vout
}

// ms renders time t as milliseconds after origin, or "-" if it did not happen (or no origin is known).
func ms(t, origin int64) string {
	if t == 0 || origin == 0 {
		return "-"
	}
	return strconv.FormatFloat(float64(t-origin)/1e6, 'f', 2, 64)
}

// votes renders votes as replica@ms, in arrival order.
func votes(vs []trace.Vote, origin int64) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = fmt.Sprintf("%d@%s", v.From, ms(v.At, origin))
	}
	return strings.Join(parts, " ")
}

func printTrace(w io.Writer, m *mergedTrace) {
	if len(m.Slots) == 0 && len(m.ViewChanges) == 0 {
		fmt.Fprintln(w, "(no trace records)")
		return
	}
	if len(m.Slots) > 0 {
		fmt.Fprintln(w, "times in ms after the primary's pre-prepare; * marks the quorum moments; votes are replica@ms")
	}
	for _, s := range m.Slots {
		primary := "?"
		if s.Primary >= 0 {
			primary = strconv.Itoa(s.Primary)
		}
		at := "unknown"
		if s.Origin != 0 {
			at = time.Unix(0, s.Origin).UTC().Format("15:04:05.000000")
		}
		fmt.Fprintf(w, "\nseq %d  view %d  primary %s  %d requests  %d bytes  pre-prepare at %s UTC\n",
			s.Seq, s.View, primary, s.Requests, s.Bytes, at)
		fmt.Fprintf(w, "  %-8s %11s %10s %10s %9s %8s %8s  %s\n", "replica", "pre-prepare", "prepared*", "committed*",
			"executed", "durable", "replied", "prepares | commits")
		for _, r := range s.Replicas {
			name := strconv.Itoa(r.Replica)
			if r.Replica == s.Primary {
				name += " (P)"
			}
			fmt.Fprintf(w, "  %-8s %11s %10s %10s %9s %8s %8s  %s | %s\n", name, ms(r.PrePrepare(), s.Origin),
				ms(r.Prepared, s.Origin), ms(r.Committed, s.Origin), ms(r.Executed, s.Origin), ms(r.Durable, s.Origin),
				ms(r.Replied, s.Origin), votes(r.Prepares, s.Origin), votes(r.Commits, s.Origin))
		}
	}
	for _, v := range m.ViewChanges {
		fmt.Fprintf(w, "\nview change to %d (ms after the first VIEW-CHANGE sent)\n", v.View)
		fmt.Fprintf(w, "  %-8s %11s %9s %13s  %s\n", "replica", "view-change", "new-view", "first commit", "view-changes received")
		for _, r := range v.Replicas {
			name := strconv.Itoa(r.Replica)
			if r.NewViewSent != 0 {
				name += " (P)"
			}
			first := ms(r.FirstCommit, v.Origin)
			if r.FirstCommit != 0 {
				first += fmt.Sprintf(" (%d)", r.FirstCommitSeq)
			}
			fmt.Fprintf(w, "  %-8s %11s %9s %13s  %s\n", name, ms(r.Sent, v.Origin), ms(r.NewView(), v.Origin), first,
				votes(r.Received, v.Origin))
		}
	}
}
