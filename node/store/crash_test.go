package store

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/node/app"
	"github.com/p2pbft/p2pbft/node/app/kv"
	"github.com/p2pbft/p2pbft/wire"
)

// The crash test: a child process (this test binary, re-executed) appends blocks as fast as it can, each
// with the key-value app's writes, a hard state and consensus records in one batch, and prints every height
// once Commit has returned. The parent kills it with SIGKILL at a random moment, reopens the store and
// checks that every reported height is there, the chain verifies, the app is exactly at the head, and a
// replay of the chain from genesis reproduces every block's app digest. Then it starts the child again on
// the same directory, several rounds.
//
// SIGKILL loses what the process had not handed to the kernel; it does not lose the page cache, so this
// tests the store's atomicity and recovery, not the disk's fsync (which a power cut would).

const (
	envCrashDir  = "P2PBFT_STORE_CRASH_DIR"
	envCrashSeed = "P2PBFT_STORE_CRASH_SEED"
)

// crashOps returns the operations of block h: a deterministic function of the seed and the height, so the
// parent can check the child's work. Sizes vary so that kills land in small and large commits.
func crashOps(seed, h uint64) []kv.Op {
	r := rand.New(rand.NewPCG(seed, h))
	n := r.IntN(120)
	if r.IntN(10) == 0 {
		n = 0 // null batches
	}
	ops := make([]kv.Op, n)
	for i := range ops {
		k := []byte(fmt.Sprintf("k%03d", r.IntN(300)))
		switch r.IntN(6) {
		case 0:
			ops[i] = kv.Delete(k)
		case 1:
			ops[i] = kv.CreateIfAbsent(k, []byte{byte(h)})
		default:
			ops[i] = kv.Put(k, make([]byte, r.IntN(400)))
		}
	}
	return ops
}

func crashRequests(tb testing.TB, seed, h uint64) ([]app.Request, [][]byte) {
	ops := crashOps(seed, h)
	reqs := make([]app.Request, len(ops))
	raw := make([][]byte, len(ops))
	for i, o := range ops {
		p, err := kv.EncodeOp(o)
		if err != nil {
			tb.Fatal(err)
		}
		e, err := wire.Seal(testClient, testChain, wire.KindRequest, p)
		if err != nil {
			tb.Fatal(err)
		}
		if raw[i], err = e.Marshal(); err != nil {
			tb.Fatal(err)
		}
		reqs[i] = app.Request{Client: e.Author, Op: e.Payload}
	}
	return reqs, raw
}

// TestCrashChild is the child's body; it does nothing unless started by TestCrashKill9.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(envCrashDir)
	if dir == "" {
		t.Skip("runs only as the child of TestCrashKill9")
	}
	seed, _ := strconv.ParseUint(os.Getenv(envCrashSeed), 10, 64)
	s, err := Open(dir, Options{Genesis: testGenesis, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	a, err := kv.Open(s.AppStorage())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute) // never outlive a parent that failed to kill
	for time.Now().Before(deadline) {
		head := s.Head()
		h := head.Height + 1
		reqs, raw := crashRequests(t, seed, h)
		out, err := a.Execute(h, reqs)
		if err != nil {
			t.Fatal(err)
		}
		blk := testBlock(t, head, h%3, raw, out.Digest)
		b := s.NewBatch()
		b.SetHardState(binary.BigEndian.AppendUint64(nil, h))
		b.AppendRecord(h, []byte(fmt.Sprintf("prepare %d", h)))
		b.AppendRecord(h, []byte(fmt.Sprintf("commit %d", h)))
		if h > 8 {
			b.TruncateLog(h - 8)
		}
		if err := b.AppendBlock(blk); err != nil {
			t.Fatal(err)
		}
		if err := a.Commit(b.App()); err != nil {
			t.Fatal(err)
		}
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		// Snapshots come and go, so garbage collection runs under the kills too.
		if h%8 == 0 {
			if err := a.TakeSnapshot(h); err != nil {
				t.Fatal(err)
			}
			if h > 16 {
				if err := a.ReleaseSnapshot(h - 16); err != nil {
					t.Fatal(err)
				}
			}
		}
		fmt.Fprintf(os.Stdout, "durable %d\n", h)
	}
}

func TestCrashKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	seed := rand.Uint64()
	if s := os.Getenv("P2PBFT_CRASH_TEST_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (replay with P2PBFT_CRASH_TEST_SEED=%d)", seed, seed)
	r := rand.New(rand.NewPCG(seed, 0))
	dir := t.TempDir()
	var reported uint64
	const rounds = 12
	for round := 0; round < rounds; round++ {
		// Kill after a random number of reported heights, plus a random delay of up to 3 ms, so the kill
		// lands anywhere in the child's write path.
		killAfter := 1 + r.IntN(30)
		jitter := time.Duration(r.IntN(3000)) * time.Microsecond
		got := runChildUntilKilled(t, dir, seed, killAfter, jitter)
		if got > reported {
			reported = got
		}
		head := checkAfterCrash(t, dir, seed, reported)
		t.Logf("round %d: killed after %d reports (+%v); highest reported %d, head %d", round, killAfter, jitter, reported, head)
	}
}

