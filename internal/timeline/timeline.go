// Package timeline lines up the consensus trace records of several replicas (GET /v1/trace, package
// node/trace) slot by slot and view change by view change, and renders the result: as text, one block per
// slot and one line per replica; as a PNG swimlane, one lane per replica and slot with the phases coloured
// and the quorum moments marked; and as a PNG breakdown of where a slot's time goes, phase by phase.
//
// `p2pbft trace` prints and draws what it fetched; `p2pbft bench --out` and `p2pbft scenario run` keep the
// merged records of their run and both pictures in their result folders.
//
// # Design
//
// Each replica's times are its own wall clock (Unix nanoseconds): lining them up assumes the clocks agree,
// which is exact on one machine and as good as NTP across machines. Every slot is therefore drawn against
// one origin, the primary's pre-prepare (or, without the primary's record, the first pre-prepare any
// replica saw), and Source.Now tells a reader how far the clocks of the replicas that answered disagree.
//
// Fetching never fails because some replicas are down: they are listed among the sources with their error,
// and only a fetch that no replica answers is an error (ErrNoAnswer).
package timeline

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/p2pbft/p2pbft/node/api/apitypes"
	"github.com/p2pbft/p2pbft/node/trace"
)

// Trace is the records of several replicas lined up: one entry per slot (sequence number in a view) and
// per view change, each holding every replica's record of it.
type Trace struct {
	// Sources are the replicas asked, with their answer's metadata or the error that kept them out.
	Sources     []Source     `json:"sources"`
	Slots       []Slot       `json:"slots"`
	ViewChanges []ViewChange `json:"view_changes"`
}

// Source is one replica's HTTP API and how it answered.
type Source struct {
	API     string `json:"api"`
	Replica int    `json:"replica"`
	Enabled bool   `json:"enabled"`
	// Now is the replica's clock when it answered (Unix ns): compare the sources' to see how far their
	// clocks disagree (the timeline assumes they agree).
	Now   int64  `json:"now,omitempty"`
	Error string `json:"error,omitempty"`
}

// Slot is one slot across replicas. Origin is the time offsets count from: the primary's pre-prepare
// sent, or, without the primary's record, the earliest pre-prepare received.
type Slot struct {
	View     uint64        `json:"view"`
	Seq      uint64        `json:"seq"`
	Primary  int           `json:"primary"` // -1 if unknown
	Origin   int64         `json:"origin"`
	Requests int           `json:"requests"`
	Bytes    int           `json:"bytes"`
	Replicas []ReplicaSlot `json:"replicas"`
}

// ReplicaSlot is one replica's record of a slot.
type ReplicaSlot struct {
	Replica int `json:"replica"`
	trace.Slot
}

// End returns the last moment any replica recorded for the slot (0 if none).
func (s *Slot) End() int64 {
	var end int64
	for i := range s.Replicas {
		r := &s.Replicas[i]
		for _, t := range []int64{r.PrePrepare(), r.Prepared, r.Committed, r.Executed, r.Durable, r.Replied} {
			end = max(end, t)
		}
	}
	return end
}

// ViewChange is one view change across replicas; Origin is the earliest VIEW-CHANGE sent (or, if no
// replica recorded its own, received).
type ViewChange struct {
	View     uint64              `json:"view"`
	Origin   int64               `json:"origin"`
	Replicas []ReplicaViewChange `json:"replicas"`
}

// ReplicaViewChange is one replica's record of a view change.
type ReplicaViewChange struct {
	Replica int `json:"replica"`
	trace.ViewChange
}

// NewView returns the earliest NEW-VIEW any replica sent or accepted, or 0.
func (v *ViewChange) NewView() int64 {
	var first int64
	for i := range v.Replicas {
		if t := v.Replicas[i].NewView(); t != 0 && (first == 0 || t < first) {
			first = t
		}
	}
	return first
}

// ErrNoAnswer is returned (wrapped, with each replica's error) by Fetch when no replica answered.
var ErrNoAnswer = errors.New("no replica answered")

// Query selects the slots to fetch: from sequence number From upward (0: the latest), at most Limit.
type Query struct {
	From  uint64
	Limit int
}

// Fetch asks every replica (base URLs of their HTTP APIs) at once for its records and merges the answers.
// Replicas that do not answer are listed in Sources with their error; Fetch fails only if none answers.
func Fetch(ctx context.Context, hc *http.Client, urls []string, q Query) (*Trace, error) {
	if hc == nil {
		hc = http.DefaultClient
	}
	v := url.Values{"limit": {strconv.Itoa(q.Limit)}}
	if q.From > 0 {
		v.Set("from", strconv.FormatUint(q.From, 10))
	}
	resps := make([]apitypes.TraceResponse, len(urls))
	errs := make([]error, len(urls))
	var wg sync.WaitGroup
	for i, u := range urls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = getJSON(ctx, hc, strings.TrimSuffix(u, "/")+"/v1/trace?"+v.Encode(), &resps[i])
		}()
	}
	wg.Wait()
	var answered []apitypes.TraceResponse
	t := &Trace{}
	for i, u := range urls {
		src := Source{API: u, Replica: -1}
		if errs[i] != nil {
			src.Error = errs[i].Error()
		} else {
			r := resps[i]
			src.Replica, src.Enabled, src.Now = r.Replica, r.Enabled, r.Now
			answered = append(answered, r)
		}
		t.Sources = append(t.Sources, src)
	}
	if len(answered) == 0 {
		return nil, fmt.Errorf("timeline: %w: %w", ErrNoAnswer, errors.Join(errs...))
	}
	t.Slots, t.ViewChanges = Merge(answered)
	// The replicas' windows differ a little (one is ahead): keep what was asked for.
	t.Slots = q.slots(t.Slots)
	return t, nil
}

