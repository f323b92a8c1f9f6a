package node

import (
	"context"
	"flag"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/node/config"
	"github.com/p2pbft/p2pbft/wire"
)

var (
	catchupRequests = flag.Int("catchup.requests", 0,
		"TestCatchUpLarge: requests committed while one replica is down (0 skips the test; the issue's figure is 100000)")
	catchupMethod = flag.String("catchup.method", "snapshot", "TestCatchUpLarge: snapshot or blocks")
)

// TestCatchUpLarge measures the catch-up rate: replica 3 is down while the others commit
// -catchup.requests requests, then restarts and catches up (by snapshot, or by replaying blocks with
// -catchup.method=blocks). It reports the time from restart to holding the others' height, and the rate in
// requests and blocks per second. Run it with, for example,
//
//	go test ./node/ -run TestCatchUpLarge -catchup.requests 100000 -v -timeout 30m
func TestCatchUpLarge(t *testing.T) {
	if *catchupRequests <= 0 {
		t.Skip("set -catchup.requests to run")
	}
	c := newCluster(t, 4, func(cfg *config.Config) {
		cfg.Consensus = config.Default().Consensus
		if *catchupMethod == "blocks" {
			cfg.StateSync.BlockSyncMax = 1 << 40
		}
	})
	c.startAll()
	c.stop(3)
	const clients = 1024
	total := *catchupRequests
	per := (total + clients - 1) / clients
	reqs := make([][]*wire.Envelope, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := c.client(fmt.Sprint(i))
			for j := range per {
				reqs[i] = append(reqs[i], cl.request(putOp(t, fmt.Sprintf("key-%d-%d", i, j), "value-0123456789-0123456789")))
			}
		}()
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	live := c.nodes[:3]
	start := time.Now()
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, req := range reqs[i] {
				if err := submitQuorum(ctx, live, req, 3); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	load := time.Since(start)
	h := c.nodes[0].Status().Height
	t.Logf("committed %d requests in %d blocks in %s (%.0f requests/s) with replica 3 down",
		clients*per, h, load.Round(time.Millisecond), float64(clients*per)/load.Seconds())

	start = time.Now()
	n3 := c.start(3)
	c.waitHeight(h, 30*time.Minute)
	took := time.Since(start)
	st := n3.Status()
	t.Logf("replica 3 caught up %d blocks (%d requests) by %s in %s: %.0f requests/s, %.0f blocks/s; fetched %.1f MB snapshot data and %v blocks",
		h, clients*per, *catchupMethod, took.Round(time.Millisecond), float64(clients*per)/took.Seconds(),
		float64(h)/took.Seconds(), counterValue(n3.metrics.syncBytes)/1e6, counterValue(n3.metrics.syncBlocks))
	if st.AppDigest != c.nodes[0].Status().AppDigest && st.Height == c.nodes[0].Status().Height {
		t.Fatal("app digests differ after catching up")
	}
	c.checkAgreement()
}
