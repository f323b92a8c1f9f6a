package trace

import (
	"sync"
	"testing"
	"time"
)

func TestBoundedRing(t *testing.T) {
	r := New(Options{Slots: 8, ViewChanges: 2})
	for seq := uint64(1); seq <= 100; seq++ {
		r.PrePrepareReceived(0, seq, 0, 10, int64(seq))
		r.Prepare(0, seq, 1, int64(seq))
	}
	got := r.Slots(0, 0)
	if len(got) != 8 {
		t.Fatalf("%d records, want 8 (the ring's size)", len(got))
	}
	for i, s := range got {
		if want := uint64(93 + i); s.Seq != want {
			t.Fatalf("record %d is seq %d, want %d (the last 8, in order)", i, s.Seq, want)
		}
	}
	if len(r.bySlot) != 8 || len(r.latest) != 8 {
		t.Fatalf("index holds %d/%d entries, want 8", len(r.bySlot), len(r.latest))
	}
	for v := uint64(1); v <= 5; v++ {
		r.ViewChangeSent(v, int64(v))
	}
	vcs := r.ViewChanges()
	if len(vcs) != 2 || vcs[0].View != 4 || vcs[1].View != 5 {
		t.Fatalf("view changes %+v, want views 4 and 5", vcs)
	}
}

func TestOrderingAndQuery(t *testing.T) {
	r := New(Options{Slots: 16})
	// Created out of order, and one sequence number in two views.
	for _, seq := range []uint64{5, 3, 4, 1, 2} {
		r.PrePrepareSent(0, seq, 100, 1)
	}
	r.PrePrepareReceived(1, 3, 1, 100, 2)
	got := r.Slots(0, 0)
	want := []key{{0, 1}, {0, 2}, {0, 3}, {1, 3}, {0, 4}, {0, 5}}
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d", len(got), len(want))
	}
	for i, s := range got {
		if (key{s.View, s.Seq}) != want[i] {
			t.Fatalf("record %d is (%d, %d), want %v", i, s.View, s.Seq, want[i])
		}
	}
	if s := r.Slots(3, 2); len(s) != 2 || s[0].Seq != 3 || s[0].View != 0 || s[1].View != 1 {
		t.Fatalf("from 3, limit 2: %+v", s)
	}
	if s := r.Slots(0, 2); len(s) != 2 || s[0].Seq != 4 || s[1].Seq != 5 {
		t.Fatalf("latest 2: %+v", s)
	}
	if s := r.Slots(6, 0); len(s) != 0 {
		t.Fatalf("from 6: %+v", s)
	}
}

