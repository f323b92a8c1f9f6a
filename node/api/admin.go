package api

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"

	"github.com/p2pbft/p2pbft/node"
	"github.com/p2pbft/p2pbft/node/api/apitypes"
)

// Partitioner is what the experiment endpoints need from a backend: a replica that can cut itself off
// from other replicas at run time (both directions: no connection to or from them is kept or accepted)
// and undo it. *node.Node implements it (through its p2p host's connection gater).
type Partitioner interface {
	// Partition cuts the replica off from the given replicas (indexes in the genesis), in addition to
	// those it is already cut off from.
	Partition(peers []int) error
	// Heal undoes every partition.
	Heal()
	// Partitioned returns the replicas the replica is cut off from.
	Partitioned() []int
}

var _ Partitioner = (*node.Node)(nil)

// adminRoutes serves the experiment endpoints:
//
//	POST /admin/partition   {"peers": [0, 2]}: also cut this replica off from replicas 0 and 2
//	POST /admin/heal        undo every partition
//	GET  /admin/partition   the replicas this replica is cut off from
//
// They answer only clients on loopback, whatever address the API listens on.
func (s *Server) adminRoutes(mux *http.ServeMux, p Partitioner) {
	partitioned := func() apitypes.PartitionResponse {
		out := apitypes.PartitionResponse{Partitioned: slices.Clone(p.Partitioned())}
		if out.Partitioned == nil {
			out.Partitioned = []int{}
		}
		return out
	}
	mux.HandleFunc("/admin/partition", s.loopbackOnly(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			writeJSON(w, http.StatusOK, partitioned())
			return
		case http.MethodPost:
		default:
			w.Header().Set("Allow", "GET, POST")
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", fmt.Sprintf("%s %s: use GET or POST", r.Method, r.URL.Path))
			return
		}
		var req apitypes.PartitionRequest
		dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", "body: want {\"peers\": [replica indexes]}: "+err.Error())
			return
		}
		n, self := s.g.N(), s.b.Status().Replica
		peers := slices.Clone(req.Peers)
		slices.Sort(peers)
		peers = slices.Compact(peers)
		for _, i := range peers {
			if i < 0 || i >= n {
				writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("peer %d: replicas are 0 to %d", i, n-1))
				return
			}
			if i == self {
				writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("peer %d is this replica", i))
				return
			}
		}
		s.adminMu.Lock()
		defer s.adminMu.Unlock()
		if err := p.Partition(peers); err != nil {
			s.fail(w, fmt.Errorf("partition: %w", err))
			return
		}
		writeJSON(w, http.StatusOK, partitioned())
	}))
	mux.HandleFunc("/admin/heal", s.loopbackOnly(s.only(http.MethodPost, func(w http.ResponseWriter, r *http.Request) {
		s.adminMu.Lock()
		defer s.adminMu.Unlock()
		p.Heal()
		writeJSON(w, http.StatusOK, partitioned())
	})))
}

// loopbackOnly refuses requests from clients that are not on loopback.
func (s *Server) loopbackOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		ip := net.ParseIP(host)
		if err != nil || ip == nil || !ip.IsLoopback() {
			writeError(w, http.StatusForbidden, "forbidden", "the admin endpoints answer only clients on loopback")
			return
		}
		h(w, r)
	}
}
