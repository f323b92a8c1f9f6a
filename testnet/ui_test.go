package testnet

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeController records the actions it is asked to apply.
type fakeController struct {
	mu      sync.Mutex
	calls   []string
	err     error
	noAdmin bool // a testnet without the admin API: no partition or heal
}

func (f *fakeController) N() int { return 4 }

func (f *fakeController) PageActions() []string {
	if f.noAdmin {
		return []string{ActionStop, ActionKill, ActionStart, ActionRestart, ActionPause, ActionResume}
	}
	return Actions
}

func (f *fakeController) Index(name string) (int, bool) {
	for i, n := range []string{"node0", "node1", "node2", "node3"} {
		if name == n {
			return i, true
		}
	}
	return 0, false
}

func (f *fakeController) Do(_ context.Context, action, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, action+" "+name)
	return f.err
}

func (f *fakeController) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// POST /v1/control applies a valid action through the controller; a bad action, replica, body or content
// type is answered 400 (415) with a clear JSON error and applies nothing; a failed action is a 409.
func TestUIControlEndpoint(t *testing.T) {
	ctl := &fakeController{}
	events := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	srv := httptest.NewServer(newUIHandler(ctl, events, UIOptions{ActionTimeout: 10 * time.Second}))
	defer srv.Close()

	post := func(ctype, body string) (int, map[string]any) {
		t.Helper()
		resp, err := http.Post(srv.URL+"/v1/control", ctype, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	const js = "application/json"
	for _, c := range []struct {
		ctype, body string
		status      int
		code, says  string
	}{
		{js, `{"action":"explode","replica":"node1"}`, 400, "bad_action", `unknown action "explode" (want one of stop, kill`},
		{js, `{"action":"","replica":"node1"}`, 400, "bad_action", "unknown action"},
		{js, `{"action":"kill","replica":"node9"}`, 400, "bad_replica", `no replica "node9" (replicas are node0 to node3`},
		{js, `{"action":"kill","replica":""}`, 400, "bad_replica", `no replica ""`},
		{js, `{"action":"kill","replica":"node1","extra":1}`, 400, "bad_json", "unknown field"},
		{js, `{"action":"kill"`, 400, "bad_json", "decode body"},
		{"application/x-www-form-urlencoded", `action=kill&replica=node1`, 415, "bad_content_type", "application/json"},
	} {
		status, out := post(c.ctype, c.body)
		msg, _ := out["error"].(string)
		if status != c.status || out["code"] != c.code || !strings.Contains(msg, c.says) {
			t.Errorf("%s %s: %d %v, want %d %s %q", c.ctype, c.body, status, out, c.status, c.code, c.says)
		}
	}
	if calls := ctl.Calls(); len(calls) != 0 {
		t.Fatalf("rejected requests applied actions: %v", calls)
	}

	if status, out := post(js, `{"action":"kill","replica":"node1"}`); status != 200 || out["action"] != "kill" || out["replica"] != "node1" {
		t.Fatalf("kill node1: %d %v", status, out)
	}
	if status, out := post(js, `{"action":"heal"}`); status != 200 || out["replica"] != "all" {
		t.Fatalf("heal: %d %v", status, out)
	}
	ctl.err = errors.New("node2 is not running")
	if status, out := post(js, `{"action":"pause","replica":"node2"}`); status != 409 || out["code"] != "action_failed" || !strings.Contains(out["error"].(string), "not running") {
		t.Fatalf("failed pause: %d %v", status, out)
	}
	if calls, want := ctl.Calls(), []string{"kill node1", "heal all", "pause node2"}; strings.Join(calls, ",") != strings.Join(want, ",") {
		t.Fatalf("applied %v, want %v", calls, want)
	}

	// GET on the control endpoint is no action; the page and the redirect to it are served.
	resp, err := http.Get(srv.URL + "/v1/control")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET /v1/control: %d", resp.StatusCode)
	}
	resp, err = http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Request.URL.Path != "/ui/" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d at %s (%s)", resp.StatusCode, resp.Request.URL.Path, resp.Header.Get("Content-Type"))
	}
	if len(ctl.Calls()) != 3 {
		t.Fatalf("GET requests applied actions: %v", ctl.Calls())
	}
}

// The page server's control endpoint decodes whatever a browser (or anything else on the machine) posts:
// it answers 200 and applies exactly the asked action only for a known action on a known replica, and
// otherwise answers a 4xx error and applies nothing.
func FuzzControlRequest(f *testing.F) {
	for _, body := range []string{`{"action":"kill","replica":"node1"}`, `{"action":"heal"}`, `{"action":"heal","replica":"all"}`,
		`{"action":"pause","replica":"node9"}`, `{"action":"kill","replica":"node1","extra":1}`, `{"action":"kill"`, `[]`, `null`,
		`{"action":"restart","replica":"node3"} {"action":"kill","replica":"node0"}`} {
		f.Add(body)
	}
	events := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	f.Fuzz(func(t *testing.T, body string) {
		ctl := &fakeController{}
		h := newUIHandler(ctl, events, UIOptions{ActionTimeout: time.Second})
		req := httptest.NewRequest(http.MethodPost, "/v1/control", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		calls := ctl.Calls()
		if rec.Code != http.StatusOK {
			if rec.Code < 400 || rec.Code >= 500 || len(calls) != 0 {
				t.Fatalf("%q: status %d, applied %v", body, rec.Code, calls)
			}
			return
		}
		var resp ControlResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || len(calls) != 1 || calls[0] != resp.Action+" "+resp.Replica {
			t.Fatalf("%q: answered %s (%v), applied %v", body, rec.Body.String(), err, calls)
		}
		_, known := ctl.Index(resp.Replica)
		if !slices.Contains(Actions, resp.Action) || !(known || resp.Action == ActionHeal && resp.Replica == "all") {
			t.Fatalf("%q: applied %v", body, calls)
		}
	})
}

// The page offers partition and heal only on a testnet whose replicas serve the admin API; without it the
// control endpoint refuses them at once, saying what is missing, and applies nothing.
func TestPageActionsFollowTheAdminAPI(t *testing.T) {
	for _, admin := range []bool{false, true} {
		net, err := Create(Config{Dir: t.TempDir(), N: 4, ChainID: "ui-actions", AdminAPI: admin})
		if err != nil {
			t.Fatal(err)
		}
		got := net.PageActions()
		if has := slices.Contains(got, ActionPartition) && slices.Contains(got, ActionHeal); has != admin {
			t.Errorf("admin API %v: page actions %v", admin, got)
		}
		if !slices.Contains(got, ActionKill) || !slices.Contains(got, ActionPause) || !slices.Contains(got, ActionRestart) {
			t.Errorf("admin API %v: page actions %v lack the process actions", admin, got)
		}
	}

	ctl := &fakeController{noAdmin: true}
	events := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	srv := httptest.NewServer(newUIHandler(ctl, events, UIOptions{ActionTimeout: 10 * time.Second}))
	defer srv.Close()
	for _, body := range []string{`{"action":"partition","replica":"node1"}`, `{"action":"heal"}`} {
		resp, err := http.Post(srv.URL+"/v1/control", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if msg, _ := out["error"].(string); resp.StatusCode != 400 || out["code"] != "not_offered" || !strings.Contains(msg, "--experiment-admin-api") {
			t.Errorf("%s without the admin API: %d %v", body, resp.StatusCode, out)
		}
	}
	if calls := ctl.Calls(); len(calls) != 0 {
		t.Fatalf("refused actions applied: %v", calls)
	}
}
