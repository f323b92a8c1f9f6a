package linearize

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/p2pbft/p2pbft/client"
)

// op builds a completed operation of client c over [call, ret].
func op(c int, call, ret int64, in Input, out Output) porcupine.Operation {
	return porcupine.Operation{ClientId: c, Input: in, Call: call, Output: out, Return: ret}
}

func put(k, v string) Input        { return Input{Kind: Put, Key: k, Value: v} }
func get(k string) Input           { return Input{Kind: Get, Key: k} }
func del(k string) Input           { return Input{Kind: Del, Key: k} }
func cas(k, from, to string) Input { return Input{Kind: CAS, Key: k, Expect: from, Value: to} }
func create(k, v string) Input     { return Input{Kind: CAS, Key: k, Value: v, ExpectAbsent: true} }
func found(v string) Output        { return Output{Found: true, Value: v} }
func swapped() Output              { return Output{Swapped: true} }
func conflict(cur string) Output   { return Output{Found: true, Value: cur} }
func unknown() Output              { return Output{Unknown: true} }
func ok() Output                   { return Output{} }
func absentGet() Output            { return Output{} }
func check(h []porcupine.Operation) porcupine.CheckResult {
	return porcupine.CheckOperationsTimeout(Model, h, 10*time.Second)
}

func TestModelHistories(t *testing.T) {
	tests := []struct {
		name string
		want porcupine.CheckResult
		h    []porcupine.Operation
	}{
		{"sequential", porcupine.Ok, []porcupine.Operation{
			op(0, 0, 1, get("x"), absentGet()),
			op(0, 2, 3, put("x", "a"), ok()),
			op(0, 4, 5, get("x"), found("a")),
			op(0, 6, 7, cas("x", "a", "b"), swapped()),
			op(0, 8, 9, cas("x", "a", "c"), conflict("b")),
			op(0, 10, 11, create("x", "d"), conflict("b")),
			op(0, 12, 13, del("x"), Output{Found: true}),
			op(0, 14, 15, del("x"), Output{Found: false}),
			op(0, 16, 17, create("x", "e"), swapped()),
			op(0, 18, 19, get("x"), found("e")),
		}},
		{"concurrent reads see either side of a concurrent write", porcupine.Ok, []porcupine.Operation{
			op(0, 0, 1, put("x", "a"), ok()),
			op(1, 2, 10, put("x", "b"), ok()),
			op(2, 3, 4, get("x"), found("b")),
			op(3, 5, 6, get("x"), found("b")),
		}},
		{"concurrent CASes: one wins", porcupine.Ok, []porcupine.Operation{
			op(0, 0, 1, put("x", "a"), ok()),
			op(1, 2, 5, cas("x", "a", "b"), swapped()),
			op(2, 2, 5, cas("x", "a", "c"), conflict("b")),
			op(0, 6, 7, get("x"), found("b")),
		}},
		{"lost write", porcupine.Illegal, []porcupine.Operation{
			op(0, 0, 1, put("x", "a"), ok()),
			op(1, 2, 3, put("x", "b"), ok()),
			// b was acknowledged before this read began: reading a means b was lost.
			op(2, 4, 5, get("x"), found("a")),
		}},
		{"acknowledged write missing after a crash", porcupine.Illegal, []porcupine.Operation{
			op(0, 0, 1, put("x", "a"), ok()),
			op(1, 2, 3, get("x"), absentGet()),
		}},
		{"stale read", porcupine.Illegal, []porcupine.Operation{
			op(0, 0, 1, put("x", "a"), ok()),
			op(0, 2, 3, put("x", "b"), ok()),
			op(1, 4, 5, get("x"), found("b")),
			// A later read goes back in time.
			op(2, 6, 7, get("x"), found("a")),
		}},
		{"both CASes from the same value win", porcupine.Illegal, []porcupine.Operation{
			op(0, 0, 1, put("x", "a"), ok()),
			op(1, 2, 5, cas("x", "a", "b"), swapped()),
			op(2, 2, 5, cas("x", "a", "c"), swapped()),
		}},
		{"failed CAS reports a value never written", porcupine.Illegal, []porcupine.Operation{
			op(0, 0, 1, put("x", "a"), ok()),
			op(1, 2, 3, cas("x", "z", "b"), conflict("q")),
		}},
		{"read of a value never written", porcupine.Illegal, []porcupine.Operation{
			op(0, 0, 1, get("x"), found("ghost")),
		}},
		{"indeterminate write may take effect late", porcupine.Ok, []porcupine.Operation{
			op(0, 0, 100, put("x", "a"), unknown()),
			op(1, 1, 2, get("x"), absentGet()),
			op(1, 3, 4, put("x", "b"), ok()),
			op(1, 5, 6, get("x"), found("b")),
			op(2, 7, 8, get("x"), found("a")),
		}},
		{"indeterminate write may never take effect", porcupine.Ok, []porcupine.Operation{
			op(0, 0, 100, put("x", "a"), unknown()),
			op(1, 1, 2, get("x"), absentGet()),
		}},
		{"indeterminate write cannot take effect before its call", porcupine.Illegal, []porcupine.Operation{
			op(1, 0, 1, get("x"), found("a")),
			op(0, 2, 100, put("x", "a"), unknown()),
		}},
		{"indeterminate write takes effect at most once", porcupine.Illegal, []porcupine.Operation{
			op(0, 0, 100, put("x", "a"), unknown()),
			op(1, 1, 2, get("x"), found("a")),
			op(1, 3, 4, put("x", "b"), ok()),
			op(1, 5, 6, get("x"), found("a")),
		}},
		{"keys are independent", porcupine.Ok, []porcupine.Operation{
			op(0, 0, 1, put("x", "a"), ok()),
			op(1, 0, 1, put("y", "a"), ok()),
			op(0, 2, 3, get("y"), found("a")),
			op(1, 2, 3, get("x"), found("a")),
		}},
		{"a stale read on one key among many", porcupine.Illegal, []porcupine.Operation{
			op(0, 0, 1, put("x", "a"), ok()),
			op(1, 0, 1, put("y", "a"), ok()),
			op(0, 2, 3, put("y", "b"), ok()),
			op(1, 4, 5, get("x"), found("a")),
			op(1, 6, 7, get("y"), found("a")),
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := check(tc.h); got != tc.want {
				t.Fatalf("check: %s, want %s", got, tc.want)
			}
			// The event form, partitioned by PartitionEvent, agrees.
			var events []porcupine.Event
			type ev struct {
				t    int64
				kind porcupine.EventKind
				i    int
			}
			var evs []ev
			for i, o := range tc.h {
				evs = append(evs, ev{o.Call, porcupine.CallEvent, i}, ev{o.Return, porcupine.ReturnEvent, i})
			}
			// Calls before returns at equal times: intervals are closed.
			sortEvents := func(a, b ev) bool {
				if a.t != b.t {
					return a.t < b.t
				}
				return a.kind == porcupine.CallEvent && b.kind == porcupine.ReturnEvent
			}
			for i := 1; i < len(evs); i++ {
				for j := i; j > 0 && sortEvents(evs[j], evs[j-1]); j-- {
					evs[j], evs[j-1] = evs[j-1], evs[j]
				}
			}
			for _, e := range evs {
				o := tc.h[e.i]
				var v any = o.Input
				if e.kind == porcupine.ReturnEvent {
					v = o.Output
				}
				events = append(events, porcupine.Event{ClientId: o.ClientId, Kind: e.kind, Value: v, Id: e.i})
			}
			if got := porcupine.CheckEventsTimeout(Model, events, 10*time.Second); got != tc.want {
				t.Fatalf("event check: %s, want %s", got, tc.want)
			}
		})
	}
}

