package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/gologshim"
)

// libp2pLogs routes go-libp2p's own logs (it logs through a process-wide logger, see gologshim) into this
// process's slog handler. Until a command sets one, they are dropped: a client command should print its
// results, not libp2p's shutdown chatter. GOLOG_LOG_LEVEL, if set, keeps libp2p's own stderr logging.
//
// A warning about a connection or stream the other side closed or reset (churn) is logged at debug: a
// replica serves short-lived clients (every `p2pbft tx` is one), and go-libp2p warns when one leaves
// before its identify exchange finished ("error reading identify message ... connection reset"). That is
// normal, and at info a replica's log should show what is not.
type libp2pLogs struct {
	h   atomic.Pointer[slog.Handler]
	min slog.LevelVar
}

// installLibp2pLogs makes go-libp2p log through the returned router. Call it once, before any libp2p host
// exists (main does).
func installLibp2pLogs() *libp2pLogs {
	r := &libp2pLogs{}
	var discard slog.Handler = slog.NewTextHandler(io.Discard, nil)
	r.h.Store(&discard)
	r.min.Set(slog.LevelError + 4)
	if os.Getenv("GOLOG_LOG_LEVEL") == "" {
		gologshim.SetDefaultHandler(routeHandler{r: r})
	}
	return r
}

// set sends libp2p's logs at level min and above to h. A nil router (tests) ignores the call.
func (r *libp2pLogs) set(h slog.Handler, min slog.Level) {
	if r == nil {
		return
	}
	r.h.Store(&h)
	r.min.Set(min)
}

// routeHandler forwards to the router's current handler. WithAttrs and WithGroup are applied when a
// record is handled, so that a logger created before set still reaches the handler set later.
type routeHandler struct {
	r     *libp2pLogs
	attrs []slog.Attr
	group string
}

func (h routeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.r.min.Level() && (*h.r.h.Load()).Enabled(ctx, l)
}

func (h routeHandler) Handle(ctx context.Context, rec slog.Record) error {
	inner := *h.r.h.Load()
	if rec.Level > slog.LevelDebug && isChurn(rec) {
		rec.Level = slog.LevelDebug
		if rec.Level < h.r.min.Level() || !inner.Enabled(ctx, rec.Level) {
			return nil
		}
	}
	if len(h.attrs) > 0 {
		inner = inner.WithAttrs(h.attrs)
	}
	if h.group != "" {
		inner = inner.WithGroup(h.group)
	}
	return inner.Handle(ctx, rec)
}

func (h routeHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	h.attrs = append(append([]slog.Attr(nil), h.attrs...), attrs...)
	return h
}

func (h routeHandler) WithGroup(name string) slog.Handler {
	if h.group == "" {
		h.group = name
	}
	return h
}

// churnErrors are what errors say when the other side closed or reset a connection or stream, or went
// away (TCP, yamux, QUIC).
var churnErrors = []string{"connection reset", "stream reset", "EOF", "use of closed network connection",
	"connection closed", "broken pipe", "Application error 0x0", "NO_ERROR", "no recent network activity",
	"context canceled"}

// isChurn reports whether a libp2p record is about a peer that went away: its error attribute says so.
func isChurn(rec slog.Record) bool {
	churn := false
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key != "err" && a.Key != "error" {
			return true
		}
		msg := a.Value.String()
		for _, c := range churnErrors {
			if strings.Contains(msg, c) {
				churn = true
				return false
			}
		}
		return true
	})
	return churn
}
