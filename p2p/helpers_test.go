package p2p

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/goleak"

	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/wire"
)

// TestMain fails the package if any goroutine outlives the tests: every goroutine a Host or its libraries
// start must end with Close. No exceptions are configured.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLogger logs to the test log when P2P_TEST_LOG is set, and nowhere otherwise.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("P2P_TEST_LOG") == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// testKeys returns n deterministic keys; name distinguishes key sets.
func testKeys(t testing.TB, name string, n int) []*identity.Key {
	t.Helper()
	keys := make([]*identity.Key, n)
	for i := range keys {
		seed := make([]byte, 32)
		copy(seed, fmt.Sprintf("%s-%d", name, i))
		k, err := identity.NewKeyFromSeed(seed)
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k
	}
	return keys
}

func testGenesis(t testing.TB, chain string, keys []*identity.Key) *identity.Genesis {
	t.Helper()
	reps := make([]identity.Replica, len(keys))
	for i, k := range keys {
		reps[i] = identity.Replica{Name: fmt.Sprintf("r%d", i), PeerID: k.PeerID()}
	}
	g, err := identity.NewGenesis(chain, reps)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

var localTCP = []string{"/ip4/127.0.0.1/tcp/0"}
var localTCPQUIC = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}

func baseConfig(t testing.TB, key *identity.Key, g *identity.Genesis) Config {
	return Config{
		Key:         key,
		Genesis:     g,
		Logger:      testLogger(t).With("host", key.PeerID().ShortString()),
		ListenAddrs: localTCP,
		RedialMin:   50 * time.Millisecond,
		RedialMax:   time.Second,
		// Tests want fast healing; production defaults are slower.
		PeerExchangeInterval: 500 * time.Millisecond,
	}
}

func startHost(t testing.TB, cfg Config) *Host {
	t.Helper()
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// startChain starts hosts for the given keys; host i bootstraps from host i-1 only, so finding the others
// takes peer exchange.
func startChain(t testing.TB, keys []*identity.Key, g *identity.Genesis, mutate func(i int, c *Config)) []*Host {
	t.Helper()
	hosts := make([]*Host, len(keys))
	for i, k := range keys {
		cfg := baseConfig(t, k, g)
		if i > 0 {
			cfg.Bootstrap = []string{hosts[i-1].Addrs()[0].String()}
		}
		if mutate != nil {
			mutate(i, &cfg)
		}
		hosts[i] = startHost(t, cfg)
	}
	return hosts
}

// waitFor polls cond until it holds or the deadline passes. Polling is on a short tick, never a fixed
// sleep that the test relies on.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

func waitMesh(t testing.TB, hosts []*Host, d time.Duration) time.Duration {
	t.Helper()
	return waitFor(t, d, "full replica mesh", func() bool {
		for _, h := range hosts {
			if h == nil {
				continue
			}
			if len(h.MeshPeers()) < countLive(hosts)-1 || len(h.ConnectedReplicas()) < countLive(hosts)-1 {
				return false
			}
		}
		return true
	})
}

func countLive(hosts []*Host) int {
	n := 0
	for _, h := range hosts {
		if h != nil {
			n++
		}
	}
	return n
}

func seal(t testing.TB, k wire.Signer, chain string, kind wire.Kind, payload string) *wire.Envelope {
	t.Helper()
	e, err := wire.Seal(k, chain, kind, []byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// collector drains a host's deliveries in the background so tests can wait on what arrived.
type inbox struct {
	mu  sync.Mutex
	got []Delivery
}

func collect(t testing.TB, h *Host) *inbox {
	in := &inbox{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case d := <-h.Deliveries():
				in.mu.Lock()
				in.got = append(in.got, d)
				in.mu.Unlock()
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return in
}

func (in *inbox) count(pred func(Delivery) bool) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	n := 0
	for _, d := range in.got {
		if pred == nil || pred(d) {
			n++
		}
	}
	return n
}

func (in *inbox) all() []Delivery {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]Delivery(nil), in.got...)
}

func payloadIs(p string) func(Delivery) bool {
	return func(d Delivery) bool { return string(d.Envelope.Payload) == p }
}

func peerIDs(hosts []*Host) []peer.ID {
	out := make([]peer.ID, len(hosts))
	for i, h := range hosts {
		out[i] = h.ID()
	}
	return out
}
