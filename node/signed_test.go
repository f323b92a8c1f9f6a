package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/node/signstate"
	"github.com/p2pbft/p2pbft/pbft"
)

// A replica whose data folder is wiped (or restored from an old backup) restarts knowing, from its signed
// state file, how far it voted: it does not vote there again, catches up from the others, never
// contradicts what it sent in its earlier life, and votes again past the mark.
func TestWipedStoreDoesNotEquivocate(t *testing.T) {
	c := newCluster(t, 4, nil)
	w := newWatcher(t, c.keys[3].PublicKey())
	c.hooks[3] = w.hooks()
	c.startAll()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.load(ctx, "a", 4, 10); err != nil {
		t.Fatal(err)
	}

	// A clean restart with the store intact does not arm the guard.
	c.stop(3)
	c.start(3)
	if m := c.nodes[3].signedMark; m != (pbft.Mark{}) {
		t.Fatalf("a clean restart armed the guard at %+v", m)
	}
	c.waitConnected(30 * time.Second)
	if err := c.load(ctx, "b", 4, 5); err != nil {
		t.Fatal(err)
	}

	c.stop(3)
	st, ok, err := signstate.Read(filepath.Join(c.homes[3], signstate.FileName))
	if err != nil || !ok || st.Seq == 0 || st.Height == 0 {
		t.Fatalf("signed state after a clean stop: %+v, %v, %v", st, ok, err)
	}
	if err := os.RemoveAll(c.cfgs[3].Path(c.cfgs[3].Store.Dir)); err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	w.executed = map[uint64]int{} // a wiped replica executes the chain again, from a snapshot or block 1
	w.mu.Unlock()
	n := c.start(3)
	if n.signedMark != (pbft.Mark{View: st.View, Seq: st.Seq}) {
		t.Fatalf("after the wipe the guard is %+v, want the signed mark %+v", n.signedMark, st.Mark)
	}
	c.waitConnected(30 * time.Second)
	if err := c.load(ctx, "c", 4, 10); err != nil {
		t.Fatal(err)
	}
	c.waitCaughtUp(60 * time.Second)
	c.checkAgreement()
	w.check()
	// It votes again once past the mark.
	waitFor(t, 60*time.Second, "replica 3 votes above its signed mark", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.load(ctx, "d", 1, 1); err != nil {
			t.Logf("load: %v", err)
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		for k := range w.said {
			var view, seq uint64
			var kind string
			if parts := strings.Split(k, "/"); len(parts) == 3 {
				kind = parts[0]
				if _, err := fmt.Sscan(parts[1], &view); err != nil {
					continue
				}
				if _, err := fmt.Sscan(parts[2], &seq); err != nil {
					continue
				}
			}
			if (kind == "p" || kind == "c") && seq > st.Seq {
				return true
			}
		}
		return false
	})
	w.check()
}
