package p2p

import (
	"testing"
	"time"
)

// Replicas ping each other: each sees the other reachable with a round-trip time; cut off (the gater
// closes the connection), the other is no longer reachable, and is again once the cut heals.
func TestReplicaHealth(t *testing.T) {
	keys := testKeys(t, "health", 2)
	g := testGenesis(t, "health-chain", keys)
	hosts := startChain(t, keys, g, func(_ int, c *Config) { c.PingInterval = 50 * time.Millisecond })
	reachable := func(h *Host, want bool) func() bool {
		return func() bool {
			hs := h.Health()
			return len(hs) == 1 && hs[0].Reachable(time.Now(), 300*time.Millisecond) == want
		}
	}
	waitFor(t, 30*time.Second, "replica 1 reachable from 0", reachable(hosts[0], true))
	waitFor(t, 30*time.Second, "replica 0 reachable from 1", reachable(hosts[1], true))
	if hs := hosts[0].Health(); hs[0].Replica != 1 || hs[0].RTT <= 0 || hosts[0].MaxRTT(time.Second) <= 0 {
		t.Fatalf("health %+v, max rtt %s", hs, hosts[0].MaxRTT(time.Second))
	}
	hosts[0].BlockPeers(hosts[1].ID())
	waitFor(t, 30*time.Second, "replica 1 unreachable from 0", reachable(hosts[0], false))
	hosts[0].UnblockPeers()
	waitFor(t, 30*time.Second, "replica 1 reachable again", reachable(hosts[0], true))
}