// runChildUntilKilled starts the child, kills it with SIGKILL after killAfter reported heights and jitter,
// and returns the highest height it reported.
func runChildUntilKilled(t *testing.T, dir string, seed uint64, killAfter int, jitter time.Duration) uint64 {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), envCrashDir+"="+dir, envCrashSeed+"="+strconv.FormatUint(seed, 10))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var highest uint64
	n := 0
	sc := bufio.NewScanner(stdout)
	timer := time.AfterFunc(30*time.Second, func() { cmd.Process.Kill() }) // a hung child fails, not hangs
	defer timer.Stop()
	for sc.Scan() {
		line := sc.Text()
		hs, ok := strings.CutPrefix(line, "durable ")
		if !ok {
			continue
		}
		h, err := strconv.ParseUint(hs, 10, 64)
		if err != nil {
			t.Fatalf("child said %q", line)
		}
		highest = h
		if n++; n == killAfter {
			time.Sleep(jitter)
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	// Drain what the child wrote before it died: those heights were durable too.
	for sc.Scan() {
		if hs, ok := strings.CutPrefix(sc.Text(), "durable "); ok {
			if h, err := strconv.ParseUint(hs, 10, 64); err == nil {
				highest = h
			}
		}
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v before it was killed; stderr:\n%s", err, stderr.String())
	}
	if n < killAfter {
		t.Fatalf("child reported %d heights, expected at least %d; stderr:\n%s", n, killAfter, stderr.String())
	}
	return highest
}

// checkAfterCrash reopens the store and checks it against what the child reported; it returns the head.
func checkAfterCrash(t *testing.T, dir string, seed, reported uint64) uint64 {
	t.Helper()
	s, err := Open(dir, Options{Genesis: testGenesis, Logger: quiet()})
	if err != nil {
		t.Fatalf("seed %d: reopen after kill: %v", seed, err)
	}
	defer s.Close()
	head := s.Head()
	if head.Height < reported {
		t.Fatalf("seed %d: head %d is below the reported durable height %d", seed, head.Height, reported)
	}
	if err := s.VerifyChain(1, head.Height, testCertCheck); err != nil {
		t.Fatalf("seed %d: chain after kill: %v", seed, err)
	}
	top, err := s.Block(head.Height)
	if err != nil {
		t.Fatal(err)
	}
	// The app's state and the consensus records were written in the block's batch: exactly at the head.
	a, err := kv.Open(s.AppStorage())
	if err != nil {
		t.Fatalf("seed %d: reopen app: %v", seed, err)
	}
	if st, _ := a.Info(); st.Height != head.Height || st.Digest != top.AppDigest {
		t.Fatalf("seed %d: app at %d (%s), chain head %d (app digest %s)", seed, st.Height, st.Digest, head.Height, top.AppDigest)
	}
	if hs, _ := s.HardState(); len(hs) != 8 || binary.BigEndian.Uint64(hs) != head.Height {
		t.Fatalf("seed %d: hard state %x, head %d", seed, hs, head.Height)
	}
	var seqs []uint64
	for rec, err := range s.Records(0) {
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, rec.Seq)
	}
	if len(seqs) == 0 || seqs[len(seqs)-1] != head.Height || head.Height > 8 && seqs[0] != head.Height-7 {
		t.Fatalf("seed %d: log records for %v at head %d", seed, seqs, head.Height)
	}
	// Replay the chain into a fresh app: every block's digest must come out the same.
	fresh := openTest(t, t.TempDir())
	ra, err := kv.Open(fresh.AppStorage())
	if err != nil {
		t.Fatal(err)
	}
	for blk, err := range s.Blocks(1, head.Height) {
		if err != nil {
			t.Fatal(err)
		}
		envs, err := DecodeBatch(blk.Batch)
		if err != nil {
			t.Fatal(err)
		}
		reqs := make([]app.Request, len(envs))
		for i, e := range envs {
			reqs[i] = app.Request{Client: e.Author, Op: e.Payload}
		}
		want, _ := crashRequests(t, seed, blk.Height)
		if len(want) != len(reqs) {
			t.Fatalf("seed %d: block %d holds %d requests, the child executed %d", seed, blk.Height, len(reqs), len(want))
		}
		out, err := ra.Execute(blk.Height, reqs)
		if err != nil {
			t.Fatal(err)
		}
		if out.Digest != blk.AppDigest {
			t.Fatalf("seed %d: replay of block %d gives digest %s, the block says %s", seed, blk.Height, out.Digest, blk.AppDigest)
		}
	}
	fresh.Close()
	return head.Height
}
