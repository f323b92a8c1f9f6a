package node

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/node/app"
	"github.com/p2pbft/p2pbft/node/config"
)

// An application that keeps its state in memory starts from nothing after every restart: the node replays
// the stored chain into it (checking every digest against its block) before the engine restarts, and the
// replica rejoins. A replica that copied a snapshot cannot do that (it lacks the blocks below it) and says
// so when it starts.
func TestVolatileApplication(t *testing.T) {
	c := newCluster(t, 4, func(cfg *config.Config) { cfg.StateSync.BlockSyncMax = 0 })
	c.newApp = func(int) app.Application { return newMemCounters() }
	c.opFor = func(key, _ string) []byte { return []byte("inc " + key[len(key)-1:]) } // few counters, many updates
	c.startAll()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if err := c.load(ctx, "a", 4, 5); err != nil {
		t.Fatal(err)
	}
	// Replica 2 restarts with an empty application: it replays the chain.
	c.stop(2)
	c.start(2)
	c.waitConnected(30 * time.Second)
	if err := c.load(ctx, "b", 4, 5); err != nil {
		t.Fatal(err)
	}
	c.waitHeight(c.nodes[0].Status().Height, 30*time.Second)
	c.checkAgreement()

	// Replica 3 falls far behind and copies a snapshot of the counters.
	c.stop(3)
	behind := c.nodes[0].Status().Height
	c.loadUntil(ctx, 0, behind+3*c.cfgs[0].Consensus.Window+5, "c")
	n3 := c.start(3)
	c.waitConnected(30 * time.Second)
	c.waitHeight(c.nodes[0].Status().Height, 60*time.Second)
	waitFor(t, 60*time.Second, "a snapshot state transfer", func() bool {
		return counterValue(n3.metrics.syncs.WithLabelValues("snapshot", "ok")) >= 1
	})
	if err := c.load(ctx, "d", 2, 3); err != nil {
		t.Fatal(err)
	}
	c.waitHeight(c.nodes[0].Status().Height, 30*time.Second)
	c.checkAgreement()
	c.stop(3)
	_, err := New(c.cfgs[3], Options{App: newMemCounters(), Logger: testLogger(t)})
	if err == nil || !strings.Contains(err.Error(), "keep its state durably") {
		t.Fatalf("restarting a volatile application past a snapshot: %v", err)
	}
}
