package testnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/p2pbft/p2pbft/node/api/apitypes"
	"github.com/p2pbft/p2pbft/node/config"
	"github.com/p2pbft/p2pbft/ui"
)

// UIOptions configure the testnet's live page (ServeUI).
type UIOptions struct {
	// Stream tunes the event stream (poll interval, clients at once).
	Stream ui.Options
	// ActionTimeout bounds one control action (a restart waits for the replica to be healthy). Default 2m.
	ActionTimeout time.Duration
	// Logger receives the page server's logs (each control action at info). Default: discard.
	Logger *slog.Logger
}

// ControlRequest is the body of POST /v1/control on the testnet's page server.
type ControlRequest struct {
	// Action is one of Actions.
	Action string `json:"action"`
	// Replica names the replica (node0 ... or its index); heal takes any replica, or "all".
	Replica string `json:"replica"`
}

// ControlResponse answers a control action that was applied.
type ControlResponse struct {
	Action  string `json:"action"`
	Replica string `json:"replica"`
	TookMS  int64  `json:"took_ms"`
}

// controller is what the control endpoint needs from a Network (an interface so that its tests can
// check that a rejected request changes nothing).
type controller interface {
	// PageActions are the actions the page offers and the control endpoint takes.
	PageActions() []string
	N() int
	Index(name string) (int, bool)
	Do(ctx context.Context, action, name string) error
}

// networkSource is the ui.Source of the testnet's page: it polls the replicas' HTTP APIs.
type networkSource struct{ n *Network }

func (s networkSource) Poll(ctx context.Context, i int, limit int) ui.Snapshot {
	running := s.n.Running(i)
	snap := ui.Snapshot{Running: &running}
	if !running {
		snap.Error = "the process is not running"
		return snap
	}
	st, err := s.n.Status(ctx, i)
	if err != nil {
		snap.Error = err.Error()
		return snap
	}
	snap.Up, snap.Status = true, &st
	b, _, err := s.n.get(ctx, i, fmt.Sprintf("/v1/trace?limit=%d", limit))
	if err != nil {
		// The status answered: the replica is up, only its records are missing from this poll.
		return snap
	}
	var tr apitypes.TraceResponse
	if err := json.Unmarshal(b, &tr); err != nil {
		return snap
	}
	snap.TraceEnabled, snap.Slots, snap.ViewChanges = tr.Enabled, tr.Slots, tr.ViewChanges
	return snap
}

// UIHandler returns the handler of the testnet's live page: the page (GET /ui/; / redirects there), the
// event stream of every replica (GET /v1/events, package ui) and the control endpoint behind the page's
// buttons (POST /v1/control, see ControlRequest), which applies actions through Do.
func (n *Network) UIHandler(o UIOptions) http.Handler {
	reps := make([]ui.Replica, n.N())
	for i, ni := range n.Nodes() {
		reps[i] = ui.Replica{Index: i, Name: ni.Name, API: ni.API}
	}
	hello := ui.Hello{Mode: "testnet", ChainID: n.Genesis().ChainID(), N: n.N(), F: n.Genesis().F(), Self: -1,
		Replicas: reps, Actions: n.PageActions(), Control: "../v1/control"}
	return newUIHandler(n, ui.NewStreamer(networkSource{n}, hello, o.Stream), o)
}

// PageActions returns the actions the live page offers: every action of Actions, but partition and heal
// only if a replica serves the admin API they act through (Config.AdminAPI), so that the page shows no
// button that can only fail.
func (n *Network) PageActions() []string {
	admin := false
	for i := range n.N() {
		if c, err := config.Load(n.Home(i)); err == nil && c.Experiment.AdminAPI {
			admin = true
		}
	}
	if admin {
		return Actions
	}
	return slices.DeleteFunc(slices.Clone(Actions), func(a string) bool { return a == ActionPartition || a == ActionHeal })
}

func newUIHandler(ctl controller, events http.Handler, o UIOptions) http.Handler {
	if o.ActionTimeout <= 0 {
		o.ActionTimeout = 2 * time.Minute
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	mux := http.NewServeMux()
	mux.Handle("GET /ui/", http.StripPrefix("/ui/", ui.Assets()))
	mux.Handle("GET /{$}", http.RedirectHandler("/ui/", http.StatusFound))
	mux.Handle("GET /v1/events", events)
	mux.HandleFunc("POST /v1/control", func(w http.ResponseWriter, r *http.Request) {
		handleControl(w, r, ctl, o.ActionTimeout, log)
	})
	return mux
}

// handleControl applies one action. It takes JSON only: a cross-site form cannot send
// application/json without a CORS preflight (which this server does not answer), so another web page the
// user visits cannot kill replicas.
func handleControl(w http.ResponseWriter, r *http.Request, ctl controller, timeout time.Duration, log *slog.Logger) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		ui.WriteError(w, http.StatusUnsupportedMediaType, "bad_content_type", "send the action as application/json: {\"action\": \"kill\", \"replica\": \"node0\"}")
		return
	}
	var req ControlRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		ui.WriteError(w, http.StatusBadRequest, "bad_json", "decode body: "+err.Error())
		return
	}
	if offered := ctl.PageActions(); !slices.Contains(offered, req.Action) {
		if slices.Contains(Actions, req.Action) {
			ui.WriteError(w, http.StatusBadRequest, "not_offered", fmt.Sprintf("%s needs the replicas' admin API: create the testnet with --experiment-admin-api", req.Action))
		} else {
			ui.WriteError(w, http.StatusBadRequest, "bad_action", fmt.Sprintf("unknown action %q (want one of %s)", req.Action, strings.Join(offered, ", ")))
		}
		return
	}
	if _, ok := ctl.Index(req.Replica); !ok && !(req.Action == ActionHeal && (req.Replica == "all" || req.Replica == "")) {
		ui.WriteError(w, http.StatusBadRequest, "bad_replica", fmt.Sprintf("no replica %q (replicas are node0 to node%d, or their index)", req.Replica, ctl.N()-1))
		return
	}
	if req.Action == ActionHeal && req.Replica == "" {
		req.Replica = "all"
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	start := time.Now()
	if err := ctl.Do(ctx, req.Action, req.Replica); err != nil {
		log.Warn("testnet page: action failed", "action", req.Action, "replica", req.Replica, "err", err)
		ui.WriteError(w, http.StatusConflict, "action_failed", fmt.Sprintf("%s %s: %v", req.Action, req.Replica, err))
		return
	}
	took := time.Since(start)
	log.Info("testnet page: action done", "action", req.Action, "replica", req.Replica, "took", took.Round(time.Millisecond))
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(ControlResponse{Action: req.Action, Replica: req.Replica, TookMS: took.Milliseconds()})
}

// ServeUI serves the live page (UIHandler) on ln until ctx ends. The page controls the replicas and has
// no authentication: listen on loopback.
func (n *Network) ServeUI(ctx context.Context, ln net.Listener, o UIOptions) error {
	// The streams end with their requests' contexts, which derive from ctx: Shutdown does not wait for
	// them past their next poll.
	srv := &http.Server{Handler: n.UIHandler(o), ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("testnet: page server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("testnet: page server: %w", err)
	}
	return nil
}
