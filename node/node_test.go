package node

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/node/app/kv"
	"github.com/p2pbft/p2pbft/node/config"
)

// Four replicas commit requests from concurrent clients; every client gets f+1 matching replies, and the
// replicas end with the same chain and the same application digest.
func TestClusterCommits(t *testing.T) {
	c := newCluster(t, 4, func(cfg *config.Config) { cfg.StateSync.KeepSnapshots = 2 })
	c.startAll()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const clients, each = 8, 15
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := c.client(fmt.Sprint(i))
			for j := range each {
				r, err := cl.do(ctx, putOp(t, fmt.Sprintf("k%d-%d", i, j), "v"))
				if err != nil {
					errs <- fmt.Errorf("client %d request %d: %w", i, j, err)
					return
				}
				res, err := kv.DecodeResult(r.Result)
				if err != nil || res.Status != kv.StatusOK {
					errs <- fmt.Errorf("client %d request %d: result %+v, %v", i, j, res, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	h := c.nodes[0].Status().Height
	c.waitHeight(h, 20*time.Second)
	c.checkAgreement()
	// A replica may be in the middle of a view change (on a loaded machine a request timer can expire);
	// wait for every replica to be in the same view, in normal mode.
	waitFor(t, 30*time.Second, "every replica in normal mode in one view", func() bool {
		v := c.nodes[0].Status().View
		for _, n := range c.running() {
			if st := n.Status(); st.Mode != "normal" || st.View != v {
				return false
			}
		}
		return true
	})
	var digest string
	for _, n := range c.running() {
		st := n.Status()
		if digest == "" {
			digest = st.AppDigest
		}
		if st.Height == h && st.AppDigest != digest {
			t.Fatalf("replica %d: app digest %s at %d, replica 0 has %s", n.self, st.AppDigest, h, digest)
		}
		if len(st.Peers) != 3 {
			t.Fatalf("replica %d: status %+v", n.self, st)
		}
	}
	// Metrics: the node's and the p2p host's families are on the registry.
	mfs, err := c.nodes[1].Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, mf := range mfs {
		have[mf.GetName()] = true
	}
	for _, name := range []string{"p2pbft_chain_blocks_total", "p2pbft_requests_executed_total", "p2pbft_chain_block_requests",
		"p2pbft_requests_commit_latency_seconds", "p2pbft_consensus_view_changes_total", "p2pbft_consensus_messages_total",
		"p2pbft_consensus_sends_total", "p2pbft_chain_height", "p2pbft_consensus_view", "p2pbft_consensus_mode", "p2pbft_consensus_stable_checkpoint",
		"p2pbft_signatures_verified_total", "p2pbft_p2p_messages_total", "p2pbft_p2p_connected_replicas"} {
		if !have[name] {
			t.Errorf("metric %s missing", name)
		}
	}
	if js, err := json.Marshal(c.nodes[1].Status()); err != nil || !strings.Contains(string(js), `"mode":"normal"`) {
		t.Fatalf("status JSON %s, %v", js, err)
	}
	// Old application snapshots are released as checkpoints become stable: a replica keeps the last
	// keep_snapshots (2 here) stable ones and any above them.
	for _, n := range c.running() {
		snaps, err := n.app.Snapshots()
		if err != nil {
			t.Fatal(err)
		}
		if len(snaps) == 0 || len(snaps) > 2+int(c.cfgs[0].Consensus.Window/c.cfgs[0].Consensus.CheckpointInterval) {
			t.Fatalf("replica %d keeps %d application snapshots: %v", n.self, len(snaps), snaps)
		}
	}
	// Every value is readable at every replica without consensus.
	for _, n := range c.running() {
		q, _ := kv.EncodeOp(kv.Get([]byte("k3-7")))
		ans, _, err := n.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		res, err := kv.DecodeResult(ans)
		if err != nil || !res.Exists || string(res.Value) != "v" {
			t.Fatalf("replica %d: query answered %+v, %v", n.self, res, err)
		}
	}
}
