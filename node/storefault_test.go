package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/node/signstate"
	"github.com/p2pbft/p2pbft/node/store"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// Storage faults on a stopped replica, as an operator meets them: the replica's data folder is damaged
// between two runs, and the next start must either refuse with the fix in its error, or start knowing
// that it forgot what it signed.

// lockedBuffer is a log sink that replicas write to while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// stoppedReplicaWithData runs a 4-replica cluster through some load and stops it cleanly; it returns the
// cluster, whose replicas all have blocks in their stores.
func stoppedReplicaWithData(t *testing.T) *cluster {
	t.Helper()
	c := newCluster(t, 4, nil)
	c.startAll()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.load(ctx, "a", 4, 10); err != nil {
		t.Fatal(err)
	}
	c.stopAll()
	return c
}

// damageEvery flips every 13th byte of file from offset 7 on: a damage no checksum lets through.
func damageEvery(t *testing.T, file string) { damageRange(t, file, 1) }

// damageRange flips every 13th byte of the first part of file (part 1: all of it, 2: its first half).
func damageRange(t *testing.T, file string, part int) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) == 0 {
		t.Fatalf("%s is empty: nothing to damage", file)
	}
	for i := 7; i < len(b)/part; i += 13 {
		b[i] ^= 0x5a
	}
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// wantResetAdvice checks that starting replica i fails, with ErrCorrupt and the command that fixes it.
func wantResetAdvice(t *testing.T, c *cluster, i int) {
	t.Helper()
	n, err := New(c.cfgs[i], Options{Logger: testLogger(t)})
	if err == nil {
		n.Close()
		t.Fatal("a replica with a damaged store started")
	}
	want := fmt.Sprintf("p2pbft reset --home %s", c.cfgs[i].Home)
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("start with a damaged store: %v\nwant the advice %q", err, want)
	}
	if !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("start with a damaged store: %v does not wrap store.ErrCorrupt", err)
	}
	t.Logf("start refused: %v", err)
}

// A replica whose store has a damaged MANIFEST does not start: the error names `p2pbft reset --home`,
// and the same start fails the same way again (nothing was half-repaired).
func TestDamagedManifestRefusesToStart(t *testing.T) {
	c := stoppedReplicaWithData(t)
	data := c.cfgs[3].Path(c.cfgs[3].Store.Dir)
	manifests, err := filepath.Glob(filepath.Join(data, "MANIFEST-*"))
	if err != nil || len(manifests) == 0 {
		t.Fatalf("no manifest in %s: %v", data, err)
	}
	for _, m := range manifests {
		damageEvery(t, m)
	}
	wantResetAdvice(t, c, 3)
	wantResetAdvice(t, c, 3)
}

// A damaged table (.sst) is found only when a read touches it: pebble opens tables lazily. The replica
// must still refuse to start with the advice, not panic and not return a bare pebble error. Two kinds of
// damage: all over the file (pebble cannot open the table: bad footer) and in its first half only (the
// table opens, a data block's checksum does not match).
func TestDamagedTableRefusesToStart(t *testing.T) {
	t.Run("whole", func(t *testing.T) { testDamagedTable(t, 1) })
	t.Run("blocks", func(t *testing.T) { testDamagedTable(t, 2) })
}

