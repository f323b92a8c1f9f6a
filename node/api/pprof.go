package api

import (
	"net/http"
	"net/http/pprof"
)

// pprofRoutes serves Go's runtime profiles under /debug/pprof/ (Options.Pprof). Profiles reveal the
// process's internals and a CPU profile costs CPU while it runs, so they answer loopback clients only, as
// the admin endpoints do.
func (s *Server) pprofRoutes(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", s.loopbackOnly(pprof.Index))
	mux.HandleFunc("/debug/pprof/cmdline", s.loopbackOnly(pprof.Cmdline))
	mux.HandleFunc("/debug/pprof/profile", s.loopbackOnly(pprof.Profile))
	mux.HandleFunc("/debug/pprof/symbol", s.loopbackOnly(pprof.Symbol))
	mux.HandleFunc("/debug/pprof/trace", s.loopbackOnly(pprof.Trace))
}
