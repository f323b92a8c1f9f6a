package p2p

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/multiformats/go-multiaddr"

	"github.com/p2pbft/p2pbft/wire"
)

// TestReplayDeliveredOnce: a valid message replayed with the same bytes, by gossip or over a direct
// stream, is delivered once within the seen window. A deliberate rebroadcast (Resend bumped) is new bytes
// and is delivered again: the engine recognises it by Envelope.ID().
func TestReplayDeliveredOnce(t *testing.T) {
	keys := testKeys(t, "replay", 4)
	g := testGenesis(t, "replay-chain", keys)
	hosts := startChain(t, keys[:3], g, nil)
	in := collect(t, hosts[1])
	waitMesh(t, hosts, 20*time.Second)

	e := seal(t, keys[0], g.ChainID(), wire.KindCommit, "once")
	if err := hosts[0].Multicast(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "first delivery", func() bool { return in.count(payloadIs("once")) == 1 })

	// The replayer joins afterwards (its own gossipsub would otherwise refuse to re-publish a message it
	// has seen).
	r := newRogue(t, keys[3], g.ChainID(), peerIDs(hosts))
	r.connect(t, hosts[1])
	waitFor(t, 20*time.Second, "rogue on host 1's topic", func() bool {
		return len(hosts[1].MeshPeers()) == 3 && len(r.topic.ListPeers()) >= 1
	})

	// The replayer sends the same bytes by gossip and over a direct stream.
	dups := hosts[1].Stats().Duplicates
	r.publish(t, marshal(t, e))
	waitFor(t, 10*time.Second, "gossip replay seen as a duplicate", func() bool { return hosts[1].Stats().Duplicates > dups })
	s, err := r.h.NewStream(context.Background(), hosts[1].ID(), hosts[1].msgProto)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dups = hosts[1].Stats().Duplicates
	if err := writeFrame(s, marshal(t, e)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "direct replay seen as a duplicate", func() bool { return hosts[1].Stats().Duplicates > dups })

	// A rebroadcast with Resend bumped is delivered again, with the same ID.
	again := *e
	again.Resend = 1
	r.publish(t, marshal(t, &again))
	waitFor(t, 10*time.Second, "rebroadcast delivered", func() bool { return in.count(payloadIs("once")) == 2 })
	ds := in.all()
	if ds[len(ds)-1].Envelope.ID() != e.ID() || ds[len(ds)-1].Envelope.Resend != 1 {
		t.Fatal("the rebroadcast does not carry the original ID")
	}
	if n := in.count(payloadIs("once")); n != 2 {
		t.Fatalf("delivered %d times, want 2 (original and rebroadcast)", n)
	}
}

// TestRestartOnAnotherPort kills a replica and restarts it with the same key on a new port, knowing only
// one bootstrap address. The others must reconnect and the mesh must deliver again; the test reports
// how long that took.
func TestRestartOnAnotherPort(t *testing.T) {
	keys := testKeys(t, "restart", 4)
	g := testGenesis(t, "restart-chain", keys)
	hosts := startChain(t, keys, g, nil)
	waitMesh(t, hosts, 20*time.Second)
	old := hosts[3].Addrs()

	hosts[3].Close()
	hosts[3] = nil
	waitFor(t, 10*time.Second, "the others see replica 3 go", func() bool {
		for _, h := range hosts[:3] {
			for _, i := range h.ConnectedReplicas() {
				if i == 3 {
					return false
				}
			}
		}
		return true
	})
	waitEvent(t, hosts[0], 3, false)

	start := time.Now()
	cfg := baseConfig(t, keys[3], g)
	cfg.Bootstrap = []string{hosts[0].Addrs()[0].String()}
	hosts[3] = startHost(t, cfg)
	if sameAddrs(old, hosts[3].Addrs()) {
		t.Fatal("restarted on the same address")
	}
	waitMesh(t, hosts, 30*time.Second)
	meshAfter := time.Since(start)
	delivered := restartDelivers(t, hosts, keys[0], keys[3], g.ChainID(), "after-restart")
	t.Logf("restart on a new port: mesh healed %s and multicast delivered both ways %s after the restart began",
		meshAfter.Round(time.Millisecond), (meshAfter + delivered).Round(time.Millisecond))
	waitEvent(t, hosts[1], 3, true)
}

// waitEvent reads h's events until replica goes up or down, or a deadline passes.
func waitEvent(t *testing.T, h *Host, replica int, up bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev := <-h.Events():
			if ev.Replica == replica && ev.Up == up {
				return
			}
		case <-deadline:
			t.Fatalf("no event for replica %d up=%v", replica, up)
		}
	}
}

// TestRestartSamePortRedial restarts a replica on its old address without any bootstrap: only the
// others' redial loops can bring it back.
func TestRestartSamePortRedial(t *testing.T) {
	keys := testKeys(t, "redial", 3)
	g := testGenesis(t, "redial-chain", keys)
	hosts := startChain(t, keys, g, nil)
	waitMesh(t, hosts, 20*time.Second)
	var tcp string
	for _, a := range hosts[2].LibP2P().Addrs() {
		if _, err := a.ValueForProtocol(multiaddr.P_TCP); err == nil {
			tcp = a.String()
		}
	}
	hosts[2].Close()
	hosts[2] = nil
	waitFor(t, 10*time.Second, "replica 2 gone", func() bool {
		return len(hosts[0].ConnectedReplicas()) == 1 && len(hosts[1].ConnectedReplicas()) == 1
	})
	start := time.Now()
	cfg := baseConfig(t, keys[2], g)
	cfg.ListenAddrs = []string{tcp}
	var err error
	waitFor(t, 10*time.Second, "port free again", func() bool {
		h, e := New(cfg)
		if e != nil {
			err = e
			return !strings.Contains(e.Error(), "address already in use")
		}
		hosts[2] = h
		t.Cleanup(func() { h.Close() })
		return true
	})
	if hosts[2] == nil {
		t.Fatal(err)
	}
	waitMesh(t, hosts, 30*time.Second)
	t.Logf("restart on the same port, no bootstrap: redial healed the mesh in %s (RedialMax %s)",
		time.Since(start).Round(time.Millisecond), cfg.RedialMax)
	restartDelivers(t, hosts, keys[0], keys[2], g.ChainID(), "redialled")
}

// restartDelivers multicasts from an old host and from the restarted one and waits for every delivery.
func restartDelivers(t *testing.T, hosts []*Host, oldKey, newKey wire.Signer, chain, tag string) time.Duration {
	t.Helper()
	start := time.Now()
	n := len(hosts)
	inboxes := make([]*inbox, n)
	for i, h := range hosts {
		inboxes[i] = collect(t, h)
	}
	oldIdx, newIdx := 0, n-1
	for _, c := range []struct {
		i int
		k wire.Signer
	}{{oldIdx, oldKey}, {newIdx, newKey}} {
		if err := hosts[c.i].Multicast(context.Background(), seal(t, c.k, chain, wire.KindPrepare, fmt.Sprintf("%s-%d", tag, c.i))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, "multicasts after the restart delivered", func() bool {
		for i, in := range inboxes {
			for _, from := range []int{oldIdx, newIdx} {
				if from != i && in.count(payloadIs(fmt.Sprintf("%s-%d", tag, from))) != 1 {
					return false
				}
			}
		}
		return true
	})
	return time.Since(start)
}

func sameAddrs(a, b []multiaddr.Multiaddr) bool {
	for _, x := range a {
		for _, y := range b {
			if x.Equal(y) {
				return true
			}
		}
	}
	return false
}