func testDamagedTable(t *testing.T, part int) {
	c := stoppedReplicaWithData(t)
	data := c.cfgs[3].Path(c.cfgs[3].Store.Dir)
	// The replica's writes are in its write-ahead log, not yet in tables (its memtable never filled).
	// Opening the store replays the log and flushes it into a table, with every block in it.
	s, err := store.Open(data, store.Options{Genesis: c.genesis.Digest(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	head := s.Head().Height
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if head == 0 {
		t.Fatal("the replica's store holds no block")
	}
	tables, err := filepath.Glob(filepath.Join(data, "*.sst"))
	if err != nil || len(tables) == 0 {
		t.Fatalf("no table in %s after a reopen: %v", data, err)
	}
	for _, f := range tables {
		damageRange(t, f, part)
	}
	if part == 1 {
		wantResetAdvice(t, c, 3) // the metadata's reads at start open the table
		return
	}
	// With only some data blocks damaged, which reads meet them depends on where the table's blocks
	// split: the start may not (it reads the metadata and the log, not the chain's blocks). Then the
	// first read of a damaged block must fail the same way, with the advice.
	want := fmt.Sprintf("p2pbft reset --home %s", c.cfgs[3].Home)
	n, err := New(c.cfgs[3], Options{Logger: testLogger(t)})
	if err != nil {
		if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), want) {
			t.Fatalf("start with damaged blocks: %v\nwant store.ErrCorrupt and the advice %q", err, want)
		}
		t.Logf("start refused: %v", err)
		return
	}
	defer n.Close()
	var damaged int
	for h := uint64(1); h <= head; h++ {
		_, err := n.Block(h)
		if err == nil {
			continue
		}
		if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), want) {
			t.Fatalf("block %d of a damaged table: %v\nwant store.ErrCorrupt and the advice %q", h, err, want)
		}
		if damaged == 0 {
			t.Logf("the replica started; block %d: %v", h, err)
		}
		damaged++
	}
	if damaged == 0 {
		t.Fatalf("no read of blocks 1..%d met the damage in the table's first half", head)
	}
}

// newestLog returns the write-ahead log pebble writes to now: the one with the highest file number.
func newestLog(t *testing.T, dir string) string {
	t.Helper()
	logs, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil || len(logs) == 0 {
		t.Fatalf("no write-ahead log in %s: %v", dir, err)
	}
	best, bestNum := "", int64(-1)
	for _, l := range logs {
		num, err := strconv.ParseInt(strings.TrimSuffix(filepath.Base(l), ".log"), 10, 64)
		if err != nil {
			continue
		}
		if num > bestNum {
			best, bestNum = l, num
		}
	}
	if best == "" {
		t.Fatalf("no numbered write-ahead log in %v", logs)
	}
	return best
}