func TestSlotLifeAndPhases(t *testing.T) {
	got := map[Phase]time.Duration{}
	var mu sync.Mutex
	r := New(Options{Observe: func(p Phase, d time.Duration) {
		mu.Lock()
		got[p] = d
		mu.Unlock()
	}})
	r.PrePrepareReceived(2, 7, 2, 512, 100)
	r.Prepare(2, 7, 1, 110)
	r.Prepare(2, 7, 1, 115) // a retransmission: ignored
	r.Prepare(2, 7, 3, 120)
	r.Prepared(2, 7, 130)
	r.Commit(2, 7, 0, 140)
	r.Commit(2, 7, 3, 145)
	r.Commit(2, 7, 1, 150)
	r.Committed(2, 7, 160)
	r.Executed(2, 7, 42, 200)
	r.Durable(2, 7, 300)
	r.Replied(7, 40, 310)
	r.Replied(7, 2, 320)
	r.Replied(99, 1, 330) // unknown: no record is made
	s := r.Slots(0, 0)
	if len(s) != 1 {
		t.Fatalf("%d records, want 1", len(s))
	}
	x := s[0]
	if x.PrePrepareReceived != 100 || x.PrePrepareFrom != 2 || x.Bytes != 512 || len(x.Prepares) != 2 ||
		x.Prepares[0] != (Vote{1, 110}) || len(x.Commits) != 3 || x.Prepared != 130 || x.Committed != 160 ||
		x.Executed != 200 || x.Requests != 42 || x.Durable != 300 || x.Replied != 310 || x.Replies != 42 {
		t.Fatalf("record %+v", x)
	}
	want := map[Phase]time.Duration{PrePrepareToPrepared: 30, PreparedToCommitted: 30, CommittedToExecuted: 40,
		ExecutedToDurable: 100, DurableToReplied: 10}
	for p, d := range want {
		if got[p] != d {
			t.Errorf("phase %s: %v, want %v", p, got[p], d)
		}
	}

	r.ViewChangeSent(3, 1000)
	r.ViewChangeReceived(3, 1, 1010)
	r.ViewChangeReceived(3, 2, 1020)
	r.NewViewReceived(3, 1100)
	r.Committed(3, 8, 1300)
	r.Committed(3, 9, 1400)
	vcs := r.ViewChanges()
	if len(vcs) != 1 || vcs[0].Sent != 1000 || len(vcs[0].Received) != 2 || vcs[0].NewViewReceived != 1100 ||
		vcs[0].FirstCommit != 1300 || vcs[0].FirstCommitSeq != 8 {
		t.Fatalf("view changes %+v", vcs)
	}
	if got[ViewChangeToNewView] != 100 || got[NewViewToFirstCommit] != 200 {
		t.Fatalf("view change phases %v", got)
	}
}

func TestNilRecorder(t *testing.T) {
	var r *Recorder
	r.PrePrepareSent(0, 1, 1, 1)
	r.Prepare(0, 1, 1, 1)
	r.Committed(0, 1, 1)
	r.Replied(1, 1, 1)
	r.ViewChangeSent(1, 1)
	if r.Slots(0, 0) != nil || r.ViewChanges() != nil {
		t.Fatal("a nil recorder returned records")
	}
}

// TestConcurrent runs writers and readers together (go test -race) and checks the ring stays bounded.
func TestConcurrent(t *testing.T) {
	r := New(Options{Slots: 32, ViewChanges: 4, Observe: func(Phase, time.Duration) {}})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := uint64(1); seq <= 2000; seq++ {
				at := time.Now().UnixNano()
				r.Prepare(0, seq, w, at)
				r.Commit(0, seq, w, at)
				r.Prepared(0, seq, at)
				r.Committed(0, seq, at)
				r.Durable(0, seq, at)
				r.Replied(seq, 1, at)
				r.ViewChangeReceived(seq/100, w, at)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 200 {
			if s := r.Slots(0, 0); len(s) > 32 {
				t.Errorf("%d records in a ring of 32", len(s))
			}
			r.ViewChanges()
		}
	}()
	wg.Wait()
	s := r.Slots(0, 0)
	if len(s) != 32 || s[len(s)-1].Seq != 2000 {
		t.Fatalf("%d records, last %d", len(s), s[len(s)-1].Seq)
	}
	for _, x := range s {
		if len(x.Prepares) > 4 || len(x.Commits) > 4 {
			t.Fatalf("slot %d holds %d prepares and %d commits from 4 replicas", x.Seq, len(x.Prepares), len(x.Commits))
		}
	}
}

func BenchmarkSlot(b *testing.B) {
	r := New(Options{Observe: func(Phase, time.Duration) {}})
	b.ReportAllocs()
	for i := range b.N {
		seq := uint64(i)
		r.PrePrepareReceived(0, seq, 0, 1000, 1)
		for from := 1; from < 4; from++ {
			r.Prepare(0, seq, from, 2)
			r.Commit(0, seq, from, 3)
		}
		r.Prepared(0, seq, 4)
		r.Committed(0, seq, 5)
		r.Executed(0, seq, 100, 6)
		r.Durable(0, seq, 7)
		r.Replied(seq, 100, 8)
	}
}
