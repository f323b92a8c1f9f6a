package node

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/node/config"
)

// While a backup is cut off, the others' status stops counting it as reachable; once the partition heals
// it catches up with no client traffic at all (the others' status reports, or its own probes, tell it it is
// behind; pbft's TestStatusCatchUpOnIdleNetwork shows the status path alone).
func TestIdleCatchUpAndReachability(t *testing.T) {
	c := newCluster(t, 4, func(cfg *config.Config) { cfg.P2P.PingInterval = 100 * time.Millisecond })
	c.startAll()
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	waitFor(t, 60*time.Second, "every replica reachable from every other", func() bool {
		for _, n := range c.nodes {
			if len(n.Status().Reachable) != 3 {
				return false
			}
		}
		return true
	})
	for _, p := range c.nodes[0].Status().Peers {
		if !p.Reachable || p.LastPongMs < 0 || p.RTTMs <= 0 {
			t.Fatalf("peer %+v", p)
		}
	}
	b := c.nodes[3]
	if err := b.Partition([]int{0, 1, 2}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "replica 3 unreachable for the others", func() bool {
		for _, i := range []int{0, 1, 2} {
			if slices.Contains(c.nodes[i].Status().Reachable, 3) {
				return false
			}
		}
		return true
	})
	before := c.nodes[0].Status().Height
	c.loadUntil(ctx, 0, before+40, "b")
	target := c.nodes[0].Status().Height
	if b.Status().Height >= target {
		t.Fatalf("the cut-off replica is at %d, the others at %d", b.Status().Height, target)
	}
	b.Heal()
	start := time.Now()
	waitFor(t, 60*time.Second, "replica 3 caught up with no traffic", func() bool { return b.Status().Height >= target })
	t.Logf("replica 3 caught up %d blocks %s after the heal, without client traffic", target-before, time.Since(start))
	c.checkAgreement()
}
