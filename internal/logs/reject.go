package logs

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"
)

// DefaultSummaryInterval is how often, at most, Rejections writes its summary at info.
const DefaultSummaryInterval = 10 * time.Second

// Rejections logs the requests (or messages) a part of the node rejects: each one at debug, with what
// identifies it, and at info a summary of the rejections by reason at most once per interval. The first
// rejection after a quiet interval is summarised at once, so a single bad request shows at info; a
// flood costs one line per interval (the rejections since the last summary are counted in the next one,
// written with the first rejection once the interval has passed: no timer, no goroutine). Counts go to
// metrics elsewhere: this is for the operator reading the log. It is safe for concurrent use.
type Rejections struct {
	log   *slog.Logger
	what  string
	every time.Duration
	now   func() time.Time

	mu     sync.Mutex
	counts map[string]uint64
	last   time.Time // when the last summary was written (zero: never)
}

// NewRejections returns a log of rejected things, named by what ("request", "message") in its lines,
// with a summary at most every interval (DefaultSummaryInterval if interval <= 0).
func NewRejections(log *slog.Logger, what string, interval time.Duration) *Rejections {
	if interval <= 0 {
		interval = DefaultSummaryInterval
	}
	return &Rejections{log: log, what: what, every: interval, now: time.Now, counts: make(map[string]uint64)}
}

// Reject records n rejections (usually 1) for reason; attrs (key-value pairs, as for slog) describe what
// was rejected and go into the debug line only.
func (r *Rejections) Reject(reason string, n uint64, attrs ...any) {
	if r == nil || n == 0 {
		return
	}
	ctx := context.Background()
	if r.log.Enabled(ctx, slog.LevelDebug) {
		args := make([]any, 0, 4+len(attrs))
		args = append(args, "reason", reason)
		if n != 1 {
			args = append(args, "count", n)
		}
		r.log.Debug("rejected "+r.what, append(args, attrs...)...)
	}
	r.mu.Lock()
	r.counts[reason] += n
	now := r.now()
	if !r.last.IsZero() && now.Sub(r.last) < r.every {
		r.mu.Unlock()
		return
	}
	counts := r.counts
	since := r.last
	r.counts, r.last = make(map[string]uint64), now
	r.mu.Unlock()
	r.summarise(ctx, counts, since, now)
}

func (r *Rejections) summarise(ctx context.Context, counts map[string]uint64, since, now time.Time) {
	var total uint64
	reasons := make([]any, 0, len(counts))
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		total += counts[k]
		reasons = append(reasons, slog.Uint64(k, counts[k]))
	}
	args := []any{"count", total, slog.Group("reasons", reasons...)}
	if !since.IsZero() {
		args = append(args, "in_last", now.Sub(since).Round(time.Second).String())
	}
	r.log.Log(ctx, slog.LevelInfo, "rejected "+r.what+"s (each one is logged at debug)", args...)
}
