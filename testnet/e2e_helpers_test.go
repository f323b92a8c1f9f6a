package testnet

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/client"
	"github.com/p2pbft/p2pbft/node/api/apitypes"
	"github.com/p2pbft/p2pbft/node/app/kv"
	"github.com/p2pbft/p2pbft/node/config"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// binary is the p2pbft executable the end-to-end tests run, built once by TestMain (without -race, so the
// replica processes run at full speed while the test process itself may be under -race).
var p2pbftBinary string

func TestMain(m *testing.M) {
	os.Exit(RunWithBinary(moduleDir(), func(bin string) { p2pbftBinary = bin }, m.Run))
}

func needE2E(t *testing.T) {
	t.Helper()
	if p2pbftBinary == "" {
		t.Skip("end-to-end tests disabled (-short or P2PBFT_E2E=0)")
	}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testConfig sets the view-change timers: short enough that faults heal quickly, long enough that a
// loaded CI machine (requests slowed to hundreds of milliseconds) does not make a replica suspect a correct
// primary alone. (A replica that does stays in view-change mode until the others change view too, as PBFT
// prescribes, and would then not agree with them.)
const testRequestTimeout = 3 * time.Second

func testConfig(_ int, c *config.Config) {
	c.Consensus.RequestTimeout = testRequestTimeout
	c.Consensus.ViewChangeTimeout = 2 * time.Second
	c.Log.Level = "info"
}

// newNet creates a testnet in a temporary folder (kept with P2PBFT_E2E_KEEP=1) and stops its replicas
// when the test ends; on failure it prints the end of every replica's log.
func newNet(t *testing.T, n int) *Network {
	t.Helper()
	dir := t.TempDir()
	if os.Getenv("P2PBFT_E2E_KEEP") != "" {
		var err error
		if dir, err = os.MkdirTemp("", "p2pbft-e2e-"); err != nil {
			t.Fatal(err)
		}
		t.Logf("testnet folder: %s", dir)
	}
	net, err := Create(Config{Dir: dir, N: n, ChainID: "e2e", Configure: testConfig})
	if err != nil {
		t.Fatal(err)
	}
	net.SetProcessOptions(ProcessOptions{Binary: p2pbftBinary, StopTimeout: 20 * time.Second, ReadyTimeout: 60 * time.Second})
	t.Cleanup(func() {
		if err := net.Close(); err != nil {
			t.Errorf("stop the replicas: %v", err)
		}
		if t.Failed() {
			for i := range net.N() {
				t.Logf("--- %s (last lines of %s) ---\n%s", net.Nodes()[i].Name, net.LogPath(i), net.LogTail(i, 40))
			}
		}
	})
	return net
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// newClient returns a client with the given sessions, once it is connected to want replicas.
func newClient(t *testing.T, net *Network, sessions, want int) *client.Client {
	t.Helper()
	c, err := net.NewClient(nil, quietLog(), func(cfg *client.Config) { cfg.Sessions = sessions })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.WaitConnected(ctxFor(t, 30*time.Second), want); err != nil {
		t.Fatal(err)
	}
	return c
}

// waitAgree waits until the given replicas report the same height and application digest and hold the
// same block at that height (block hashes link the whole chain), and returns the height.
func waitAgree(t *testing.T, net *Network, replicas []int, d time.Duration) uint64 {
	t.Helper()
	ctx := ctxFor(t, d)
	var height uint64
	err := WaitFor(ctx, fmt.Sprintf("replicas %v to agree", replicas), 100*time.Millisecond, func() error {
		var digest string
		var hash string
		for k, i := range replicas {
			st, err := net.Status(ctx, i)
			if err != nil {
				return err
			}
			if st.Mode != "normal" {
				return fmt.Errorf("%s is in mode %s", net.Nodes()[i].Name, st.Mode)
			}
			b, err := net.BlockJSON(ctx, i, st.Height)
			if err != nil {
				return err
			}
			if k == 0 {
				height, digest, hash = st.Height, st.AppDigest, b.Hash
				continue
			}
			if st.Height != height || st.AppDigest != digest || b.Hash != hash {
				return fmt.Errorf("%s at height %d digest %s hash %s; %s at %d digest %s hash %s",
					net.Nodes()[replicas[0]].Name, height, short(digest), short(hash), net.Nodes()[i].Name, st.Height, short(st.AppDigest), short(b.Hash))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return height
}

func short(s string) string { return s[:min(12, len(s))] }

// BlockJSON reads block h of replica i as the API renders it.
func (n *Network) BlockJSON(ctx context.Context, i int, h uint64) (*apitypes.Block, error) {
	b, _, err := n.get(ctx, i, fmt.Sprintf("/v1/blocks/%d?raw=false", h))
	if err != nil {
		return nil, err
	}
	var out apitypes.Block
	return &out, json.Unmarshal(b, &out)
}

// checkAcked checks that every acknowledged write is in replica i's committed state.
func checkAcked(t *testing.T, net *Network, i int, acks []Ack) {
	t.Helper()
	ctx := ctxFor(t, 2*time.Minute)
	var mu sync.Mutex
	var missing []string
	work := make(chan Ack)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for a := range work {
				b, code, err := net.get(ctx, i, "/v1/kv/"+url.PathEscape(a.Key))
				var kr apitypes.KVResponse
				if err == nil {
					err = json.Unmarshal(b, &kr)
				}
				if err != nil || code != 200 || kr.Value != a.Value {
					mu.Lock()
					missing = append(missing, fmt.Sprintf("%s=%s (got %q, %d, %v)", a.Key, a.Value, kr.Value, code, err))
					mu.Unlock()
				}
			}
		}()
	}
	for _, a := range acks {
		work <- a
	}
	close(work)
	wg.Wait()
	if len(missing) > 0 {
		t.Fatalf("%s lost %d of %d acknowledged writes, e.g. %s", net.Nodes()[i].Name, len(missing), len(acks), strings.Join(missing[:min(5, len(missing))], "; "))
	}
}

// checkChainOnce reads replica i's whole chain and checks that every acknowledged write executed exactly
// once. A block holds the batch as ordered; a request may be ordered twice (a retransmission after a
// crash), and replicas then execute it only the first time: by the client table's rule, a request executes
// iff its timestamp is above the last one executed for its client. The check applies that rule to the
// chain: every acknowledged write must be executed by exactly one entry.
func checkChainOnce(t *testing.T, net *Network, i int, acks []Ack) {
	t.Helper()
	ctx := ctxFor(t, 2*time.Minute)
	st, err := net.Status(ctx, i)
	if err != nil {
		t.Fatal(err)
	}
	once := pbft.ExactlyOnce{}                  // the client table's filter
	executed := make(map[string]int, len(acks)) // key -> executed writes
	requests, duplicates := 0, 0
	for h := uint64(1); h <= st.Height; h++ {
		b, err := net.Block(ctx, i, h)
		if err != nil {
			t.Fatalf("%s block %d: %v", net.Nodes()[i].Name, h, err)
		}
		for _, rb := range b.Batch {
			e, err := wire.DecodeEnvelope(rb)
			if err != nil {
				t.Fatalf("block %d: %v", h, err)
			}
			r, err := pbft.DecodeRequest(e.Payload)
			if err != nil {
				t.Fatalf("block %d: %v", h, err)
			}
			requests++
			if !once.Admit(e.Author, r.Timestamp) {
				duplicates++ // ordered again, not executed again
				continue
			}
			if op, err := kv.DecodeOp(r.Op); err == nil && op.Type == kv.OpPut {
				executed[string(op.Key)]++
			}
		}
	}
	for _, a := range acks {
		if executed[a.Key] != 1 {
			t.Fatalf("acknowledged write %s executed %d times by %s's chain", a.Key, executed[a.Key], net.Nodes()[i].Name)
		}
	}
	t.Logf("%s's chain: %d blocks, %d requests ordered (%d of them repeats, not executed), each of the %d acknowledged writes executed exactly once",
		net.Nodes()[i].Name, st.Height, requests, duplicates, len(acks))
}

// waitMoreAcks waits until the load has k more acknowledged requests than now.
func waitMoreAcks(t *testing.T, l *Load, k int, d time.Duration, what string) time.Duration {
	t.Helper()
	start := time.Now()
	base, _, _ := l.Counts()
	err := WaitFor(ctxFor(t, d), what, 20*time.Millisecond, func() error {
		n, failed, last := l.Counts()
		if n >= base+k {
			return nil
		}
		return fmt.Errorf("%d of %d more acknowledged, %d failed (last: %v)", n-base, k, failed, last)
	})
	if err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}

// firstCommitInView waits until a block committed in a view >= view appears at one of the replicas, and
// returns how long that took.
func firstCommitInView(t *testing.T, net *Network, replicas []int, view uint64, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	ctx := ctxFor(t, d)
	err := WaitFor(ctx, fmt.Sprintf("a commit in view %d", view), 20*time.Millisecond, func() error {
		for _, i := range replicas {
			blk, err := net.latest(ctx, i)
			if err == nil && blk.View >= view {
				return nil
			}
		}
		return fmt.Errorf("no block in view %d yet", view)
	})
	if err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}

func (n *Network) latest(ctx context.Context, i int) (*apitypes.Block, error) {
	b, _, err := n.get(ctx, i, "/v1/blocks/latest?raw=false")
	if err != nil {
		return nil, err
	}
	var out apitypes.Block
	return &out, json.Unmarshal(b, &out)
}

func errf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// moduleDir is the module's root (tests run in the package folder).
func moduleDir() string {
	wd, _ := os.Getwd()
	return filepath.Dir(wd)
}
