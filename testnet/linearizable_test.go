package testnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/p2pbft/p2pbft/client"
	"github.com/p2pbft/p2pbft/internal/linearize"
	"github.com/p2pbft/p2pbft/node/api/apitypes"
)

// The linearizability test's knobs. The defaults are the short form that runs with the other end-to-end
// tests; P2PBFT_LIN_OPS raises the number of operations (the nemesis then repeats its faults until they are
// done, or until P2PBFT_LIN_TIME ends), P2PBFT_LIN_SEED replays an operation mix.
const (
	linWorkers      = 6                // concurrent clients (porcupine processes)
	linKeys         = 5                // keys in use at a time
	linKeyGen       = 1000             // operations per generation of keys (see linOp)
	linShortOps     = 200              // operations of the short form
	linOpTimeout    = 20 * time.Second // after this an operation is indeterminate
	linPhaseTimeout = 2 * time.Minute  // one nemesis step's wait for progress (a loaded machine)
)

// linConfig is the run's size, from the environment.
type linConfig struct {
	seed    uint64
	ops     int
	maxTime time.Duration
	long    bool
}

func linSettings(t *testing.T) linConfig {
	t.Helper()
	cfg := linConfig{seed: uint64(time.Now().UnixNano()), ops: linShortOps, maxTime: 3 * time.Minute}
	if s := os.Getenv("P2PBFT_LIN_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("P2PBFT_LIN_SEED=%q: %v", s, err)
		}
		cfg.seed = v
	}
	if s := os.Getenv("P2PBFT_LIN_OPS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			t.Fatalf("P2PBFT_LIN_OPS=%q: want a positive number of operations", s)
		}
		cfg.ops, cfg.long, cfg.maxTime = v, true, 30*time.Minute
	}
	if s := os.Getenv("P2PBFT_LIN_TIME"); s != "" {
		v, err := time.ParseDuration(s)
		if err != nil || v <= 0 {
			t.Fatalf("P2PBFT_LIN_TIME=%q: want a duration such as 5m", s)
		}
		cfg.maxTime = v
	}
	return cfg
}

