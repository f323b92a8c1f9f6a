package api

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestPprofOffByDefaultAndLoopbackOnly(t *testing.T) {
	serve := func(s *Server, path, remote string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", path, nil)
		req.RemoteAddr = remote
		s.Handler().ServeHTTP(rec, req)
		return rec
	}
	off := newEnv(t, Options{})
	if rec := serve(off.s, "/debug/pprof/", "127.0.0.1:5000"); rec.Code != http.StatusNotFound {
		t.Fatalf("pprof off: %d", rec.Code)
	}
	on := newEnv(t, Options{Pprof: true})
	rec := serve(on.s, "/debug/pprof/", "127.0.0.1:5000")
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "goroutine") {
		t.Fatalf("pprof index on loopback: %d %q", rec.Code, rec.Body.String())
	}
	if rec := serve(on.s, "/debug/pprof/goroutine?debug=1", "127.0.0.1:5000"); rec.Code != http.StatusOK {
		t.Fatalf("goroutine profile: %d", rec.Code)
	}
	if rec := serve(on.s, "/debug/pprof/", "10.1.2.3:4567"); rec.Code != http.StatusForbidden {
		t.Fatalf("pprof to a remote client: %d", rec.Code)
	}
}
