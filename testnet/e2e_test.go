package testnet

import (
	"slices"
	"testing"
	"time"
)

// TestE2ECrashes: 4 replicas as real processes. Clients commit 1,000 requests and every replica holds the
// same chain and state digest; the primary is killed (kill -9) and commits resume in the next view; it is
// restarted and catches up; then every replica is killed with kill -9 under load and restarted, and no
// acknowledged write is lost or executed twice.
func TestE2ECrashes(t *testing.T) {
	needE2E(t)
	net := newNet(t, 4)
	all := []int{0, 1, 2, 3}
	if err := net.Start(ctxFor(t, 90*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := net.WaitConnected(ctxFor(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, net, 8, 4)

	// 1,000 requests.
	start := time.Now()
	l1, _ := StartLoad(ctxFor(t, 3*time.Minute), LoadConfig{Client: c, Workers: 8, MaxOps: 1000, Unique: true, Prefix: "first"})
	l1.Wait()
	acked1, failed, lastErr := l1.Counts()
	if acked1 != 1000 || failed != 0 {
		t.Fatalf("first load: %d acknowledged, %d failed (last: %v)", acked1, failed, lastErr)
	}
	t.Logf("1,000 requests committed in %s (8 concurrent clients, client under the test's build flags)", time.Since(start).Round(time.Millisecond))
	h := waitAgree(t, net, all, 90*time.Second)
	t.Logf("all 4 replicas agree at height %d", h)

	// Kill the primary under load: commits resume in the next view.
	st, err := net.Status(ctxFor(t, 10*time.Second), 1)
	if err != nil {
		t.Fatal(err)
	}
	primary, view := st.Primary, st.View
	l2, _ := StartLoad(ctxFor(t, 5*time.Minute), LoadConfig{Client: c, Workers: 4, Unique: true, Prefix: "second", OpTimeout: 2 * time.Minute})
	defer l2.Stop()
	waitMoreAcks(t, l2, 20, 30*time.Second, "load before the crash")
	if err := net.Kill(primary); err != nil {
		t.Fatal(err)
	}
	backups := slices.DeleteFunc(slices.Clone(all), func(i int) bool { return i == primary })
	vc := firstCommitInView(t, net, backups, view+1, 60*time.Second)
	t.Logf("primary node%d killed (kill -9) in view %d: first commit in a later view after %s (request timeout %s)", primary, view, vc.Round(time.Millisecond), testRequestTimeout)
	waitMoreAcks(t, l2, 100, 60*time.Second, "commits in the new view")

	// Restart it: it catches up while the load goes on.
	st, err = net.Status(ctxFor(t, 10*time.Second), backups[0])
	if err != nil {
		t.Fatal(err)
	}
	target := st.Height
	restartAt := time.Now()
	if err := net.StartNode(ctxFor(t, 60*time.Second), primary); err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t, 90*time.Second)
	if err := WaitFor(ctx, "the restarted replica to catch up", 50*time.Millisecond, func() error {
		s, err := net.Status(ctx, primary)
		if err != nil {
			return err
		}
		if s.Height < target {
			return errf("at height %d of %d (mode %s)", s.Height, target, s.Mode)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("node%d restarted and reached height %d (the others' height at its restart) in %s", primary, target, time.Since(restartAt).Round(time.Millisecond))

	// Kill -9 every replica under load, restart them: no acknowledged write is lost.
	waitMoreAcks(t, l2, 50, 60*time.Second, "load before killing everyone")
	for _, i := range all {
		if err := net.Kill(i); err != nil {
			t.Fatal(err)
		}
	}
	before, _, _ := l2.Counts()
	if err := net.Start(ctxFor(t, 90*time.Second)); err != nil {
		t.Fatal(err)
	}
	waitMoreAcks(t, l2, 100, 90*time.Second, "commits after restarting every replica")
	l2.Stop()
	acked2, failed2, lastErr2 := l2.Counts()
	if failed2 != 0 {
		t.Fatalf("second load: %d requests failed (last: %v)", failed2, lastErr2)
	}
	t.Logf("second load: %d acknowledged (%d before every replica was killed), 0 failed", acked2, before)

	h = waitAgree(t, net, all, 90*time.Second)
	acks := append(l1.Acked(), l2.Acked()...)
	for _, i := range all {
		checkAcked(t, net, i, acks)
	}
	// Replica 1 never copied a snapshot, so it holds the whole chain.
	checkChainOnce(t, net, backups[0], acks)
	t.Logf("all 4 replicas agree at height %d and hold all %d acknowledged writes", h, len(acks))
}

// TestE2EFaultyPrimary: the same checks with one faulty replica, the primary of view 0: silent (its
// process is stopped with SIGSTOP: connections stay open, nothing answers) or Byzantine (an impostor with
// its key and address that sends garbage and answers clients with wrong results). With n = 4 the three
// correct replicas are exactly the quorum: they change view, commit 1,000 requests with the same chain and
// digest, then are all killed with kill -9 under load and restarted, and no acknowledged write is lost.
// (Killing a second replica would exceed f = 1.)
func TestE2EFaultyPrimary(t *testing.T) {
	needE2E(t)
	for _, mode := range []string{"silent", "garbage"} {
		t.Run(mode, func(t *testing.T) {
			net := newNet(t, 4)
			correct := []int{1, 2, 3}
			var byz *byzantine
			switch mode {
			case "silent":
				if err := net.Start(ctxFor(t, 90*time.Second)); err != nil {
					t.Fatal(err)
				}
				if err := net.WaitConnected(ctxFor(t, 30*time.Second)); err != nil {
					t.Fatal(err)
				}
				if err := net.Pause(0); err != nil {
					t.Fatal(err)
				}
			case "garbage":
				byz = startByzantine(t, net, 0, 1)
				for _, i := range correct {
					if err := net.StartNode(ctxFor(t, 90*time.Second), i); err != nil {
						t.Fatal(err)
					}
				}
			}
			// Through a backup's HTTP API alone (no client broadcasts): the API relays the transaction to
			// the other replicas when its replica does not execute it, so the view changes.
			start := time.Now()
			if err := net.Put(ctxFor(t, 60*time.Second), 1, "via-http", "1"); err != nil {
				t.Fatalf("HTTP put with a %s primary: %v", mode, err)
			}
			t.Logf("a transaction through node1's HTTP API committed in %s with a %s primary", time.Since(start).Round(time.Millisecond), mode)

			c := newClient(t, net, 8, 3)
			start = time.Now()
			l1, _ := StartLoad(ctxFor(t, 3*time.Minute), LoadConfig{Client: c, Workers: 8, MaxOps: 1000, Unique: true, Prefix: "first", OpTimeout: 2 * time.Minute})
			l1.Wait()
			acked1, failed, lastErr := l1.Counts()
			if acked1 != 1000 || failed != 0 {
				t.Fatalf("first load: %d acknowledged, %d failed (last: %v)", acked1, failed, lastErr)
			}
			t.Logf("1,000 requests committed in %s with a %s primary", time.Since(start).Round(time.Millisecond), mode)
			st, err := net.Status(ctxFor(t, 10*time.Second), 1)
			if err != nil {
				t.Fatal(err)
			}
			if st.View == 0 {
				t.Fatalf("still in view 0 with a %s primary", mode)
			}
			h := waitAgree(t, net, correct, 90*time.Second)
			t.Logf("the correct replicas agree at height %d in view %d", h, st.View)

			l2, _ := StartLoad(ctxFor(t, 5*time.Minute), LoadConfig{Client: c, Workers: 4, Unique: true, Prefix: "second", OpTimeout: 2 * time.Minute})
			defer l2.Stop()
			waitMoreAcks(t, l2, 50, 60*time.Second, "load before the crash")
			for _, i := range correct {
				if err := net.Kill(i); err != nil {
					t.Fatal(err)
				}
			}
			for _, i := range correct {
				if err := net.StartNode(ctxFor(t, 90*time.Second), i); err != nil {
					t.Fatal(err)
				}
			}
			waitMoreAcks(t, l2, 100, 2*time.Minute, "commits after restarting the correct replicas")
			l2.Stop()
			acked2, failed2, lastErr2 := l2.Counts()
			if failed2 != 0 {
				t.Fatalf("second load: %d failed (last: %v)", failed2, lastErr2)
			}
			h = waitAgree(t, net, correct, 90*time.Second)
			acks := append(l1.Acked(), l2.Acked()...)
			for _, i := range correct {
				checkAcked(t, net, i, acks)
			}
			checkChainOnce(t, net, 1, acks)
			t.Logf("after kill -9 of the correct replicas: they agree at height %d and hold all %d acknowledged writes (%d in the second load)", h, len(acks), acked2)

			switch mode {
			case "silent":
				// Woken up, the silent replica catches up and agrees.
				if err := net.Resume(0); err != nil {
					t.Fatal(err)
				}
				h = waitAgree(t, net, []int{0, 1, 2, 3}, 2*time.Minute)
				t.Logf("the resumed replica caught up: all 4 agree at height %d", h)
			case "garbage":
				if byz.replies.Load() == 0 || byz.sent.Load() == 0 {
					t.Fatalf("the Byzantine replica answered %d requests and sent %d garbage messages", byz.replies.Load(), byz.sent.Load())
				}
				t.Logf("the Byzantine replica sent %d garbage messages and %d wrong replies; none was accepted", byz.sent.Load(), byz.replies.Load())
				for _, i := range correct {
					if !net.Running(i) {
						t.Fatalf("node%d is not running", i)
					}
				}
			}
		})
	}
}
