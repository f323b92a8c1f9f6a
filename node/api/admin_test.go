package api

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/p2pbft/p2pbft/node/api/apitypes"
)

// partitionNode is a fake backend that records partitions.
type partitionNode struct {
	*fakeNode
	mu    sync.Mutex
	cut   []int
	calls int
	fail  error
}

func (p *partitionNode) Partition(peers []int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	if p.fail != nil {
		return p.fail
	}
	for _, i := range peers {
		if !slices.Contains(p.cut, i) {
			p.cut = append(p.cut, i)
		}
	}
	slices.Sort(p.cut)
	return nil
}

func (p *partitionNode) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	p.cut = nil
}

func (p *partitionNode) Partitioned() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.cut)
}

func newAdminEnv(t *testing.T) (*env, *partitionNode) {
	t.Helper()
	p := &partitionNode{fakeNode: newFakeNode(t)}
	s, err := New(p, Options{Logger: quiet, Admin: p})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(func() { ts.Close(); s.Close() })
	return &env{t: t, f: p.fakeNode, s: s, ts: ts}, p
}

func TestAdminPartitionHeal(t *testing.T) {
	e, p := newAdminEnv(t)
	var pr apitypes.PartitionResponse
	if code := e.do("POST", "/admin/partition", "application/json", []byte(`{"peers": [3, 0, 3]}`), &pr); code != 200 {
		t.Fatalf("partition: %d", code)
	}
	if !slices.Equal(pr.Partitioned, []int{0, 3}) || !slices.Equal(p.cut, []int{0, 3}) {
		t.Fatalf("answer %v, backend %v", pr.Partitioned, p.cut)
	}
	if code := e.do("GET", "/admin/partition", "", nil, &pr); code != 200 || !slices.Equal(pr.Partitioned, []int{0, 3}) {
		t.Fatalf("get: %d %v", code, pr.Partitioned)
	}
	// Partitions add up.
	if code := e.do("POST", "/admin/partition", "application/json", []byte(`{"peers": [2]}`), &pr); code != 200 || !slices.Equal(pr.Partitioned, []int{0, 2, 3}) {
		t.Fatalf("second partition: %d %v", code, pr.Partitioned)
	}
	if code := e.do("POST", "/admin/heal", "application/json", nil, &pr); code != 200 || len(pr.Partitioned) != 0 || p.cut != nil {
		t.Fatalf("heal: %d %v %v", code, pr.Partitioned, p.cut)
	}
	// Bad input changes nothing.
	calls := p.calls
	var er apitypes.ErrorResponse
	for _, body := range []string{`{"peers": [4]}`, `{"peers": [1]}`, `{"peers": [-1]}`, `{"peerz": [0]}`, `not json`} {
		if code := e.do("POST", "/admin/partition", "application/json", []byte(body), &er); code != 400 || er.Code != "bad_request" {
			t.Errorf("%s: %d %+v", body, code, er)
		}
	}
	if p.calls != calls {
		t.Fatalf("bad input reached the backend")
	}
	if code := e.do("DELETE", "/admin/partition", "", nil, &er); code != 405 {
		t.Fatalf("DELETE: %d", code)
	}
	if code := e.do("GET", "/admin/heal", "", nil, &er); code != 405 {
		t.Fatalf("GET heal: %d", code)
	}
	p.fail = errors.New("gater refused")
	if code := e.do("POST", "/admin/partition", "application/json", []byte(`{"peers": [0]}`), &er); code != 500 || !strings.Contains(er.Error, "gater refused") {
		t.Fatalf("backend failure: %d %+v", code, er)
	}
}

func TestAdminOffByDefaultAndLoopbackOnly(t *testing.T) {
	// Off by default: the admin paths are unknown.
	e := newEnv(t, Options{})
	var er apitypes.ErrorResponse
	if code := e.do("POST", "/admin/partition", "application/json", []byte(`{"peers": [0]}`), &er); code != 404 {
		t.Fatalf("admin off: %d", code)
	}
	// A client off loopback is refused.
	ae, p := newAdminEnv(t)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/admin/partition", strings.NewReader(`{"peers": [0]}`))
	req.RemoteAddr = "10.1.2.3:4567"
	ae.s.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden || p.calls != 0 {
		t.Fatalf("remote client: %d, %d backend calls", rec.Code, p.calls)
	}
}
