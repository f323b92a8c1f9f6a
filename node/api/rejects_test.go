package api

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// lockedBuffer is a bytes.Buffer the server's goroutines may write while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) lines(t *testing.T) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		if line == "" {
			continue
		}
		m := map[string]any{}
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// Every request rejected as bad input leaves a debug line saying what and why; the first one also an
// info summary. Answers that are not rejections (a missing block, a missing key) leave none.
func TestRejectedRequestsLogged(t *testing.T) {
	var buf lockedBuffer
	e := newEnv(t, Options{MaxBodyBytes: 1024, Logger: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	e.do("GET", "/v1/blocks/9", "", nil, nil)   // 404: an answer
	e.do("GET", "/v1/kv/nothing", "", nil, nil) // 404: an answer
	rejected := []struct{ method, path, ctype, body, code string }{
		{"POST", "/v1/tx", "application/json", `{`, "bad_json"},
		{"POST", "/v1/tx", "text/plain", `hi`, "bad_content_type"},
		{"POST", "/v1/tx", "application/json", `{"op":{"type":"put","key":"a","value":"` + strings.Repeat("x", 2000) + `"}}`, "too_large"},
		{"GET", "/v1/tx", "", ``, "method_not_allowed"},
		{"GET", "/v2/nothing", "", ``, "not_found"},
	}
	for _, r := range rejected {
		e.do(r.method, r.path, r.ctype, []byte(r.body), nil)
	}
	var debug, info []map[string]any
	for _, l := range buf.lines(t) {
		if l["msg"] == "rejected API request" && l["level"] == "DEBUG" {
			debug = append(debug, l)
		}
		if strings.HasPrefix(l["msg"].(string), "rejected API requests") && l["level"] == "INFO" {
			info = append(info, l)
		}
	}
	if len(debug) != len(rejected) {
		t.Fatalf("%d debug lines for %d rejected requests: %v", len(debug), len(rejected), debug)
	}
	for i, r := range rejected {
		d := debug[i]
		if d["reason"] != r.code || d["path"] != r.path || d["method"] != r.method || d["err"] == "" || d["remote"] == "" {
			t.Errorf("request %d: debug line %v", i, d)
		}
	}
	if len(info) != 1 || info[0]["count"] != 1.0 {
		t.Fatalf("info summaries %v, want one (the first rejection; the others wait for the interval)", info)
	}
}
