package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/p2pbft/p2pbft/client/session"
	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/internal/logs"
	"github.com/p2pbft/p2pbft/node"
	"github.com/p2pbft/p2pbft/node/api/apitypes"
	"github.com/p2pbft/p2pbft/node/store"
	"github.com/p2pbft/p2pbft/node/trace"
	"github.com/p2pbft/p2pbft/ui"
	"github.com/p2pbft/p2pbft/wire"
)

// Backend is what the API needs from a replica; *node.Node implements it.
type Backend interface {
	Status() apitypes.Status
	Submit(ctx context.Context, req *wire.Envelope) (*wire.Envelope, error)
	SubmitAsync(req *wire.Envelope) error
	Query(q []byte) (answer []byte, height uint64, err error)
	Block(height uint64) (*store.Block, error)
	Head() uint64
	Gatherer() prometheus.Gatherer
	ClientKey() *identity.Key
	Genesis() *identity.Genesis
	Started() <-chan struct{}
	Stopped() <-chan struct{}
	// Traces returns the replica's trace records (node/trace): slots from sequence number from upward (0:
	// the latest), at most limit of them, and its view changes. TraceEnabled says whether it keeps them.
	Traces(from uint64, limit int) ([]trace.Slot, []trace.ViewChange)
	TraceEnabled() bool
	// Relay: the default relay (Options.Relay).
	Relay
}

var _ Backend = (*node.Node)(nil)

// Options tune the API. Zero values take the defaults given on each field.
type Options struct {
	// Sessions is the number of session keys derived from the node's client key, so the number of JSON
	// operations that can be outstanding at once. Default 16.
	Sessions int
	// CommitTimeout bounds how long a submission waits for execution (and, in async mode, how long the
	// API keeps its session for it). A request may ask for less or more with ?timeout=, up to
	// MaxCommitTimeout. Default 30s.
	CommitTimeout time.Duration
	// MaxCommitTimeout caps ?timeout=. Default 5m.
	MaxCommitTimeout time.Duration
	// MaxBodyBytes bounds a request body. Default 4 MiB (a request of the engine's largest size, 1 MiB, fits in base64).
	MaxBodyBytes int64
	// Logger receives the API's logs. Default slog.Default().
	Logger *slog.Logger
	// Relay makes a submission known to the other replicas when the local replica has not executed it
	// after RetryTimeout (see Relay). Default: the backend itself.
	Relay Relay
	// RetryTimeout is how long a submission waits for the local replica before it is relayed to the
	// others; relays repeat at this interval, doubling up to 8s. Default 1s.
	RetryTimeout time.Duration
	// Admin, when not nil, enables the experiment endpoints (/admin/partition, /admin/heal) on it (for a
	// replica, the *node.Node itself); they answer only clients on loopback. Nil by default: set it only
	// for fault-injection experiments ([experiment] admin_api).
	Admin Partitioner
	// Pprof serves net/http/pprof under /debug/pprof/, to clients on loopback only ([api] pprof).
	Pprof bool
	// UI tunes the live page's event stream (GET /v1/events; package ui): poll interval, clients at once.
	UI ui.Options
}

// Relay sends a request to other replicas: PBFT's client broadcast on timeout, which the API does on
// behalf of the transactions it submits. A replica forwards a client request only to the primary, so if
// the primary is faulty, only replicas that know the request will start their view-change timers: a
// request that reached one replica alone could wait forever. *node.Node relays over its p2p host.
type Relay interface {
	// OtherReplicas returns the replicas to relay to (all but the local one; none for a backend that
	// cannot relay).
	OtherReplicas() []int
	// SendRequest sends the request to replica i and returns when it answered (its reply is not used:
	// the API returns the local replica's).
	SendRequest(ctx context.Context, i int, req *wire.Envelope) error
}

