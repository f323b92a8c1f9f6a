package store

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble"
	"github.com/p2pbft/p2pbft/node/app"
)

var appPrefix = []byte{prefixAppSpace}

// AppStorage returns the application's namespace of the store. Writes through its batches are atomic among
// themselves; writes that must be atomic with blocks go through Batch.App.
func (s *Store) AppStorage() app.Storage { return &appStorage{s: s} }

type appStorage struct{ s *Store }

func (a *appStorage) Get(key []byte) ([]byte, bool, error) {
	return a.s.get(appKey(key))
}

func appKey(k []byte) []byte {
	out := make([]byte, 0, 1+len(k))
	return append(append(out, prefixAppSpace), k...)
}

// appUpper is the exclusive upper bound of the application namespace.
var appUpper = []byte{prefixAppSpace + 1}

func (a *appStorage) NewIter(lower, upper []byte) (app.Iterator, error) {
	o := &pebble.IterOptions{LowerBound: appKey(lower), UpperBound: appUpper}
	if upper != nil {
		o.UpperBound = appKey(upper)
	}
	it, err := a.s.db.NewIter(o)
	if err != nil {
		return nil, readErr("app iterator", err)
	}
	return &appIter{it: it}, nil
}

func (a *appStorage) NewBatch() app.Batch {
	b := a.s.db.NewBatch()
	return &appBatch{prefixWriter: prefixWriter{w: (*pebbleWriter)(b), prefix: appPrefix, fail: func(err error) error { return err }}, b: b, s: a.s}
}

type appIter struct{ it *pebble.Iterator }

func (i *appIter) First() bool          { return i.it.First() }
func (i *appIter) SeekGE(k []byte) bool { return i.it.SeekGE(appKey(k)) }
func (i *appIter) Next() bool           { return i.it.Next() }
func (i *appIter) Valid() bool          { return i.it.Valid() }
func (i *appIter) Key() []byte          { return i.it.Key()[1:] }
func (i *appIter) Value() []byte        { return i.it.Value() }
func (i *appIter) Error() error {
	if err := i.it.Error(); err != nil {
		return readErr("app iterator", err)
	}
	return nil
}
func (i *appIter) Close() error { return i.it.Close() }

// pebbleWriter adapts a pebble batch to the three write operations.
type pebbleWriter pebble.Batch

func (w *pebbleWriter) set(k, v []byte) error { return (*pebble.Batch)(w).Set(k, v, nil) }
func (w *pebbleWriter) del(k []byte) error    { return (*pebble.Batch)(w).Delete(k, nil) }
func (w *pebbleWriter) delRange(a, b []byte) error {
	return (*pebble.Batch)(w).DeleteRange(a, b, nil)
}

// prefixWriter confines writes to one namespace.
type prefixWriter struct {
	w      *pebbleWriter
	prefix []byte
	fail   func(error) error
}

func (p prefixWriter) key(k []byte) []byte {
	out := make([]byte, 0, len(p.prefix)+len(k))
	return append(append(out, p.prefix...), k...)
}

func (p prefixWriter) Set(key, value []byte) error {
	if err := p.w.set(p.key(key), value); err != nil {
		return p.fail(fmt.Errorf("store: app set: %w", err))
	}
	return nil
}

func (p prefixWriter) Delete(key []byte) error {
	if err := p.w.del(p.key(key)); err != nil {
		return p.fail(fmt.Errorf("store: app delete: %w", err))
	}
	return nil
}

func (p prefixWriter) DeleteRange(start, end []byte) error {
	e := appUpper
	if end != nil {
		e = p.key(end)
	}
	if bytes.Compare(p.key(start), e) >= 0 {
		return nil
	}
	if err := p.w.delRange(p.key(start), e); err != nil {
		return p.fail(fmt.Errorf("store: app delete range: %w", err))
	}
	return nil
}

type appBatch struct {
	prefixWriter
	b      *pebble.Batch
	s      *Store
	closed bool
}

func (a *appBatch) Commit(sync bool) error {
	if a.closed {
		return errors.New("store: app batch already committed or closed")
	}
	defer a.Close()
	o := pebble.NoSync
	if sync && a.s.wopts == pebble.Sync {
		o = pebble.Sync
	}
	if err := a.b.Commit(o); err != nil {
		return fmt.Errorf("store: app batch commit: %w", err)
	}
	return nil
}

func (a *appBatch) Close() error {
	if !a.closed {
		a.closed = true
		return a.b.Close()
	}
	return nil
}
