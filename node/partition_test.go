package node

import (
	"context"
	"slices"
	"testing"
	"time"
)

// The primary is partitioned away from the other replicas (on loopback, by its connection gater): the
// others change view and keep committing; after the partition heals, the old primary reconnects, learns
// the new view and catches up, and all four agree.
func TestPartitionPrimaryAndHeal(t *testing.T) {
	c := newCluster(t, 4, nil)
	c.startAll()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if err := c.load(ctx, "a", 3, 4); err != nil {
		t.Fatal(err)
	}
	p := c.nodes[0]
	if err := p.Partition([]int{1, 2, 3, 0}); err != nil {
		t.Fatal(err)
	}
	if err := p.Partition([]int{4}); err == nil {
		t.Fatal("partition from replica 4 of 4 accepted")
	}
	if got := p.Status().Partitioned; !slices.Equal(got, []int{1, 2, 3}) {
		t.Fatalf("partitioned from %v", got)
	}
	waitFor(t, 30*time.Second, "the primary isolated", func() bool {
		if len(p.host.ConnectedReplicas()) != 0 {
			return false
		}
		for _, i := range []int{1, 2, 3} {
			if slices.Contains(c.nodes[i].host.ConnectedReplicas(), 0) {
				return false
			}
		}
		return true
	})
	others := []int{1, 2, 3}
	// Clients still send to all four; the three on the other side replace the primary and answer.
	if err := c.load(ctx, "b", 3, 4); err != nil {
		t.Fatal(err)
	}
	for _, i := range others {
		if st := c.nodes[i].Status(); st.View == 0 || st.Primary == 0 {
			t.Fatalf("replica %d after the partition: view %d, primary %d", i, st.View, st.Primary)
		}
	}
	// Alone, the old primary can at most finish executing what was committed before the partition (it
	// proves nothing by itself: checkChainsAgree below compares its blocks with the others').
	if h, top := p.Status().Height, c.nodes[1].Status().Height; h > top {
		t.Fatalf("the isolated primary is at height %d, above the others' %d", h, top)
	}
	p.Heal()
	if got := p.Status().Partitioned; len(got) != 0 {
		t.Fatalf("still partitioned from %v after Heal", got)
	}
	c.waitConnected(30 * time.Second)
	if err := c.load(ctx, "c", 3, 4); err != nil {
		t.Fatal(err)
	}
	h := c.nodes[1].Status().Height
	c.waitHeight(h, 60*time.Second)
	view := c.nodes[1].Status().View
	waitFor(t, 30*time.Second, "the old primary in the new view", func() bool {
		st := p.Status()
		return st.View == view && st.Mode == "normal"
	})
	c.checkChainsAgree([]int{0, 1, 2, 3})
	c.checkAgreement()
}
