package testnet

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// `p2pbft testnet | tee log`, then Ctrl-C: the terminal sends SIGINT to the whole foreground group, tee
// dies and closes the pipe, and the runner gets SIGINT with an output that fails every write (EPIPE, or
// SIGPIPE if it did not ignore it). Whether it stops its replicas itself or dies and lets Pdeathsig stop
// them, none of the replicas it started may outlive it.
func TestTestnetRunnerPipeClosedThenInterrupt(t *testing.T) {
	needE2E(t)
	dir := filepath.Join(t.TempDir(), "net")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	runner := exec.Command(p2pbftBinary, "testnet", "--dir", dir, "--no-load", "--duration", "3m")
	var stderr syncBuffer
	runner.Stdout, runner.Stderr = pw, &stderr
	if err := runner.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close() // the runner holds the only write end: closing the read end breaks its output
	runnerDone := make(chan error, 1)
	go func() { runnerDone <- runner.Wait() }()
	var stdout syncBuffer
	teeDone := make(chan struct{})
	go func() { // tee: copy until the pipe is closed under it
		defer close(teeDone)
		io.Copy(&stdout, pr)
	}()
	exited := false
	defer func() {
		if !exited {
			runner.Process.Kill()
			<-runnerDone
		}
		if t.Failed() {
			t.Logf("runner's output before the pipe closed:\n%s\nits stderr:\n%s", stdout.String(), stderr.String())
		}
	}()

	// The runner records its replicas' PIDs in the manifest as it starts them.
	var pids []int
	waitUntil(t, 90*time.Second, "the runner's 4 replicas running (PIDs in the manifest)", func() bool {
		pids = manifestPIDs(dir)
		if len(pids) < 4 {
			return false
		}
		for _, pid := range pids {
			if syscall.Kill(pid, 0) != nil {
				return false
			}
		}
		return true
	})
	t.Logf("replica PIDs: %v", pids)
	// Up and serving: it printed its endpoints (so the interrupt below stops a running testnet, not one
	// still starting).
	waitUntil(t, 90*time.Second, "the runner's list of endpoints on its output", func() bool {
		return strings.Contains(stdout.String(), "replicas (f=")
	})

	// tee dies first, then the runner gets the interrupt.
	pr.Close()
	<-teeDone
	if err := runner.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-runnerDone:
		exited = true
		errOut := strings.TrimSpace(stderr.String())
		t.Logf("runner exited: %v; its stderr ends: %s", err, errOut[strings.LastIndex(errOut, "\n")+1:])
	case <-time.After(90 * time.Second):
		t.Fatal("the runner did not exit within 90s of SIGINT with its output closed")
	}
	waitUntil(t, 60*time.Second, "every replica of the runner gone", func() bool {
		for _, pid := range pids {
			if syscall.Kill(pid, 0) == nil && !zombie(pid) {
				return false
			}
		}
		return true
	})
}

// manifestPIDs returns the PIDs of the running replicas that the manifest of the testnet in dir records.
func manifestPIDs(dir string) []int {
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return nil // not written yet
	}
	var man Manifest
	if err := json.Unmarshal(b, &man); err != nil {
		return nil // caught halfway through a rewrite
	}
	var out []int
	for _, n := range man.Nodes {
		if n.PID > 0 {
			out = append(out, n.PID)
		}
	}
	return out
}

// waitUntil polls cond until it holds, or fails the test after d.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// syncBuffer is a buffer a process's output goroutine writes to while the test may read it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
