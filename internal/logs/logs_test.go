package logs

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// jsonLines decodes every line of buf as a JSON object, failing on a repeated key (encoding/json would
// keep the last one silently).
func jsonLines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		dec := json.NewDecoder(strings.NewReader(line))
		seen := map[string]bool{}
		if _, err := dec.Token(); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			if seen[k.(string)] {
				t.Errorf("key %q twice in %s", k, line)
			}
			seen[k.(string)] = true
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				t.Fatalf("%q: %v", line, err)
			}
		}
		m := map[string]any{}
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func TestDedupKeepsEachKeyOnce(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(Dedup(slog.NewJSONHandler(&buf, nil)))
	node := log.With("moniker", "a", "replica", 1)
	p2p := node.With("component", "p2p")
	pubsub := p2p.With("component", "pubsub")
	pubsub.Info("joined")
	p2p.Info("replica connected", "peer_replica", 0)
	p2p.Info("override", "replica", 7) // a record repeating a logger's key: the record's value wins
	node.WithGroup("g").With("replica", 2).Info("grouped", "replica", 3)
	lines := jsonLines(t, &buf)
	if len(lines) != 4 {
		t.Fatalf("%d lines:\n%s", len(lines), buf.String())
	}
	if lines[0]["component"] != "pubsub" || lines[0]["replica"] != 1.0 || lines[0]["moniker"] != "a" {
		t.Errorf("nested component: %v", lines[0])
	}
	if lines[1]["component"] != "p2p" || lines[1]["peer_replica"] != 0.0 || lines[1]["replica"] != 1.0 {
		t.Errorf("record attributes: %v", lines[1])
	}
	if lines[2]["replica"] != 7.0 || lines[2]["component"] != "p2p" {
		t.Errorf("record over logger: %v", lines[2])
	}
	g, _ := lines[3]["g"].(map[string]any)
	if lines[3]["replica"] != 1.0 || g["replica"] != 3.0 {
		t.Errorf("group: %v", lines[3])
	}

	// Text: the same, once per key.
	buf.Reset()
	tlog := slog.New(Dedup(slog.NewTextHandler(&buf, nil))).With("replica", 1).With("component", "p2p").With("replica", 0)
	tlog.Info("x")
	if got := buf.String(); strings.Count(got, "replica=") != 1 || !strings.Contains(got, "replica=0 component=p2p") {
		t.Errorf("text line %q", got)
	}
}

func TestDedupLevelsPassThrough(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(Dedup(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))).With("a", 1)
	log.Info("hidden")
	log.Warn("shown")
	if got := buf.String(); strings.Contains(got, "hidden") || !strings.Contains(got, "shown") {
		t.Fatalf("%q", got)
	}
}

// fakeClock is a settable clock for Rejections.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestRejectionsDebugEachInfoSummary(t *testing.T) {
	var buf bytes.Buffer
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	newLog := func(level slog.Level) *Rejections {
		buf.Reset()
		r := NewRejections(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: level})), "request", 10*time.Second)
		r.now = clock.now
		return r
	}

	// At info: the first rejection is summarised at once, the next ones within the interval are not,
	// and the first after it carries their count.
	r := newLog(slog.LevelInfo)
	r.Reject("oversized", 1, "peer", "p1")
	for range 5 {
		r.Reject("malformed", 1, "peer", "p2")
	}
	clock.add(11 * time.Second)
	r.Reject("malformed", 2)
	lines := jsonLines(t, &buf)
	if len(lines) != 2 {
		t.Fatalf("%d info lines, want 2:\n%s", len(lines), buf.String())
	}
	first, second := lines[0], lines[1]
	if first["level"] != "INFO" || first["count"] != 1.0 || first["reasons"].(map[string]any)["oversized"] != 1.0 {
		t.Errorf("first summary: %v", first)
	}
	if rs := second["reasons"].(map[string]any); second["count"] != 7.0 || rs["malformed"] != 7.0 || second["in_last"] != "11s" {
		t.Errorf("second summary: %v", second)
	}

	// At debug: a line per call with its attributes, besides the summaries.
	r = newLog(slog.LevelDebug)
	clock.add(time.Minute)
	r.Reject("signature", 1, "peer", "p3", "source", "/link")
	r.Reject("signature", 3, "peer", "p4")
	lines = jsonLines(t, &buf)
	var debug []map[string]any
	for _, l := range lines {
		if l["level"] == "DEBUG" {
			debug = append(debug, l)
		}
	}
	if len(debug) != 2 || debug[0]["peer"] != "p3" || debug[0]["reason"] != "signature" || debug[1]["count"] != 3.0 {
		t.Fatalf("debug lines: %v", debug)
	}
	var nilLog *Rejections
	nilLog.Reject("x", 1) // a nil log does nothing
}