// The original bug: a replica stopped cleanly, its write-ahead log lost its tail (a cut-off file, a disk
// that dropped writes it had acknowledged), and it reopened lower with no warning. Now the restart says
// so, and the signed mark keeps it from voting where it forgot what it voted.
//
// Determinism: the store is created in this test and the replica runs once, so every write of that run
// is in one write-ahead log and nothing is in a table yet (pebble replays a log into a table only when it
// opens the store again, and the memtable never fills with this load). Cutting that log in half
// therefore drops the last half of the run's batches, among them its last blocks: pebble reads a log
// cut inside a record as a torn tail and opens at the last whole record before it.
func TestTruncatedLogAfterCleanStop(t *testing.T) {
	c := newCluster(t, 4, nil)
	var logs lockedBuffer
	c.logger = func(i int) *slog.Logger {
		if i != 3 {
			return testLogger(t)
		}
		return slog.New(slog.NewTextHandler(io.MultiWriter(&logs, tWriterIf(t)), &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	w := newWatcher(t, c.keys[3].PublicKey())
	c.hooks[3] = w.hooks()
	// What replica 3 signed in its first life, and what it sends in its second: to check that the second
	// says nothing new at or below the mark.
	var afterMu sync.Mutex
	var after []pbft.Message
	firstLife := map[wire.Digest]bool{}
	var restarted bool
	sent := c.hooks[3].sent
	c.hooks[3].sent = func(m pbft.Message) {
		sent(m)
		afterMu.Lock()
		if restarted {
			after = append(after, m)
		} else {
			firstLife[m.Env.ID()] = true
		}
		afterMu.Unlock()
	}
	c.startAll()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.load(ctx, "a", 4, 10); err != nil {
		t.Fatal(err)
	}
	c.stop(3)
	st, ok, err := signstate.Read(filepath.Join(c.homes[3], signstate.FileName))
	if err != nil || !ok || st.Seq == 0 || st.Height == 0 {
		t.Fatalf("signed state after a clean stop: %+v, %v, %v", st, ok, err)
	}

	data := c.cfgs[3].Path(c.cfgs[3].Store.Dir)
	wal := newestLog(t, data)
	fi, err := os.Stat(wal)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() < 4096 {
		t.Fatalf("write-ahead log %s is only %d bytes", wal, fi.Size())
	}
	if err := os.Truncate(wal, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	t.Logf("cut %s from %d to %d bytes; the replica stopped at height %d, signed %s", filepath.Base(wal),
		fi.Size(), fi.Size()/2, st.Height, st.Mark.String())

	w.mu.Lock()
	w.executed = map[uint64]int{} // it executes again the blocks it lost
	w.mu.Unlock()
	afterMu.Lock()
	restarted = true
	afterMu.Unlock()
	n := c.start(3)

	// It says that it reopened lower than it stopped, and by how much.
	below := regexp.MustCompile(`below the height it had when the replica last stopped cleanly.*store_height=(\d+) stopped_at=(\d+)`)
	m := below.FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no below-clean-stop warning after the log lost its tail; replica 3 logged:\n%s", logs.String())
	}
	if h, _ := strconv.ParseUint(m[1], 10, 64); h >= st.Height || m[2] != strconv.FormatUint(st.Height, 10) {
		t.Fatalf("warning says store_height=%s stopped_at=%s, want a store below %d", m[1], m[2], st.Height)
	}
	t.Logf("replica 3 reopened at height %s of %d", m[1], st.Height)
	if !strings.Contains(logs.String(), "the store holds less than this replica signed") {
		t.Fatalf("no warning that the guard is armed; replica 3 logged:\n%s", logs.String())
	}
	// Its guard is armed at what it signed before the stop.
	if n.signedMark != (pbft.Mark{View: st.View, Seq: st.Seq}) {
		t.Fatalf("after the cut the guard is %+v, want the signed mark %+v", n.signedMark, st.Mark)
	}

	c.waitConnected(30 * time.Second)
	if err := c.load(ctx, "b", 4, 10); err != nil {
		t.Fatal(err)
	}
	// It catches up, and a stable checkpoint comes to cover the mark.
	waitFor(t, 60*time.Second, "replica 3's stable checkpoint covers its signed mark", func() bool {
		if n.Status().StableCheckpoint >= st.Seq {
			return true
		}
		lctx, lcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer lcancel()
		if err := c.load(lctx, "c", 1, 1); err != nil {
			t.Logf("load: %v", err)
		}
		return false
	})
	c.waitCaughtUp(60 * time.Second)
	c.checkAgreement()
	w.check()

	// In its second life every vote that the mark covers says what one of its first life said (the
	// engine resends its own votes that the store kept; the guard stops new signatures, and a vote of
	// the same content contradicts nothing), and it did vote above the mark.
	afterMu.Lock()
	defer afterMu.Unlock()
	var above, resent int
	for _, msg := range after {
		if !bytes.Equal(msg.Env.Author, c.keys[3].PublicKey()) {
			continue
		}
		vm := envelopeMark(msg.Env)
		if vm.Seq == 0 {
			continue // not a vote on a slot
		}
		if vm.View <= st.View && vm.Seq <= st.Seq {
			if !firstLife[msg.Env.ID()] {
				t.Fatalf("replica 3 sent a new %s at view %d seq %d, at or below its signed mark %s",
					msg.Env.Kind, vm.View, vm.Seq, st.Mark.String())
			}
			resent++
			continue
		}
		above++
	}
	t.Logf("second life: %d votes above the mark, %d resent from the first life below it", above, resent)
	if above == 0 {
		t.Fatal("replica 3 never voted again after the restart")
	}
}

// tWriterIf sends a replica's log to the test log too when NODE_TEST_LOG is set.
func tWriterIf(t *testing.T) io.Writer {
	if os.Getenv("NODE_TEST_LOG") == "" {
		return io.Discard
	}
	return tWriter{t}
}
