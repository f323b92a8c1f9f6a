package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/p2pbft/p2pbft/ui"
)

// backendSource is the ui.Source of a replica's own page: it reads the backend directly.
type backendSource struct{ b Backend }

func (s backendSource) Poll(_ context.Context, _ int, limit int) ui.Snapshot {
	select {
	case <-s.b.Stopped():
		return ui.Snapshot{Error: "the replica has stopped"}
	default:
	}
	st := s.b.Status()
	slots, vcs := s.b.Traces(0, limit)
	return ui.Snapshot{Up: true, Status: &st, TraceEnabled: s.b.TraceEnabled(), Slots: slots, ViewChanges: vcs}
}

// uiRoutes serves the live page (GET /ui/) and its event stream (GET /v1/events). A replica knows its
// peers' p2p addresses but not their HTTP APIs, so its page shows itself only (and whom it reaches); the
// page of `p2pbft testnet --ui` shows every replica.
func (s *Server) uiRoutes(mux *http.ServeMux) {
	self := s.b.Status().Replica
	hello := ui.Hello{Mode: "replica", ChainID: s.chainID, N: s.g.N(), F: s.g.F(), Self: self,
		Replicas: []ui.Replica{{Index: self, Name: fmt.Sprintf("node%d", self)}}}
	s.events = ui.NewStreamer(backendSource{s.b}, hello, s.opts.UI)
	mux.HandleFunc("/v1/events", s.only(http.MethodGet, s.events.ServeHTTP))
	mux.Handle("/ui/", s.only(http.MethodGet, http.StripPrefix("/ui/", ui.Assets()).ServeHTTP))
	mux.Handle("/ui", http.RedirectHandler("/ui/", http.StatusMovedPermanently))
}
