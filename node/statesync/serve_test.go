package statesync

import (
	"encoding/binary"
	"fmt"
	"iter"
	"strings"
	"testing"

	"github.com/p2pbft/p2pbft/node/app"
	"github.com/p2pbft/p2pbft/node/store"
	"github.com/p2pbft/p2pbft/pbft"
)

// fixtureSource serves a fixture the way a replica serves its store and application (Source): the honest
// fake peers answer through Serve with it, so every syncer test with honest peers runs the serving side too.
type fixtureSource struct{ f *fixture }

func (s fixtureSource) CoreSnapshot(seq uint64) (*pbft.Snapshot, error) {
	if seq != s.f.seq {
		return nil, fmt.Errorf("no snapshot at checkpoint %d (this replica keeps [%d])", seq, s.f.seq)
	}
	return &pbft.Snapshot{Seq: s.f.seq, AppDigest: s.f.appDigest, ClientTable: s.f.table}, nil
}

func (s fixtureSource) Block(h uint64) (*store.Block, error) {
	if h == 0 || h >= uint64(len(s.f.blocks)) {
		return nil, fmt.Errorf("block %d: %w", h, store.ErrNotFound)
	}
	return s.f.blocks[h], nil
}

func (s fixtureSource) Blocks(from, to uint64) iter.Seq2[*store.Block, error] {
	return func(yield func(*store.Block, error) bool) {
		for h := max(from, 1); h <= to && h < uint64(len(s.f.blocks)); h++ {
			if !yield(s.f.blocks[h], nil) {
				return
			}
		}
	}
}

func (s fixtureSource) OpenSnapshot(h uint64) (app.Snapshot, error) {
	if h != s.f.seq {
		return nil, fmt.Errorf("snapshot %d: %w", h, app.ErrNoSnapshot)
	}
	return stateReader{s.f}, nil
}

// stateReader reads the fixture's state in chunks; the cursor is the offset reached.
type stateReader struct{ f *fixture }

func (r stateReader) State() app.State { return app.State{Height: r.f.seq, Digest: r.f.appDigest} }
func (r stateReader) Close() error     { return nil }
func (r stateReader) ReadChunk(cursor []byte, maxBytes int) ([]byte, bool, error) {
	var off uint64
	if len(cursor) == 8 {
		off = binary.BigEndian.Uint64(cursor)
	}
	data, more := part(r.f.state, off, maxBytes)
	return data, more, nil
}

func TestServe(t *testing.T) {
	f := newFixture(t, 20, 16)
	src := fixtureSource{f}

	m, err := Serve(src, &Request{Type: TypeManifest, Seq: 16}, 64)
	if err != nil {
		t.Fatal(err)
	}
	if m.AppDigest != f.appDigest || m.TableDigest != pbft.ClientTableDigest(f.table) || m.TableSize != uint64(len(f.table)) ||
		len(m.Block) == 0 {
		t.Fatalf("manifest %+v", m)
	}

	// The client table in parts of at most the limit.
	var table []byte
	for {
		r, err := Serve(src, &Request{Type: TypeTable, Seq: 16, Offset: uint64(len(table))}, 30)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Data) > 30 {
			t.Fatalf("a table part of %d bytes over the limit of 30", len(r.Data))
		}
		table = append(table, r.Data...)
		if !r.More {
			break
		}
	}
	if string(table) != string(f.table) {
		t.Fatal("the table parts do not add up to the table")
	}

	// A page of blocks stops at the limit, but holds at least one block however large.
	one := len(encode(t, f.blocks[1]))
	r, err := Serve(src, &Request{Type: TypeBlocks, Seq: 1, To: 20}, 3*one+one/2)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Blocks) != 3 {
		t.Fatalf("%d blocks in a page of 3.5 blocks' bytes", len(r.Blocks))
	}
	if r, err := Serve(src, &Request{Type: TypeBlocks, Seq: 5, To: 20}, 1); err != nil || len(r.Blocks) != 1 {
		t.Fatalf("a page under one block's size: %d blocks, %v", len(r.Blocks), err)
	}

	// Requests it cannot answer get errors that say why.
	for _, tc := range []struct {
		req  Request
		want string
	}{
		{Request{Type: TypeManifest, Seq: 8}, "no snapshot at checkpoint 8"},
		{Request{Type: TypeTable, Seq: 16, Offset: 1 << 20}, "beyond its"},
		{Request{Type: TypeChunk, Seq: 8}, "snapshot 8"},
		{Request{Type: TypeBlocks, Seq: 21, To: 30}, "no block 21 here"},
		{Request{Type: 99, Seq: 16}, "unknown state request"},
	} {
		if _, err := Serve(src, &tc.req, 64); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("request %+v: err = %v, want one saying %q", tc.req, err, tc.want)
		}
	}
}
