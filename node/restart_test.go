package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// watcher records what one replica executes and signs, across restarts, and can make it crash.
type watcher struct {
	t         testing.TB
	self      []byte
	mu        sync.Mutex
	executed  map[uint64]int
	said      map[string]wire.Digest // statement key -> what was said
	conflicts []string
	crash     atomic.Bool // crash at the next Ready with messages, after persisting it
	crashed   atomic.Bool
}

var errCrash = errors.New("simulated crash between persist and send")

func newWatcher(t testing.TB, self []byte) *watcher {
	return &watcher{t: t, self: self, executed: map[uint64]int{}, said: map[string]wire.Digest{}}
}

func (w *watcher) hooks() *hooks {
	return &hooks{
		afterPersist: func(rd *pbft.Ready) error {
			if len(rd.Messages) > 0 && w.crash.Load() && w.crashed.CompareAndSwap(false, true) {
				return errCrash
			}
			return nil
		},
		sent: w.onSent,
		executed: func(seq uint64) {
			w.mu.Lock()
			w.executed[seq]++
			w.mu.Unlock()
		},
	}
}

// onSent records the statement a message makes; the same statement with another content is a contradiction.
func (w *watcher) onSent(m pbft.Message) {
	e := m.Env
	if string(e.Author) != string(w.self) {
		return
	}
	var key string
	var what wire.Digest
	switch e.Kind {
	case wire.KindPrePrepare:
		p, err := pbft.DecodePrePrepare(e.Payload)
		if err != nil {
			return
		}
		key, what = fmt.Sprintf("pp/%d/%d", p.View, p.Seq), p.Digest
	case wire.KindPrepare:
		p, err := pbft.DecodePrepare(e.Payload)
		if err != nil {
			return
		}
		key, what = fmt.Sprintf("p/%d/%d", p.View, p.Seq), p.Digest
	case wire.KindCommit:
		p, err := pbft.DecodeCommit(e.Payload)
		if err != nil {
			return
		}
		key, what = fmt.Sprintf("c/%d/%d", p.View, p.Seq), p.Digest
	case wire.KindCheckpoint:
		p, err := pbft.DecodeCheckpoint(e.Payload)
		if err != nil {
			return
		}
		key, what = fmt.Sprintf("ck/%d", p.Seq), p.Digest
	case wire.KindViewChange:
		v, err := pbft.DecodeViewChange(e.Payload)
		if err != nil {
			return
		}
		key, what = fmt.Sprintf("vc/%d", v.View), e.ID()
	default:
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if old, ok := w.said[key]; ok && old != what {
		w.conflicts = append(w.conflicts, key)
	}
	w.said[key] = what
}

func (w *watcher) check() {
	w.t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.conflicts) > 0 {
		w.t.Fatalf("the replica contradicted itself: %v", w.conflicts)
	}
	for seq, k := range w.executed {
		if k > 1 {
			w.t.Fatalf("block %d executed %d times", seq, k)
		}
	}
}

// A replica that crashes between persisting a Ready and sending its messages, and one that is stopped
// cleanly, restart from their stores: they never execute a block twice, never sign a statement that
// contradicts one they sent before, and catch up with the others.
func TestRestartRejoinsWithoutReexecuting(t *testing.T) {
	c := newCluster(t, 4, nil)
	w := newWatcher(t, c.keys[3].PublicKey())
	w2 := newWatcher(t, c.keys[0].PublicKey())
	c.hooks[3], c.hooks[0] = w.hooks(), w2.hooks()
	c.startAll()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := c.load(ctx, "a", 4, 10); err != nil {
		t.Fatal(err)
	}

	// Replica 3 crashes after persisting its next Ready, before sending it.
	w.crash.Store(true)
	if err := c.load(ctx, "b", 4, 5); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-c.errs[3]:
		if !errors.Is(err, errCrash) {
			t.Fatalf("replica 3 stopped with %v, want the simulated crash", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("replica 3 did not crash")
	}
	c.nodes[3] = nil
	w.crash.Store(false)
	if err := c.load(ctx, "c", 4, 10); err != nil {
		t.Fatal(err)
	}
	// The store survived the crash: it holds every vote the replica signed, so the signed mark's guard
	// stays off (no false alarm after a crash).
	if n := c.start(3); n.signedMark != (pbft.Mark{}) {
		t.Fatalf("a restart after a crash with an intact store armed the guard at %+v", n.signedMark)
	}
	c.waitConnected(30 * time.Second)

	// The primary (replica 0) is stopped cleanly and restarted at once.
	c.stop(0)
	if n := c.start(0); n.signedMark != (pbft.Mark{}) {
		t.Fatalf("a clean restart armed the guard at %+v", n.signedMark)
	}
	c.waitConnected(30 * time.Second)
	if err := c.load(ctx, "d", 4, 10); err != nil {
		t.Fatal(err)
	}
	c.waitCaughtUp(30 * time.Second)
	c.checkAgreement()
	w.check()
	w2.check()
	if w.crashed.Load() == false {
		t.Fatal("the crash never happened")
	}
}
