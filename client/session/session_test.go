package session

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/identity"
)

func seedKey(t testing.TB, name string) *identity.Key {
	t.Helper()
	seed := make([]byte, 32)
	copy(seed, name)
	k, err := identity.NewKeyFromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestTimestampsIncreaseAcrossSessionsAndRestarts(t *testing.T) {
	base := seedKey(t, "ts")
	now := time.Unix(100, 0)
	p, err := newPool(base, 3, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	s := p.Session(1)
	a, b := s.NextTimestamp(), s.NextTimestamp()
	if a != uint64(now.UnixNano()) || b != a+1 {
		t.Fatalf("timestamps %d, %d with a frozen clock", a, b)
	}
	now = now.Add(-time.Hour) // the clock steps back: still increasing within the process
	if c := s.NextTimestamp(); c != b+1 {
		t.Fatalf("after a clock step back: %d, want %d", c, b+1)
	}
	now = time.Unix(200, 0)
	if c := s.NextTimestamp(); c != uint64(now.UnixNano()) {
		t.Fatalf("after the clock moved on: %d", c)
	}
	// A "restarted" pool (fresh state) derives the same keys and starts from the clock.
	p2, _ := newPool(base, 3, func() time.Time { return now.Add(time.Second) })
	for i := range 3 {
		if !p.Session(i).Key().Equal(p2.Session(i).Key()) {
			t.Fatalf("session %d key differs across pools", i)
		}
		if p2.Session(i).NextTimestamp() <= uint64(now.UnixNano()) {
			t.Fatal("restarted session reused a timestamp")
		}
	}
	if !p.Session(0).Key().Equal(base) {
		t.Fatal("session 0 is not the client key")
	}
	seen := map[string]bool{}
	for i := range 3 {
		id := p.Session(i).Key().PeerID().String()
		if seen[id] {
			t.Fatalf("session %d repeats a key", i)
		}
		seen[id] = true
	}
	other, _ := DeriveKey(seedKey(t, "ts-other"), 1)
	if other.Equal(p.Session(1).Key()) {
		t.Fatal("two client keys derived the same session key")
	}
}

// The session pool hands a session to one holder at a time.
func TestPoolExclusive(t *testing.T) {
	p, err := NewPool(seedKey(t, "excl"), 4)
	if err != nil {
		t.Fatal(err)
	}
	var held [4]atomic.Int32
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				s := p.Acquire(nil)
				if held[s.Index()].Add(1) != 1 {
					t.Errorf("session %d held twice", s.Index())
				}
				held[s.Index()].Add(-1)
				p.Release(s)
			}
		}()
	}
	wg.Wait()
	if p.Busy() != 0 {
		t.Fatalf("%d sessions still busy", p.Busy())
	}
	done := make(chan struct{})
	for range 4 {
		if p.Acquire(done) == nil {
			t.Fatal("free session not handed out")
		}
	}
	close(done)
	if p.Acquire(done) != nil || p.TryAcquire() != nil {
		t.Fatal("a fifth session handed out of four")
	}
}
