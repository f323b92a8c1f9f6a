package testnet

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Two Networks of one folder: the second cannot take the lock while the first holds it, and can once it
// is released.
func TestLockIsExclusive(t *testing.T) {
	dir := t.TempDir()
	a, err := Create(Config{Dir: dir, N: 4, ChainID: "lock"})
	if err != nil {
		t.Fatal(err)
	}
	release, err := a.Lock()
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Lock(); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "process") {
		t.Fatalf("second lock: %v", err)
	}
	release()
	release2, err := b.Lock()
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	release2()
}

// A second `p2pbft testnet` on a folder that one runs fails at once and leaves the running replicas
// alone; when the runner dies without stopping them (SIGKILL), its replicas stop too.
func TestTestnetRunnerOwnsItsReplicas(t *testing.T) {
	needE2E(t)
	dir := filepath.Join(t.TempDir(), "net")
	first := exec.Command(p2pbftBinary, "testnet", "--dir", dir, "--no-load", "--duration", "3m")
	var out bytes.Buffer
	first.Stdout, first.Stderr = &out, &out
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	firstDone := make(chan struct{})
	go func() { first.Wait(); close(firstDone) }()
	defer func() {
		first.Process.Kill()
		<-firstDone
		if t.Failed() {
			t.Logf("first runner's output:\n%s", out.String())
		}
	}()
	var pids []int
	deadline := time.Now().Add(90 * time.Second)
	for len(pids) < 4 {
		if time.Now().After(deadline) {
			t.Fatal("the first runner's replicas did not all start")
		}
		time.Sleep(100 * time.Millisecond)
		states, err := ControlNodes(ctxFor(t, 5*time.Second), dir)
		if err != nil {
			continue
		}
		pids = pids[:0]
		for _, s := range states {
			if s.Running && s.PID > 0 {
				pids = append(pids, s.PID)
			}
		}
	}
	second := exec.Command(p2pbftBinary, "testnet", "--dir", dir, "--no-load", "--duration", "10s")
	got, err := second.CombinedOutput()
	if err == nil || !strings.Contains(string(got), "is run by process") {
		t.Fatalf("second runner: err %v, output:\n%s", err, got)
	}
	for _, pid := range pids {
		if syscall.Kill(pid, 0) != nil {
			t.Fatalf("replica %d of the first runner is gone after the second runner failed", pid)
		}
	}
	// The runner dies without a chance to stop its replicas: they stop by themselves.
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-firstDone
	deadline = time.Now().Add(60 * time.Second)
	for _, pid := range pids {
		for syscall.Kill(pid, 0) == nil {
			if _, err := os.Stat("/proc/" + itoa(pid) + "/status"); err != nil {
				break
			}
			if zombie(pid) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica %d still runs a minute after its runner was killed", pid)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// zombie reports whether process pid has exited and waits to be reaped (its parent, the killed runner,
// is gone, so init reaps it soon).
func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	f := strings.Fields(string(b))
	return len(f) > 2 && f[2] == "Z"
}

// FreePorts hands out distinct ports, below the kernel's ephemeral range (where outgoing connections and
// listeners on port 0 could take them before a replica binds), that are free for TCP and UDP.
func TestFreePortsBelowEphemeralRange(t *testing.T) {
	lo, hi := portPool()
	ports, err := FreePorts("127.0.0.1", 16)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p < lo || p > hi || seen[p] {
			t.Fatalf("ports %v: %d outside [%d, %d] or twice", ports, p, lo, hi)
		}
		seen[p] = true
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d not free after FreePorts: %v", p, err)
		}
		l.Close()
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var first int
		if _, err := fmt.Sscan(string(b), &first); err == nil && first > 11000 && hi >= first {
			t.Fatalf("pool [%d, %d] reaches into the ephemeral range from %d", lo, hi, first)
		}
	}
	if _, err := FreePorts("192.0.2.1", 1); err == nil {
		t.Error("FreePorts on an address of no interface here: no error")
	}
}
