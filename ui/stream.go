package ui

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/p2pbft/p2pbft/node/api/apitypes"
	"github.com/p2pbft/p2pbft/node/trace"
)

// Replica is one replica the page shows.
type Replica struct {
	Index int    `json:"index"`
	Name  string `json:"name"`
	// API is the replica's HTTP API address (host:port), when the server knows it.
	API string `json:"api,omitempty"`
}

// Hello is the first event of every stream: what the page shows and what it may do.
type Hello struct {
	// Mode is "replica" (the page of one replica's API) or "testnet" (the page of `p2pbft testnet --ui`).
	Mode string `json:"mode"`
	// ChainID names the chain; N and F are the replica set's size and fault tolerance.
	ChainID string `json:"chain_id"`
	N       int    `json:"n"`
	F       int    `json:"f"`
	// Self is the serving replica's index in replica mode, -1 otherwise.
	Self int `json:"self"`
	// Replicas are the replicas the stream reports on (one in replica mode, every one in testnet mode).
	Replicas []Replica `json:"replicas"`
	// Actions are the fault-injection actions the page offers as buttons, posted to Control as
	// {"action": ..., "replica": ...}; empty when the server takes none (replica mode).
	Actions []string `json:"actions,omitempty"`
	Control string   `json:"control,omitempty"`
	// IntervalMS is how often the server polls the replicas.
	IntervalMS int64 `json:"interval_ms"`
}

// Snapshot is what one poll of one replica found.
type Snapshot struct {
	// Up says whether the replica answered; Error says why not.
	Up    bool   `json:"up"`
	Error string `json:"error,omitempty"`
	// Running, when not nil, says whether the replica's process runs (testnet mode: a paused process runs
	// but does not answer).
	Running *bool `json:"running,omitempty"`
	// Status is the replica's status (nil when it did not answer).
	Status *apitypes.Status `json:"status,omitempty"`
	// TraceEnabled says whether the replica keeps trace records (its swimlane stays empty otherwise).
	TraceEnabled bool `json:"trace_enabled"`
	// Slots and ViewChanges are its latest trace records (not part of the replica event).
	Slots       []trace.Slot       `json:"-"`
	ViewChanges []trace.ViewChange `json:"-"`
}

// Source reads the replicas a stream reports on.
type Source interface {
	// Poll reads replica i (an index of Hello.Replicas' Index): its status and its latest trace records,
	// at most limit slots. It returns within ctx's deadline, with Up false if the replica did not answer.
	Poll(ctx context.Context, i int, limit int) Snapshot
}

// Options tune a Streamer. Zero values take the defaults given on each field.
type Options struct {
	// Interval is how often a stream polls the replicas. Default 500ms.
	Interval time.Duration
	// PollTimeout bounds one poll of one replica. Default 2s.
	PollTimeout time.Duration
	// Window is how many of each replica's latest slots a poll reads (and the page can show). Default 64.
	Window int
	// MaxClients bounds the streams served at once; more are refused with 503. Default 16.
	MaxClients int
}

func (o Options) withDefaults() Options {
	if o.Interval <= 0 {
		o.Interval = 500 * time.Millisecond
	}
	if o.PollTimeout <= 0 {
		o.PollTimeout = 2 * time.Second
	}
	if o.Window <= 0 {
		o.Window = 64
	}
	if o.MaxClients <= 0 {
		o.MaxClients = 16
	}
	return o
}

// Streamer serves GET /v1/events: a server-sent event stream per client. Each stream runs in the goroutine
// the HTTP server gives the request (plus, per poll, one short-lived goroutine per replica polled in
// parallel) and ends when the client goes away or the server's base context ends. Events:
//
//	hello         Hello, once, first
//	replica       {"replica": i, "up": ..., "status": apitypes.Status, ...} when replica i's state changed
//	slots         {"replica": i, "slots": [trace.Slot]}: slots of replica i that are new or changed
//	view_changes  {"replica": i, "view_changes": [trace.ViewChange]}: new or changed view change records
//	tick          {"now": unix ns}: after every poll, the server's clock (the page's time reference; also
//	              a steady write, so a client that went away is noticed within an interval)
type Streamer struct {
	src    Source
	hello  Hello
	opts   Options
	active atomic.Int64
	slots  chan struct{} // one token per stream being served
}

// NewStreamer returns a Streamer that polls src for the replicas of hello.
func NewStreamer(src Source, hello Hello, o Options) *Streamer {
	o = o.withDefaults()
	hello.IntervalMS = o.Interval.Milliseconds()
	return &Streamer{src: src, hello: hello, opts: o, slots: make(chan struct{}, o.MaxClients)}
}

// Active returns the number of streams being served.
func (s *Streamer) Active() int { return int(s.active.Load()) }

