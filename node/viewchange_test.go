package node

import (
	"context"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/node/config"
)

// The primary stops: the others change view and commits resume under the new primary; the old primary
// restarts, learns the new view and catches up. The normal case goes over direct streams here, so that
// the test also sees view changes take gossip (p2p.gossip_kinds) whatever p2p.broadcast says.
func TestPrimaryStopViewChange(t *testing.T) {
	c := newCluster(t, 4, func(cfg *config.Config) { cfg.P2P.Broadcast = config.BroadcastDirect })
	c.startAll()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := c.load(ctx, "a", 3, 5); err != nil {
		t.Fatal(err)
	}
	if p := c.nodes[1].Status().Primary; p != 0 {
		t.Fatalf("primary is %d, want 0", p)
	}
	c.stop(0)
	start := time.Now()
	if err := c.load(ctx, "b", 3, 5); err != nil {
		t.Fatal(err)
	}
	t.Logf("first commits after stopping the primary took %s", time.Since(start))
	for _, n := range c.running() {
		st := n.Status()
		if st.View == 0 || st.Primary == 0 || st.Mode != "normal" {
			t.Fatalf("replica %d after the view change: %+v", n.self, st)
		}
		// View changes travel by gossip (p2p.gossip_kinds), the normal case by direct streams.
		if counterValue(n.metrics.sends.WithLabelValues("view-change", "gossip", "ok")) < 1 ||
			counterValue(n.metrics.sends.WithLabelValues("commit", "direct", "ok")) < 1 {
			t.Fatalf("replica %d: view changes not gossiped or commits not sent directly", n.self)
		}
	}
	c.start(0)
	c.waitConnected(30 * time.Second)
	if err := c.load(ctx, "c", 3, 5); err != nil {
		t.Fatal(err)
	}
	h := c.nodes[1].Status().Height
	c.waitHeight(h, 30*time.Second)
	if st := c.nodes[0].Status(); st.View != c.nodes[1].Status().View || st.Mode != "normal" {
		t.Fatalf("restarted replica 0: %+v", st)
	}
	c.checkAgreement()
}
