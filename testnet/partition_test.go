package testnet

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestE2EPartition: Isolate cuts a replica off from the others through the replicas' admin API (their
// connection gaters), the others keep committing, and HealAll reconnects everyone; a testnet without the
// admin API says how to get it.
func TestE2EPartition(t *testing.T) {
	needE2E(t)
	dir := t.TempDir()
	net, err := Create(Config{Dir: dir, N: 4, ChainID: "e2e-partition", AdminAPI: true, Configure: testConfig})
	if err != nil {
		t.Fatal(err)
	}
	net.SetProcessOptions(ProcessOptions{Binary: p2pbftBinary, StopTimeout: 20 * time.Second, ReadyTimeout: 60 * time.Second})
	t.Cleanup(func() {
		if err := net.Close(); err != nil {
			t.Errorf("stop the replicas: %v", err)
		}
		if t.Failed() {
			for i := range net.N() {
				t.Logf("--- node%d ---\n%s", i, net.LogTail(i, 30))
			}
		}
	})
	if err := net.Start(ctxFor(t, 90*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := net.WaitConnected(ctxFor(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t, 2*time.Minute)
	if err := net.Do(ctx, ActionPartition, "node3"); err != nil {
		t.Fatal(err)
	}
	err = WaitFor(ctx, "node3 cut off", 50*time.Millisecond, func() error {
		for i, st := range net.Statuses(ctx) {
			if st == nil {
				return fmt.Errorf("node%d does not answer", i)
			}
			var peers []int
			for _, p := range st.Peers {
				peers = append(peers, p.Replica)
			}
			if i == 3 && (len(peers) != 0 || !slices.Equal(st.Partitioned, []int{0, 1, 2})) {
				return fmt.Errorf("node3: peers %v, partitioned %v", peers, st.Partitioned)
			}
			if i != 3 && (slices.Contains(peers, 3) || len(peers) != 2 || !slices.Equal(st.Partitioned, []int{3})) {
				return fmt.Errorf("node%d: peers %v, partitioned %v", i, peers, st.Partitioned)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The three others are a quorum: they commit.
	if err := net.Put(ctxFor(t, 60*time.Second), 0, "during-partition", "1"); err != nil {
		t.Fatal(err)
	}
	if err := net.Do(ctx, ActionHeal, "all"); err != nil {
		t.Fatal(err)
	}
	if err := net.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	for i, st := range net.Statuses(ctx) {
		if st == nil || len(st.Partitioned) != 0 {
			t.Fatalf("node%d after heal: %+v", i, st)
		}
	}
	h := waitAgree(t, net, []int{0, 1, 2, 3}, 90*time.Second)
	t.Logf("node3 isolated and healed; all 4 agree at height %d", h)

	// Without the admin API the error says how to turn it on.
	plain, err := Create(Config{Dir: t.TempDir(), N: 1, ChainID: "e2e-plain", Configure: testConfig})
	if err != nil {
		t.Fatal(err)
	}
	plain.SetProcessOptions(ProcessOptions{Binary: p2pbftBinary, ReadyTimeout: 60 * time.Second})
	t.Cleanup(func() { plain.Close() })
	if err := plain.Start(ctxFor(t, 60*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := plain.HealAll(ctx); err == nil || !strings.Contains(err.Error(), "--experiment-admin-api") {
		t.Fatalf("heal without the admin API: %v", err)
	}
}
