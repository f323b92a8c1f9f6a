package ui

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/p2pbft/p2pbft/node/api/apitypes"
	"github.com/p2pbft/p2pbft/node/trace"
)

// fakeSource serves replica 0's snapshot, which the test changes between polls.
type fakeSource struct {
	mu   sync.Mutex
	snap Snapshot
}

func (f *fakeSource) Poll(_ context.Context, _ int, limit int) Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.snap
	s.Slots = append([]trace.Slot(nil), s.Slots...)
	if len(s.Slots) > limit {
		s.Slots = s.Slots[len(s.Slots)-limit:]
	}
	return s
}

func (f *fakeSource) set(fn func(*Snapshot)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.snap)
}

type event struct {
	name string
	data string
}

// readEvents sends the stream's events (comments and retry lines skipped) until it ends.
func readEvents(body *bufio.Scanner, out chan<- event) {
	defer close(out)
	var ev event
	for body.Scan() {
		line := body.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.data = strings.TrimPrefix(line, "data: ")
		case line == "" && ev.name != "":
			out <- ev
			ev = event{}
		}
	}
}

// next returns the next event named name (skipping others), failing after a deadline.
func next(t *testing.T, events <-chan event, name string) event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("the stream ended before a %s event", name)
			}
			if ev.name == name {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %s event within 10s", name)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The stream sends hello, the replica's state, its slots and view changes, then only what changed; when
// the client goes away, the stream's handler returns and leaves no goroutine behind.
func TestStreamEventsAndDisconnect(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	src := &fakeSource{snap: Snapshot{Up: true, TraceEnabled: true,
		Status: &apitypes.Status{Replica: 0, N: 4, View: 0, Primary: 0, Mode: "normal", Height: 2},
		Slots:  []trace.Slot{{View: 0, Seq: 1, Executed: 10}, {View: 0, Seq: 2, Prepared: 20}}}}
	hello := Hello{Mode: "replica", N: 4, F: 1, Replicas: []Replica{{Index: 0, Name: "node0"}}}
	s := NewStreamer(src, hello, Options{Interval: 10 * time.Millisecond})
	srv := httptest.NewServer(s)
	defer srv.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	events := make(chan event, 64)
	go readEvents(bufio.NewScanner(resp.Body), events)

	var h Hello
	if err := json.Unmarshal([]byte(next(t, events, "hello").data), &h); err != nil || h.Mode != "replica" || h.IntervalMS != 10 || len(h.Replicas) != 1 {
		t.Fatalf("hello: %+v (%v)", h, err)
	}
	var rep struct {
		Replica int              `json:"replica"`
		Up      bool             `json:"up"`
		Status  *apitypes.Status `json:"status"`
	}
	if err := json.Unmarshal([]byte(next(t, events, "replica").data), &rep); err != nil || !rep.Up || rep.Status == nil || rep.Status.Height != 2 {
		t.Fatalf("replica: %+v (%v)", rep, err)
	}
	type slotsEvent struct {
		Replica int          `json:"replica"`
		Slots   []trace.Slot `json:"slots"`
	}
	var se slotsEvent
	if err := json.Unmarshal([]byte(next(t, events, "slots").data), &se); err != nil || len(se.Slots) != 2 {
		t.Fatalf("slots: %+v (%v)", se, err)
	}
	next(t, events, "tick")

	// Slot 2 executes and slot 3 arrives: the next slots event carries those two only, and the view
	// change record and the new height come through.
	src.set(func(s *Snapshot) {
		s.Slots = []trace.Slot{{View: 0, Seq: 1, Executed: 10}, {View: 0, Seq: 2, Prepared: 20, Executed: 30}, {View: 1, Seq: 3, PrePrepareReceived: 40}}
		s.ViewChanges = []trace.ViewChange{{View: 1, Sent: 35}}
		st := *s.Status
		st.View, st.Height = 1, 3
		s.Status = &st
	})
	if err := json.Unmarshal([]byte(next(t, events, "slots").data), &se); err != nil || len(se.Slots) != 2 ||
		se.Slots[0].Seq != 2 || se.Slots[0].Executed != 30 || se.Slots[1].Seq != 3 {
		t.Fatalf("changed slots: %+v (%v)", se, err)
	}
	var vce struct {
		ViewChanges []trace.ViewChange `json:"view_changes"`
	}
	if err := json.Unmarshal([]byte(next(t, events, "view_changes").data), &vce); err != nil || len(vce.ViewChanges) != 1 || vce.ViewChanges[0].View != 1 {
		t.Fatalf("view changes: %+v (%v)", vce, err)
	}

	// A replica that stops answering is reported down.
	src.set(func(s *Snapshot) { *s = Snapshot{Error: "connection refused"} })
	for {
		if err := json.Unmarshal([]byte(next(t, events, "replica").data), &rep); err != nil {
			t.Fatal(err)
		}
		if !rep.Up {
			break
		}
	}

	if s.Active() != 1 {
		t.Fatalf("%d streams active, want 1", s.Active())
	}
	cancel()
	waitFor(t, "the stream's handler returns once its client went away", func() bool { return s.Active() == 0 })
	for range events { // the reader ends with the body
	}
}

// Streams beyond MaxClients are refused with 503 and a JSON error; a slot frees when a stream ends.
func TestStreamMaxClients(t *testing.T) {
	src := &fakeSource{snap: Snapshot{Up: true}}
	s := NewStreamer(src, Hello{Mode: "replica", Replicas: []Replica{{Index: 0, Name: "node0"}}}, Options{Interval: 10 * time.Millisecond, MaxClients: 1})
	srv := httptest.NewServer(s)
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	first, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Body.Close()
	waitFor(t, "the first stream is served", func() bool { return s.Active() == 1 })

	second, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	var er struct{ Error, Code string }
	_ = json.NewDecoder(second.Body).Decode(&er)
	second.Body.Close()
	if second.StatusCode != http.StatusServiceUnavailable || er.Code != "too_many_clients" || er.Error == "" {
		t.Fatalf("second stream: %d %+v", second.StatusCode, er)
	}

	cancel()
	waitFor(t, "the first stream ends", func() bool { return s.Active() == 0 })
	third, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	third.Body.Close() // ends the stream
	if third.StatusCode != http.StatusOK {
		t.Fatalf("a stream after the first ended: %d", third.StatusCode)
	}
}

// The page's files are embedded and served with their types.
func TestAssets(t *testing.T) {
	srv := httptest.NewServer(http.StripPrefix("/ui/", Assets()))
	defer srv.Close()
	for path, want := range map[string]string{"/ui/": "text/html", "/ui/app.js": "javascript", "/ui/style.css": "text/css"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Type"), want) {
			t.Errorf("%s: %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
}
