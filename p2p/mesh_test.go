package p2p

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/multiformats/go-multiaddr"

	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/wire"
)

func TestFullMesh4(t *testing.T) {
	testFullMesh(t, 4, localTCPQUIC, nil)
}

// TestFullMesh4DirectMode runs the same with replicas as gossipsub direct peers instead of a mesh.
func TestFullMesh4DirectMode(t *testing.T) {
	testFullMesh(t, 4, localTCP, func(c *Config) { c.Dissemination.Mode = ModeDirect })
}

// TestFullMesh4PubsubSigning runs the same with gossipsub's own signatures on (StrictSign).
func TestFullMesh4PubsubSigning(t *testing.T) {
	testFullMesh(t, 4, localTCP, func(c *Config) { c.Dissemination.PubsubSigning = true })
}

func TestFullMesh10(t *testing.T) {
	if testing.Short() {
		t.Skip("10 hosts: skipped in -short mode")
	}
	testFullMesh(t, 10, localTCP, nil)
}

// testFullMesh starts n hosts that each know one bootstrap address (the previous host), waits until every
// host is connected to and shares the topic with every other, and multicasts from every host.
func testFullMesh(t *testing.T, n int, listen []string, mutate func(*Config)) {
	keys := testKeys(t, "mesh", n)
	g := testGenesis(t, "mesh-chain", keys)
	hosts := startChain(t, keys, g, func(i int, c *Config) {
		c.ListenAddrs = listen
		if mutate != nil {
			mutate(c)
		}
	})
	inboxes := make([]*inbox, n)
	for i, h := range hosts {
		inboxes[i] = collect(t, h)
	}
	// Generous: on a loaded machine (the suite's packages in parallel under -race on 2 cores) handshakes
	// time out and the redial backoff grows toward its 30 s cap before every pair of 10 hosts is joined; a
	// quiet machine takes a few seconds.
	took := waitMesh(t, hosts, 3*time.Minute)
	t.Logf("%d hosts with one bootstrap each: full mesh after %s", n, took.Round(time.Millisecond))

	for i, h := range hosts {
		e := seal(t, keys[i], g.ChainID(), wire.KindPrepare, fmt.Sprintf("from-%d", i))
		if err := h.Multicast(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, time.Minute, "every multicast at every other host", func() bool {
		for _, in := range inboxes {
			if in.count(nil) < n-1 {
				return false
			}
		}
		return true
	})
	for i, in := range inboxes {
		seen := map[int]bool{}
		for _, d := range in.all() {
			if d.Via != ViaGossip || d.Author < 0 || seen[d.Author] {
				t.Fatalf("host %d: unexpected delivery %+v", i, d)
			}
			if string(d.Envelope.Payload) != fmt.Sprintf("from-%d", d.Author) {
				t.Fatalf("host %d: payload %q attributed to replica %d", i, d.Envelope.Payload, d.Author)
			}
			seen[d.Author] = true
		}
		if seen[i] || len(seen) != n-1 {
			t.Fatalf("host %d got multicasts from %v", i, seen)
		}
	}
	// Every host reports the others as up, and the connection manager protects them.
	for i, h := range hosts {
		if got := len(h.ConnectedReplicas()); got != n-1 {
			t.Fatalf("host %d: %d connected replicas, want %d", i, got, n-1)
		}
		for j, o := range hosts {
			if i != j && !h.cm.IsProtected(o.ID(), "p2pbft-replica") {
				t.Fatalf("host %d: replica %d not protected by the connection manager", i, j)
			}
		}
	}
}

// TestSeedNodeBootstrap: replicas that know only a seed node (a host outside the genesis, which does not
// gossip) find each other through its peer exchange.
func TestSeedNodeBootstrap(t *testing.T) {
	keys := testKeys(t, "seeded", 4)
	seedKey := testKeys(t, "seed", 1)[0]
	g := testGenesis(t, "seeded-chain", keys)
	seed := startHost(t, baseConfig(t, seedKey, g))
	hosts := make([]*Host, len(keys))
	for i, k := range keys {
		cfg := baseConfig(t, k, g)
		cfg.Bootstrap = []string{seed.Addrs()[0].String()}
		hosts[i] = startHost(t, cfg)
	}
	took := waitMesh(t, hosts, 30*time.Second)
	t.Logf("4 replicas bootstrapped from a seed node: full mesh after %s", took.Round(time.Millisecond))
}

// TestQUICOnly: hosts that listen and bootstrap on QUIC only.
func TestQUICOnly(t *testing.T) {
	keys := testKeys(t, "quic", 3)
	g := testGenesis(t, "quic-chain", keys)
	hosts := startChain(t, keys, g, func(i int, c *Config) {
		c.ListenAddrs = []string{"/ip4/127.0.0.1/udp/0/quic-v1"}
	})
	for _, h := range hosts {
		for _, a := range h.Addrs() {
			if !strings.Contains(a.String(), "/quic-v1/") {
				t.Fatalf("non-QUIC address %s", a)
			}
		}
	}
	waitMesh(t, hosts, 20*time.Second)
	in := collect(t, hosts[2])
	if err := hosts[0].Multicast(context.Background(), seal(t, keys[0], g.ChainID(), wire.KindPrepare, "over quic")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "delivery over QUIC", func() bool { return in.count(payloadIs("over quic")) == 1 })
}

// TestGenesisAddresses: with addresses in the genesis, no bootstrap list is needed.
func TestGenesisAddresses(t *testing.T) {
	keys := testKeys(t, "gaddr", 3)
	reps := make([]identity.Replica, len(keys))
	for i, k := range keys {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		reps[i] = identity.Replica{PeerID: k.PeerID(),
			Addrs: []multiaddr.Multiaddr{multiaddr.StringCast(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port))}}
	}
	g, err := identity.NewGenesis("gaddr-chain", reps)
	if err != nil {
		t.Fatal(err)
	}
	hosts := make([]*Host, len(keys))
	for i, k := range keys {
		cfg := baseConfig(t, k, g)
		cfg.ListenAddrs = []string{reps[i].Addrs[0].String()}
		hosts[i] = startHost(t, cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, h := range hosts {
		if err := h.WaitForReplicas(ctx, 2); err != nil {
			t.Fatal(err)
		}
	}
}

// A client that reaches a bootstrap replica before that replica knows the others still finds them all
// soon: while replicas are missing it asks again after a growing but short wait (default at most 2 s; it
// used to be a fixed 10 s, which made a first `p2pbft tx` on a network just started time out).
func TestClientFindsReplicasFromAnEarlyBootstrap(t *testing.T) {
	keys := testKeys(t, "early", 4)
	g := testGenesis(t, "early-chain", keys)
	defaults := func(c *Config) { c.PeerExchangeInterval = 0 } // baseConfig shortens it for other tests
	c0 := baseConfig(t, keys[0], g)
	defaults(&c0)
	r0 := startHost(t, c0)
	ccfg := baseConfig(t, testKeys(t, "early-client", 1)[0], g)
	ccfg.Bootstrap = []string{r0.Addrs()[0].String()}
	defaults(&ccfg)
	client := startHost(t, ccfg)
	waitFor(t, 10*time.Second, "client connected to the bootstrap", func() bool { return len(client.ConnectedReplicas()) == 1 })
	// Only now do the other replicas start, each knowing replica 0 alone.
	for _, k := range keys[1:] {
		c := baseConfig(t, k, g)
		c.Bootstrap = []string{r0.Addrs()[0].String()}
		defaults(&c)
		startHost(t, c)
	}
	waitFor(t, 30*time.Second, "replica 0 connected to the others", func() bool { return len(r0.ConnectedReplicas()) == 3 })
	// Within less than the old fixed interval (10 s), however loaded the machine.
	d := waitFor(t, 9*time.Second, "client connected to every replica", func() bool { return len(client.ConnectedReplicas()) == 4 })
	t.Logf("the client found the replicas that started after it %s after replica 0 knew them", d)
}
