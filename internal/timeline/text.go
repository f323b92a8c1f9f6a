package timeline

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/p2pbft/p2pbft/node/trace"
)

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

// WriteText writes t for people: for each slot one line per replica with the times of its steps in
// milliseconds after the slot's origin and the votes it got; for each view change one line per replica.
func WriteText(w io.Writer, t *Trace) {
	if len(t.Slots) == 0 && len(t.ViewChanges) == 0 {
		fmt.Fprintln(w, "(no trace records)")
		return
	}
	if len(t.Slots) > 0 {
		fmt.Fprintln(w, "times in ms after the primary's pre-prepare; * marks the quorum moments; votes are replica@ms")
	}
	for i := range t.Slots {
		WriteSlot(w, &t.Slots[i])
	}
	for i := range t.ViewChanges {
		WriteViewChange(w, &t.ViewChanges[i])
	}
}

// WriteSlot writes one slot as WriteText does.
func WriteSlot(w io.Writer, s *Slot) {
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

// WriteViewChange writes one view change as WriteText does.
func WriteViewChange(w io.Writer, v *ViewChange) {
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
