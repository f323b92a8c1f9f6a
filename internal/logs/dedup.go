// Package logs holds the logging pieces the node's parts share on top of log/slog:
//
//   - Dedup, a handler that writes every key once per line. A replica's logger is handed down from the
//     command to the node, its p2p host, gossipsub and the store, and each adds what it knows (the
//     replica index, its component). Without Dedup, a key added twice appears twice: "component=p2p
//     component=pubsub" in text, a JSON object with a repeated key (which most JSON readers resolve by
//     keeping one of them, silently). With Dedup the latest value of a key wins, as a log reader expects
//     of a nested component.
//   - Rejections, the log of rejected requests and messages: one line per rejection at debug, and at
//     info a summary at most once per interval, so that a flood of bad input is visible at the default
//     level without flooding the log.
package logs

import (
	"context"
	"log/slog"
	"slices"
)

// Dedup returns a handler that passes records to h with every key once: an attribute added with
// WithAttrs replaces an earlier one of the same key, and a record's attribute replaces a WithAttrs one of
// the same key. Attributes inside a group (WithGroup) are kept apart from those outside it, as slog
// itself qualifies them.
func Dedup(h slog.Handler) slog.Handler {
	return &dedup{base: h, inner: h}
}

type dedup struct {
	// base is the wrapped handler with the groups opened so far and none of attrs; inner is
	// base.WithAttrs(attrs), built once per WithAttrs so that records take the wrapped handler's fast
	// path (it preformats its attributes).
	base, inner slog.Handler
	attrs       []slog.Attr // each key once, in the order keys first appeared
}

func (d *dedup) Enabled(ctx context.Context, l slog.Level) bool { return d.inner.Enabled(ctx, l) }

func (d *dedup) WithAttrs(as []slog.Attr) slog.Handler {
	if len(as) == 0 {
		return d
	}
	merged := merge(slices.Clone(d.attrs), as)
	return &dedup{base: d.base, inner: d.base.WithAttrs(merged), attrs: merged}
}

func (d *dedup) WithGroup(name string) slog.Handler {
	if name == "" {
		return d
	}
	// Keys after the group are qualified by it: they cannot repeat the ones before.
	g := d.inner.WithGroup(name)
	return &dedup{base: g, inner: g}
}

func (d *dedup) Handle(ctx context.Context, r slog.Record) error {
	if len(d.attrs) == 0 || !d.collides(r) {
		return d.inner.Handle(ctx, r)
	}
	// Rare: a record repeats a key of the logger. Rebuild the line with the record's value in the
	// logger's place.
	own := make([]slog.Attr, 0, r.NumAttrs())
	r.Attrs(func(a slog.Attr) bool {
		own = append(own, a)
		return true
	})
	merged := merge(slices.Clone(d.attrs), own)
	nr := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	return d.base.WithAttrs(merged).Handle(ctx, nr)
}

// collides reports whether a record's attribute has the key of one of the logger's.
func (d *dedup) collides(r slog.Record) bool {
	hit := false
	r.Attrs(func(a slog.Attr) bool {
		for _, b := range d.attrs {
			if a.Key == b.Key {
				hit = true
				return false
			}
		}
		return true
	})
	return hit
}

// merge adds as to attrs, replacing the value of a key attrs holds already; attributes slog would drop
// (empty key) are dropped.
func merge(attrs, as []slog.Attr) []slog.Attr {
next:
	for _, a := range as {
		if a.Key == "" {
			continue
		}
		for i := range attrs {
			if attrs[i].Key == a.Key {
				attrs[i] = a
				continue next
			}
		}
		attrs = append(attrs, a)
	}
	return attrs
}