// TestE2ELinearizable records the history of concurrent clients doing puts, gets, compare-and-sets and
// deletes on a few keys of a 4-replica testnet of real processes, while a nemesis kills the primary with
// kill -9 and restarts it, pauses a backup (SIGSTOP, SIGCONT), cuts the primary off from the others, and
// kills every replica with kill -9 and restarts them all; then it checks with porcupine that the history is
// linearizable. Operations whose outcome the client could not learn are indeterminate (see package
// linearize). On failure the seed and the path of porcupine's visualization are printed. Last, a control
// (linStaleReadControl) checks that the same recording and check reject a real stale read.
func TestE2ELinearizable(t *testing.T) {
	needE2E(t)
	cfg := linSettings(t)
	t.Logf("seed %d (P2PBFT_LIN_SEED=%d replays the operation mix), %d operations, at most %s", cfg.seed, cfg.seed, cfg.ops, cfg.maxTime)
	began := time.Now()

	net, err := Create(Config{Dir: t.TempDir(), N: 4, ChainID: "e2e-lin", AdminAPI: true, Configure: testConfig})
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
				t.Logf("--- node%d (last lines of %s) ---\n%s", i, net.LogPath(i), net.LogTail(i, 30))
			}
		}
	})
	if err := net.Start(ctxFor(t, 90*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := net.WaitConnected(ctxFor(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	// Two client hosts with three sessions each: six clients, each with one request in flight at a time.
	clients := []*client.Client{newClient(t, net, linWorkers/2, 4), newClient(t, net, linWorkers/2, 4)}

	rec := linearize.NewRecorder()
	var issued, acked atomic.Int64
	var stop atomic.Bool
	// The clients run until stopped; runCtx only bounds them should the nemesis's last round overrun.
	runCtx, cancelRun := context.WithTimeout(context.Background(), cfg.maxTime+10*time.Minute)
	var wg sync.WaitGroup
	for w := range linWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(cfg.seed, uint64(w)))
			seen := map[string]string{} // the last value this client saw per key, to aim its CASes
			id := w
			for n := 0; !stop.Load() && runCtx.Err() == nil; n++ {
				in := linOp(rng, w, n, int(issued.Add(1)-1), seen)
				// One operation in ten gives up early, so that faults leave indeterminate operations behind
				// (abandoned requests that may still execute later), which the history must account for.
				timeout := linOpTimeout
				if rng.IntN(10) == 0 {
					timeout = time.Duration(500+rng.IntN(1500)) * time.Millisecond
				}
				ctx, cancel := context.WithTimeout(runCtx, timeout)
				out, outcome, _ := rec.Run(ctx, clients[w%len(clients)], id, in)
				cancel()
				switch outcome {
				case linearize.OK:
					acked.Add(1)
					linSaw(seen, in, out)
				case linearize.Unknown:
					// As in Jepsen, a client whose operation is indeterminate is replaced by a new one: the
					// old operation may still be in flight, and one porcupine client runs one at a time.
					id += linWorkers
				}
			}
		}()
	}
	stopWorkers := func() {
		stop.Store(true)
		wg.Wait() // every operation in flight returns or becomes indeterminate within linOpTimeout
		cancelRun()
	}
	defer stopWorkers() // on t.Fatal in the nemesis too

	// progress waits until k more operations were acknowledged: the nemesis's only synchronization.
	progress := func(k int64, what string) {
		t.Helper()
		base := acked.Load()
		err := WaitFor(ctxFor(t, linPhaseTimeout), what, 20*time.Millisecond, func() error {
			if n := acked.Load() - base; n < k {
				return fmt.Errorf("%d of %d more operations acknowledged", n, k)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	faults := 0
	step := func(what string, f func() error) {
		t.Helper()
		if err := f(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		faults++
		t.Logf("[%s] %s (%d operations acknowledged)", time.Since(began).Round(time.Millisecond), what, acked.Load())
	}
	nemesisCtx := ctxFor(t, cfg.maxTime+5*time.Minute)
	progress(20, "operations before the faults")
	for round := 1; ; round++ {
		p := linInSync(t, net)
		step(fmt.Sprintf("kill -9 the primary node%d", p), func() error { return net.Kill(p) })
		progress(10, "operations without the primary")
		step(fmt.Sprintf("restart node%d", p), func() error { return net.StartNode(nemesisCtx, p) })
		progress(10, "operations after the restart")

		p = linInSync(t, net)
		b := (p + 1 + int(cfg.seed%3)) % net.N()
		step(fmt.Sprintf("SIGSTOP backup node%d", b), func() error { return net.Pause(b) })
		progress(30, "operations with a paused backup")
		step(fmt.Sprintf("SIGCONT node%d", b), func() error { return net.Resume(b) })
		progress(10, "operations after the backup resumed")

		p = linInSync(t, net)
		step(fmt.Sprintf("cut the primary node%d off from the other replicas", p), func() error { return net.Isolate(nemesisCtx, p) })
		progress(10, "operations while the primary is cut off")
		step("heal the partition", func() error { return net.HealAll(nemesisCtx) })
		progress(10, "operations after the partition healed")

		linInSync(t, net)
		step("kill -9 every replica", func() error {
			for i := range net.N() {
				if err := net.Kill(i); err != nil {
					return err
				}
			}
			return nil
		})
		step("restart every replica", func() error { return net.Start(nemesisCtx) })
		progress(10, "operations after every replica restarted")

		// The short form runs the sequence once; the long form repeats it until the budget is spent.
		if !cfg.long || int(issued.Load()) >= cfg.ops || time.Since(began) >= cfg.maxTime {
			t.Logf("nemesis done: %d round(s), %d faults and repairs", round, faults)
			break
		}
	}
	// Let the clients finish the operation budget (bounded by the run's time), then stop them.
	budgetCtx, cancelBudget := context.WithDeadline(runCtx, began.Add(cfg.maxTime))
	defer cancelBudget()
	err = WaitFor(budgetCtx, "the operation budget", 20*time.Millisecond, func() error {
		if n := issued.Load(); int(n) < cfg.ops {
			return fmt.Errorf("%d of %d operations issued", n, cfg.ops)
		}
		return nil
	})
	if err != nil {
		t.Logf("stopping early: %v", err)
	}
	stopWorkers()
	loadTime := time.Since(began)

	counts, total := rec.Counts()
	h := rec.History()
	t.Logf("%d operations in %s: %d ok, %d indeterminate, %d failed (refused); %d in the history to check",
		total, loadTime.Round(time.Millisecond), counts[linearize.OK], counts[linearize.Unknown]+counts[linearize.Open], counts[linearize.Failed], len(h))
	if counts[linearize.OK] == 0 {
		t.Fatal("no operation succeeded")
	}
	checkTimeout := time.Minute
	if cfg.long {
		checkTimeout = 10 * time.Minute
	}
	out := filepath.Join(os.TempDir(), fmt.Sprintf("p2pbft-lin-%d-%d", cfg.seed, time.Now().UnixNano()))
	checkStart := time.Now()
	if err := linearize.Check(h, checkTimeout, out); err != nil {
		t.Fatalf("seed %d: %v", cfg.seed, err)
	}
	t.Logf("linearizable: porcupine checked %d operations on %d keys in %s", len(h), linKeysUsed(h), time.Since(checkStart).Round(time.Millisecond))

	linStaleReadControl(t, net, clients[0])
}

// linStaleReadControl shows that the recording and the check catch a real violation: a backup cut off from
// the others keeps serving its committed state through its HTTP API (a local read, without consensus),
// which falls behind the chain. Recorded as a get, its answer after a newer write was acknowledged makes
// the history non-linearizable, and the check must say so (and write its visualization).
func linStaleReadControl(t *testing.T, net *Network, c *client.Client) {
	t.Helper()
	ctx := ctxFor(t, linPhaseTimeout)
	rec := linearize.NewRecorder()
	const key = "control"
	write := func(v string) {
		t.Helper()
		if _, o, err := rec.Run(ctx, c, 0, linearize.Input{Kind: linearize.Put, Key: key, Value: v}); o != linearize.OK {
			t.Fatalf("control: put %s: %s: %v", v, o, err)
		}
	}
	localGet := func(i int) (apitypes.KVResponse, error) {
		var kr apitypes.KVResponse
		b, code, err := net.get(ctx, i, "/v1/kv/"+key)
		if code == http.StatusNotFound {
			return kr, nil
		}
		if err != nil {
			return kr, err
		}
		return kr, json.Unmarshal(b, &kr)
	}
	p := linInSync(t, net)
	b := (p + 1) % net.N()
	write("old")
	err := WaitFor(ctx, fmt.Sprintf("node%d to execute the first write", b), 20*time.Millisecond, func() error {
		kr, err := localGet(b)
		if err == nil && kr.Value != "old" {
			err = fmt.Errorf("holds %q", kr.Value)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := net.Isolate(ctx, b); err != nil {
		t.Fatal(err)
	}
	err = WaitFor(ctx, fmt.Sprintf("node%d cut off", b), 20*time.Millisecond, func() error {
		st, err := net.Status(ctx, b)
		if err == nil && len(st.Peers) > 0 {
			err = fmt.Errorf("still connected to %d replicas", len(st.Peers))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	write("new") // the three others are a quorum
	call := rec.Begin(1, linearize.Input{Kind: linearize.Get, Key: key})
	kr, err := localGet(b)
	if err != nil {
		t.Fatalf("control: local read of node%d: %v", b, err)
	}
	call.Return(linearize.Output{Found: kr.Found, Value: kr.Value})
	if err := net.HealAll(ctx); err != nil {
		t.Fatal(err)
	}
	if kr.Value != "old" {
		t.Fatalf("control: the cut-off node%d read %q, want the value it held before it was cut off", b, kr.Value)
	}
	err = linearize.Check(rec.History(), time.Minute, t.TempDir())
	if !errors.Is(err, linearize.ErrNotLinearizable) {
		t.Fatalf("control: a stale read was not rejected: %v", err)
	}
	t.Logf("control: a local read of the cut-off node%d returned %q after %q was acknowledged; the check rejects it", b, kr.Value, "new")
}

// linOp draws client w's n-th operation (the issued-th of the run): a get (40%), put (25%), CAS (30%: from
// the value the client last wrote or saw, else create-if-absent) or delete (5%) of one of linKeys keys. Keys change
// every linKeyGen operations, as Jepsen's independent keys do, so that indeterminate operations, which
// stay concurrent with everything after their call, do not pile up on the same key in a long run.
func linOp(rng *rand.Rand, w, n, issued int, seen map[string]string) linearize.Input {
	key := fmt.Sprintf("g%d-k%d", issued/linKeyGen, rng.IntN(linKeys))
	value := fmt.Sprintf("c%d-%d", w, n) // unique: a read tells which write it saw
	switch r := rng.IntN(100); {
	case r < 40:
		return linearize.Input{Kind: linearize.Get, Key: key}
	case r < 65:
		seen[key] = value
		return linearize.Input{Kind: linearize.Put, Key: key, Value: value}
	case r < 95:
		old, ok := seen[key]
		seen[key] = value
		if !ok {
			return linearize.Input{Kind: linearize.CAS, Key: key, Value: value, ExpectAbsent: true}
		}
		return linearize.Input{Kind: linearize.CAS, Key: key, Expect: old, Value: value}
	default:
		delete(seen, key)
		return linearize.Input{Kind: linearize.Del, Key: key}
	}
}

// linSaw notes the value a client learnt from an acknowledged read or failed CAS.
func linSaw(seen map[string]string, in linearize.Input, out linearize.Output) {
	if in.Kind == linearize.Get || in.Kind == linearize.CAS && !out.Swapped {
		if out.Found {
			seen[in.Key] = out.Value
		} else {
			delete(seen, in.Key)
		}
	}
}

func linKeysUsed(h []porcupine.Operation) int {
	keys := map[string]bool{}
	for _, o := range h {
		keys[o.Input.(linearize.Input).Key] = true
	}
	return len(keys)
}

// linInSync waits until every replica runs in normal mode in the same view and has reached the height the
// most advanced one had when the wait began, and returns the primary: faults are injected into a
// network that has recovered from the previous one, so that no step exceeds f = 1 faulty replica.
func linInSync(t *testing.T, net *Network) int {
	t.Helper()
	ctx := ctxFor(t, linPhaseTimeout)
	var target uint64
	for _, st := range net.Statuses(ctx) {
		if st != nil {
			target = max(target, st.Height)
		}
	}
	primary := -1
	err := WaitFor(ctx, "every replica in sync", 50*time.Millisecond, func() error {
		sts := net.Statuses(ctx)
		for i, st := range sts {
			switch {
			case st == nil:
				return fmt.Errorf("node%d does not answer", i)
			case st.Mode != "normal":
				return fmt.Errorf("node%d is in mode %s", i, st.Mode)
			case st.View != sts[0].View:
				return fmt.Errorf("node%d in view %d, node0 in view %d", i, st.View, sts[0].View)
			case st.Height < target:
				return fmt.Errorf("node%d at height %d of %d", i, st.Height, target)
			case len(st.Partitioned) > 0:
				return fmt.Errorf("node%d is cut off from %v", i, st.Partitioned)
			case len(st.Peers) < net.N()-1:
				return fmt.Errorf("node%d is connected to %d of %d replicas", i, len(st.Peers), net.N()-1)
			}
		}
		primary = sts[0].Primary
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if primary < 0 || primary >= net.N() {
		t.Fatalf("the replicas report primary %d", primary)
	}
	return primary
}