func TestPartitionByKey(t *testing.T) {
	h := []porcupine.Operation{
		op(0, 0, 1, put("x", "a"), ok()),
		op(1, 0, 1, put("y", "a"), ok()),
		op(0, 2, 3, get("x"), found("a")),
	}
	parts := Model.Partition(h)
	if len(parts) != 2 || len(parts[0]) != 2 || len(parts[1]) != 1 {
		t.Fatalf("parts: %v", parts)
	}
	for _, p := range parts {
		for _, o := range p {
			if o.Input.(Input).Key != p[0].Input.(Input).Key {
				t.Fatalf("mixed keys in a part: %v", p)
			}
		}
	}
}

func TestRecorder(t *testing.T) {
	r := NewRecorder()
	const clients, each = 8, 50
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				k := fmt.Sprintf("k%d", c)
				call := r.Begin(c, put(k, fmt.Sprint(i)))
				switch i % 10 {
				case 3:
					call.Indeterminate()
				case 4:
					call.Fail()
				case 5:
					// left open
				default:
					call.Return(ok())
					call.Fail() // ignored: the operation already ended
				}
				r.Begin(c, get(k)).Indeterminate()
			}
		}()
	}
	wg.Wait()
	counts, total := r.Counts()
	if total != 2*clients*each || counts[OK] != clients*each*7/10 || counts[Failed] != clients*each/10 ||
		counts[Open] != clients*each/10 || counts[Unknown] != clients*each*11/10 {
		t.Fatalf("counts %v of %d", counts, total)
	}
	h := r.History()
	// Failed operations and indeterminate reads are left out; open ones count as indeterminate.
	if want := clients * each * 9 / 10; len(h) != want {
		t.Fatalf("history of %d operations, want %d", len(h), want)
	}
	var end int64
	for _, o := range h {
		if o.Call > o.Return {
			t.Fatalf("call %d after return %d", o.Call, o.Return)
		}
		if !o.Output.(Output).Unknown {
			end = max(end, o.Return)
		}
	}
	for _, o := range h {
		if o.Output.(Output).Unknown && o.Return <= end {
			t.Fatalf("indeterminate operation returns at %d, before the end of the history (%d)", o.Return, end)
		}
	}
	if err := Check(h, 10*time.Second, ""); err != nil {
		t.Fatal(err)
	}
}

func TestCheckWritesVisualization(t *testing.T) {
	dir := t.TempDir()
	h := []porcupine.Operation{
		op(0, 0, 1, put("x", "a"), ok()),
		op(1, 2, 3, put("x", "b"), ok()),
		op(2, 4, 5, get("x"), found("a")),
	}
	err := Check(h, 10*time.Second, dir)
	if !errors.Is(err, ErrNotLinearizable) {
		t.Fatalf("check: %v", err)
	}
	path := filepath.Join(dir, "linearizability.html")
	if !strings.Contains(err.Error(), path) {
		t.Fatalf("error does not name the visualization: %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "<html") || !strings.Contains(string(b), "get(x)") {
		t.Fatalf("visualization: %d bytes without the history", len(b))
	}
	if err := Check(h[:2], 10*time.Second, dir); err != nil {
		t.Fatalf("linearizable prefix: %v", err)
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want Outcome
	}{
		{nil, OK},
		{fmt.Errorf("request 1: %w by 2 replicas: stale", client.ErrRefused), Failed},
		{fmt.Errorf("%w: bad key", client.ErrInvalidOp), Failed},
		{fmt.Errorf("after 3 rounds: %w: %w", client.ErrUnknownOutcome, errors.New("deadline")), Unknown},
		{client.ErrClosed, Unknown},
		{errors.New("connection reset"), Unknown},
	} {
		if got := Classify(tc.err); got != tc.want {
			t.Errorf("Classify(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}
