package api

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/node/trace"
)

// A replica serves its live page at /ui/ and streams its own status and trace records at /v1/events;
// the stream ends when the client goes.
func TestUIPageAndEvents(t *testing.T) {
	e := newEnv(t, Options{})
	// Set before any stream polls the backend (the fake's field is not synchronized).
	e.f.tracer = trace.New(trace.Options{Slots: 16})
	e.f.tracer.PrePrepareReceived(0, 1, 0, 100, 1)

	resp, err := e.ts.Client().Get(e.ts.URL + "/ui/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), `src="app.js"`) {
		t.Fatalf("GET /ui/: %d %.200s", resp.StatusCode, page)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.ts.URL+"/v1/events", nil)
	resp, err = e.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET /v1/events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	lines := make(chan string, 256)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	// expect waits for a data line of an event named name that contains want.
	expect := func(name, want string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		var cur string
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("the stream ended before a %s event with %s", name, want)
				}
				if ev, ok := strings.CutPrefix(l, "event: "); ok {
					cur = ev
				} else if data, ok := strings.CutPrefix(l, "data: "); ok && cur == name && strings.Contains(data, want) {
					return
				}
			case <-deadline:
				t.Fatalf("no %s event with %s within 10s", name, want)
			}
		}
	}
	expect("hello", `"mode":"replica"`)
	expect("replica", `"up":true`)
	expect("slots", `"seq":1`)
	e.f.tracer.PrePrepareReceived(0, 2, 0, 100, 2)
	expect("slots", `"seq":2`)

	cancel()
	deadline := time.Now().Add(10 * time.Second)
	for e.s.events.Active() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the stream's handler still runs 10s after its client went away")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for range lines {
	}
}