// replicaState is what a stream last sent about one replica, to send only changes.
type replicaState struct {
	replica []byte            // the last replica event's JSON
	slots   map[string][]byte // (view/seq) -> the last slot JSON sent, for the slots in the window
	vcs     map[uint64][]byte // view -> the last view change JSON sent
}

// ServeHTTP streams events until the client goes away.
func (s *Streamer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		WriteError(w, http.StatusServiceUnavailable, "too_many_clients",
			fmt.Sprintf("%d event streams are open already: close a page and retry", s.opts.MaxClients))
		return
	}
	s.active.Add(1)
	defer s.active.Add(-1)

	rc := http.NewResponseController(w)
	// A server's ReadTimeout would end a long stream (the connection's read deadline stays armed while the
	// handler runs, and its expiry cancels the request's context); a stream has no body to read.
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // a reverse proxy must not buffer the stream
	w.WriteHeader(http.StatusOK)

	ctx := r.Context()
	var buf bytes.Buffer
	send := func(event string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("ui: encode %s event: %w", event, err)
		}
		fmt.Fprintf(&buf, "event: %s\ndata: %s\n\n", event, b)
		return nil
	}
	flush := func() error {
		if buf.Len() == 0 {
			return nil
		}
		_, err := w.Write(buf.Bytes())
		buf.Reset()
		if err != nil {
			return err
		}
		return rc.Flush()
	}
	// Tell EventSource to reconnect after a few seconds if the stream breaks (a restarted testnet).
	buf.WriteString("retry: 2000\n\n")
	if err := send("hello", s.hello); err != nil || flush() != nil {
		return
	}
	states := make(map[int]*replicaState, len(s.hello.Replicas))
	for _, rep := range s.hello.Replicas {
		states[rep.Index] = &replicaState{slots: map[string][]byte{}, vcs: map[uint64][]byte{}}
	}
	t := time.NewTicker(s.opts.Interval)
	defer t.Stop()
	for {
		snaps := s.pollAll(ctx)
		if ctx.Err() != nil {
			return
		}
		for k, rep := range s.hello.Replicas {
			if err := s.diff(send, rep.Index, states[rep.Index], snaps[k]); err != nil {
				return
			}
		}
		if err := send("tick", map[string]int64{"now": time.Now().UnixNano()}); err != nil {
			return
		}
		if err := flush(); err != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pollAll polls every replica in parallel and waits for all of them (each poll is bounded by PollTimeout).
func (s *Streamer) pollAll(ctx context.Context) []Snapshot {
	out := make([]Snapshot, len(s.hello.Replicas))
	var wg sync.WaitGroup
	for k, rep := range s.hello.Replicas {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, s.opts.PollTimeout)
			defer cancel()
			out[k] = s.src.Poll(pctx, rep.Index, s.opts.Window)
		})
	}
	wg.Wait()
	return out
}

// diff queues the events that say what changed at replica i since st, and updates st.
func (s *Streamer) diff(send func(string, any) error, i int, st *replicaState, snap Snapshot) error {
	ev := struct {
		Replica int `json:"replica"`
		Snapshot
	}{i, snap}
	b, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("ui: encode replica %d: %w", i, err)
	}
	if !bytes.Equal(b, st.replica) {
		st.replica = b
		if err := send("replica", json.RawMessage(b)); err != nil {
			return err
		}
	}
	if !snap.Up {
		// Keep what was sent: the records come back unchanged when the replica answers again.
		return nil
	}
	// Slots: send the new and changed ones; forget those that left the window, so the map stays bounded.
	var changed []trace.Slot
	seen := make(map[string][]byte, len(snap.Slots))
	for _, sl := range snap.Slots {
		key := fmt.Sprintf("%d/%d", sl.View, sl.Seq)
		b, err := json.Marshal(sl)
		if err != nil {
			return fmt.Errorf("ui: encode slot: %w", err)
		}
		seen[key] = b
		if !bytes.Equal(b, st.slots[key]) {
			changed = append(changed, sl)
		}
	}
	st.slots = seen
	if len(changed) > 0 {
		if err := send("slots", map[string]any{"replica": i, "slots": changed}); err != nil {
			return err
		}
	}
	var vcs []trace.ViewChange
	seenVC := make(map[uint64][]byte, len(snap.ViewChanges))
	for _, vc := range snap.ViewChanges {
		b, err := json.Marshal(vc)
		if err != nil {
			return fmt.Errorf("ui: encode view change: %w", err)
		}
		seenVC[vc.View] = b
		if !bytes.Equal(b, st.vcs[vc.View]) {
			vcs = append(vcs, vc)
		}
	}
	st.vcs = seenVC
	if len(vcs) > 0 {
		return send("view_changes", map[string]any{"replica": i, "view_changes": vcs})
	}
	return nil
}

// WriteError answers with the JSON error object of the API (node/api): {"error": msg, "code": code}.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg, "code": code})
}