func (o Options) withDefaults() Options {
	if o.Sessions <= 0 {
		o.Sessions = 16
	}
	if o.CommitTimeout <= 0 {
		o.CommitTimeout = 30 * time.Second
	}
	if o.MaxCommitTimeout <= 0 {
		o.MaxCommitTimeout = 5 * time.Minute
	}
	if o.MaxCommitTimeout < o.CommitTimeout {
		o.MaxCommitTimeout = o.CommitTimeout
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 4 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.RetryTimeout <= 0 {
		o.RetryTimeout = time.Second
	}
	return o
}

// Server serves the API of one replica. Create it with New; Handler serves requests, Serve runs an HTTP
// server until its context ends, Close ends background work (async submissions still waiting).
type Server struct {
	b        Backend
	opts     Options
	log      *slog.Logger
	chainID  string
	g        *identity.Genesis
	verifier *identity.Verifier
	sessions *session.Pool
	handler  http.Handler

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	adminMu sync.Mutex // serializes partition changes

	events *ui.Streamer // GET /v1/events
}

// New builds the API for a replica.
func New(b Backend, opts Options) (*Server, error) {
	opts = opts.withDefaults()
	g := b.Genesis()
	if g == nil {
		return nil, errors.New("api: the backend has no genesis")
	}
	if b.ClientKey() == nil {
		return nil, errors.New("api: the backend has no client key")
	}
	sessions, err := session.NewPool(b.ClientKey(), opts.Sessions)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	v, err := g.NewVerifier()
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	if opts.Relay == nil {
		opts.Relay = b
	}
	s := &Server{b: b, opts: opts, log: opts.Logger.With("component", "api"), chainID: g.ChainID(), g: g,
		verifier: v, sessions: sessions}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/tx", s.only(http.MethodPost, s.handleTx))
	mux.HandleFunc("/v1/kv/{key...}", s.only(http.MethodGet, s.handleKV))
	mux.HandleFunc("/v1/status", s.only(http.MethodGet, s.handleStatus))
	mux.HandleFunc("/v1/peers", s.only(http.MethodGet, s.handlePeers))
	mux.HandleFunc("/v1/blocks/{height}", s.only(http.MethodGet, s.handleBlock))
	mux.HandleFunc("/v1/blocks", s.only(http.MethodGet, s.handleBlocks))
	mux.HandleFunc("/v1/trace", s.only(http.MethodGet, s.handleTrace))
	mux.HandleFunc("/health", s.only(http.MethodGet, s.handleHealth))
	s.uiRoutes(mux)
	metrics := promhttp.HandlerFor(b.Gatherer(), promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	mux.HandleFunc("/metrics", s.only(http.MethodGet, metrics.ServeHTTP))
	if opts.Admin != nil {
		s.adminRoutes(mux, opts.Admin)
	}
	if opts.Pprof {
		s.pprofRoutes(mux)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no endpoint %s (see /v1/status, /v1/tx, /v1/kv/{key}, /v1/blocks, /v1/trace, /v1/events, /ui/, /metrics, /health)", r.URL.Path))
	})
	s.handler = logRejected(mux, logs.NewRejections(s.log, "API request", logs.DefaultSummaryInterval))
	return s, nil
}

// Handler returns the API's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Close stops waiting for async submissions and waits for their goroutines. It does not stop a running
// Serve (cancel its context).
func (s *Server) Close() {
	s.cancel()
	s.wg.Wait()
}

// only restricts a handler to one method (GET also allows HEAD).
func (s *Server) only(method string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead) {
			w.Header().Set("Allow", method)
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", fmt.Sprintf("%s %s: use %s", r.Method, r.URL.Path, method))
			return
		}
		h(w, r)
	}
}

// ErrAddrInUse is wrapped by Listen's error when the address is taken.
var ErrAddrInUse = errors.New("address already in use")

// Listen opens the API's TCP listener, with a clear error for an address in use.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("api: cannot listen on %s: %w (is another node running? change api.http or --api): %v", addr, ErrAddrInUse, err)
		}
		return nil, fmt.Errorf("api: listen on %s: %w", addr, err)
	}
	return ln, nil
}

// Serve serves the API on ln until ctx ends, then shuts down gracefully (in-flight requests get a few
// seconds) and ends background work.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return s.ctx },
	}
	if host, _, err := net.SplitHostPort(ln.Addr().String()); err == nil {
		if ip := net.ParseIP(host); ip != nil && !ip.IsLoopback() {
			s.log.Warn("the HTTP API listens beyond loopback and has no authentication: anyone who reaches it can submit transactions", "addr", ln.Addr())
		}
	}
	s.log.Info("HTTP API listening", "addr", "http://"+ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		s.Close()
		return fmt.Errorf("api: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.cancel() // ends waits for execution, so Shutdown does not wait for them
	err := srv.Shutdown(sctx)
	if err != nil {
		srv.Close()
	}
	<-errc
	s.Close()
	return nil
}

// submit hands a request to the local replica and waits for its reply. If the reply does not come within
// RetryTimeout, the request is relayed to every other replica (again at growing intervals, to those whose
// earlier relay ended), so that a faulty primary is replaced: see Relay.
func (s *Server) submit(ctx context.Context, env *wire.Envelope) (*wire.Envelope, error) {
	type result struct {
		env *wire.Envelope
		err error
	}
	local := make(chan result, 1)
	go func() {
		r, err := s.b.Submit(ctx, env)
		local <- result{r, err}
	}()
	peers := s.opts.Relay.OtherReplicas()
	if len(peers) == 0 {
		r := <-local
		return r.env, r.err
	}
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	pending := make(map[int]bool, len(peers))
	ended := make(chan int, len(peers))
	retry := s.opts.RetryTimeout
	timer := time.NewTimer(retry)
	defer timer.Stop()
	for {
		select {
		case r := <-local:
			return r.env, r.err
		case i := <-ended:
			pending[i] = false
		case <-timer.C:
			n := 0
			for _, i := range peers {
				if pending[i] {
					continue
				}
				pending[i] = true
				n++
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := s.opts.Relay.SendRequest(rctx, i, env); err != nil && rctx.Err() == nil {
						s.log.Debug("relay to a replica failed", "replica", i, "err", err)
					}
					ended <- i
				}()
			}
			s.log.Debug("transaction not executed yet: relayed to the other replicas", "sent", n, "after", retry)
			retry = min(2*retry, 8*time.Second)
			timer.Reset(retry)
		}
	}
}
