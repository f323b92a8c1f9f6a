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
	c := newClient(t, net, 8)

	// 1,000 requests.
	start := time.Now()
	l1, _ := StartLoad(ctxFor(t, 3*time.Minute), LoadConfig{Client: c, Workers: 8, MaxOps: 1000, Unique: true, Prefix: "first"})
	l1.Wait()
	acked1, failed, lastErr := l1.Counts()
	if acked1 != 1000 || failed != 0 {
		t.Fatalf("first load: %d acknowledged, %d failed (last: %v)", acked1, failed, lastErr)
	}
	t.Logf("1,000 requests committed in %s (8 concurrent clients, client under the test's build flags)", time.Since(start).Round(time.Millisecond))
	h := waitAgree(t, net, all, 30*time.Second)
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
	t.Logf("primary node%d killed (kill -9) in view %d: first commit in a later view after %s (request timeout 1s)", primary, view, vc.Round(time.Millisecond))
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

	h = waitAgree(t, net, all, 60*time.Second)
	acks := append(l1.Acked(), l2.Acked()...)
	for _, i := range all {
		checkAcked(t, net, i, acks)
	}
	// Replica 1 never copied a snapshot, so it holds the whole chain.
	checkChainOnce(t, net, backups[0], acks)
	t.Logf("all 4 replicas agree at height %d and hold all %d acknowledged writes", h, len(acks))
}