// slots returns the slots of ss (in order) that q selects: from sequence number q.From upward, at most
// q.Limit of them (the first ones from q.From, or the latest ones without it).
func (q Query) slots(ss []Slot) []Slot {
	if q.From > 0 {
		i := 0
		for i < len(ss) && ss[i].Seq < q.From {
			i++
		}
		ss = ss[i:]
	}
	if q.Limit > 0 && len(ss) > q.Limit {
		if q.From == 0 {
			return ss[len(ss)-q.Limit:]
		}
		return ss[:q.Limit]
	}
	return ss
}

// Select returns a copy of t with the slots q selects (Fetch asks the replicas for the same ones) and
// the view changes in the time those slots span, or all of them if q selects every slot.
func (t *Trace) Select(q Query) *Trace {
	out := &Trace{Sources: t.Sources, Slots: q.slots(t.Slots)}
	if len(out.Slots) == len(t.Slots) {
		out.ViewChanges = t.ViewChanges
		return out
	}
	var from, to int64
	for i := range out.Slots {
		if o := out.Slots[i].Origin; o != 0 && (from == 0 || o < from) {
			from = o
		}
		to = max(to, out.Slots[i].End())
	}
	for _, v := range t.ViewChanges {
		if v.Origin != 0 && v.Origin <= to && max(v.NewView(), v.Origin) >= from {
			out.ViewChanges = append(out.ViewChanges, v)
		}
	}
	return out
}

// Read reads a merged trace written as JSON (p2pbft trace --json, or trace.json of a result folder).
func Read(r io.Reader) (*Trace, error) {
	var t Trace
	if err := json.NewDecoder(r).Decode(&t); err != nil {
		return nil, fmt.Errorf("timeline: read a merged trace: %w", err)
	}
	return &t, nil
}

// getJSON GETs url and decodes its JSON answer into out; an answer other than 200 is an error that quotes
// the API's error message.
func getJSON(ctx context.Context, hc *http.Client, url string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		if len(msg) > 200 {
			msg = msg[:200] + "..."
		}
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, msg)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("GET %s: decode the answer: %w", url, err)
	}
	return nil
}

// Merge lines up the replicas' records by slot and by view change, in order of sequence number (then view)
// and of view.
func Merge(rs []apitypes.TraceResponse) ([]Slot, []ViewChange) {
	type key struct{ view, seq uint64 }
	slots := map[key]*Slot{}
	vcs := map[uint64]*ViewChange{}
	for _, r := range rs {
		for _, s := range r.Slots {
			k := key{s.View, s.Seq}
			ms := slots[k]
			if ms == nil {
				ms = &Slot{View: s.View, Seq: s.Seq, Primary: -1}
				slots[k] = ms
			}
			ms.Replicas = append(ms.Replicas, ReplicaSlot{Replica: r.Replica, Slot: s})
		}
		for _, v := range r.ViewChanges {
			mv := vcs[v.View]
			if mv == nil {
				mv = &ViewChange{View: v.View}
				vcs[v.View] = mv
			}
			mv.Replicas = append(mv.Replicas, ReplicaViewChange{Replica: r.Replica, ViewChange: v})
		}
	}
	out := make([]Slot, 0, len(slots))
	for _, ms := range slots {
		slices.SortFunc(ms.Replicas, func(a, b ReplicaSlot) int { return cmp.Compare(a.Replica, b.Replica) })
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
	slices.SortFunc(out, func(a, b Slot) int { return cmp.Or(cmp.Compare(a.Seq, b.Seq), cmp.Compare(a.View, b.View)) })
	vout := make([]ViewChange, 0, len(vcs))
	for _, mv := range vcs {
		slices.SortFunc(mv.Replicas, func(a, b ReplicaViewChange) int { return cmp.Compare(a.Replica, b.Replica) })
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
	slices.SortFunc(vout, func(a, b ViewChange) int { return cmp.Compare(a.View, b.View) })
	return out, vout
}

// Replicas returns the replica indexes that appear in t's records, in order.
func (t *Trace) Replicas() []int {
	seen := map[int]bool{}
	for _, s := range t.Sources {
		if s.Error == "" && s.Replica >= 0 {
			seen[s.Replica] = true
		}
	}
	for _, s := range t.Slots {
		for _, r := range s.Replicas {
			seen[r.Replica] = true
		}
	}
	out := make([]int, 0, len(seen))
	for r := range seen {
		out = append(out, r)
	}
	slices.Sort(out)
	return out
}

// Slowest returns the slot that took longest from its origin to the last replica's commit, or nil when
// no slot committed anywhere.
func (t *Trace) Slowest() *Slot {
	var worst *Slot
	var worstD int64
	for i := range t.Slots {
		s := &t.Slots[i]
		if s.Origin == 0 {
			continue
		}
		var last int64
		for _, r := range s.Replicas {
			last = max(last, r.Committed)
		}
		if last == 0 {
			continue
		}
		if d := last - s.Origin; worst == nil || d > worstD {
			worst, worstD = s, d
		}
	}
	return worst
}
