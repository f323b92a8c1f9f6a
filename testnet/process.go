package testnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ProcessOptions say how replica processes run.
type ProcessOptions struct {
	// Binary is the p2pbft executable. Required to start replicas.
	Binary string
	// Args, if set, returns extra arguments for replica i's `start` command.
	Args func(i int) []string
	// Env is added to the environment of every replica.
	Env []string
	// Command, if set, builds replica i's command from the binary and its arguments instead of
	// exec.Command: to run it on a host of a network lab (netlab.Host.Command), for instance. The command
	// must exec the binary in place (the process is the replica: signals go to it).
	Command func(i int, name string, arg ...string) *exec.Cmd
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL. Default 15s.
	StopTimeout time.Duration
	// ReadyTimeout bounds StartNode's wait for the replica's /health. Default 30s.
	ReadyTimeout time.Duration
	// OnExit, if set, is called when a replica process ends; expected is false when nobody asked it to
	// (a crash, a fatal error).
	OnExit func(i int, err error, expected bool)
}

type proc struct {
	cmd      *exec.Cmd
	done     chan struct{}
	err      error
	stopping bool
	log      *os.File
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// SetProcessOptions sets how replica processes run; it applies to replicas started afterwards.
func (n *Network) SetProcessOptions(po ProcessOptions) {
	if po.StopTimeout <= 0 {
		po.StopTimeout = 15 * time.Second
	}
	if po.ReadyTimeout <= 0 {
		po.ReadyTimeout = 30 * time.Second
	}
	n.mu.Lock()
	n.po = po
	n.mu.Unlock()
}

// Running reports whether replica i's process runs.
func (n *Network) Running(i int) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.procs[i]
	return p != nil && p.running()
}

// PID returns replica i's process ID, 0 if it does not run.
func (n *Network) PID(i int) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p := n.procs[i]; p != nil && p.running() {
		return p.cmd.Process.Pid
	}
	return 0
}

// Start starts every replica that does not run and waits until all are healthy.
func (n *Network) Start(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, n.N())
	for i := range n.N() {
		if n.Running(i) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.StartNode(ctx, i)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// StartNode starts replica i and waits until its HTTP API reports it healthy.
func (n *Network) StartNode(ctx context.Context, i int) error {
	if err := n.launch(i); err != nil {
		return err
	}
	n.mu.Lock()
	timeout := n.po.ReadyTimeout
	n.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return n.waitHealthy(ctx, i)
}

// launch starts replica i's process without waiting for it.
func (n *Network) launch(i int) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	name := n.man.Nodes[i].Name
	if p := n.procs[i]; p != nil && p.running() {
		return fmt.Errorf("testnet: %s already runs (pid %d)", name, p.cmd.Process.Pid)
	}
	if n.po.Binary == "" {
		return errors.New("testnet: no p2pbft binary set (SetProcessOptions)")
	}
	n.stopStale(i)
	home, err := filepath.Abs(n.Home(i))
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(n.LogPath(i), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("testnet: %s: open log: %w", name, err)
	}
	fmt.Fprintf(logf, "=== p2pbft testnet: %s starting at %s ===\n", name, time.Now().Format(time.RFC3339Nano))
	args := []string{"start", "--home", home}
	if n.po.Args != nil {
		args = append(args, n.po.Args(i)...)
	}
	cmd := exec.Command(n.po.Binary, args...)
	if n.po.Command != nil {
		cmd = n.po.Command(i, n.po.Binary, args...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), n.po.Env...)
	// Its own process group: a Ctrl-C in the terminal reaches the parent only, which stops the children.
	// Where the system can, the child also gets SIGTERM if the parent dies without stopping it (killed, or
	// by a broken output pipe), so replicas never outlive the process that runs the testnet (replicaAttr).
	cmd.SysProcAttr = replicaAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("testnet: %s: start %s: %w", name, n.po.Binary, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{}), log: logf}
	n.procs[i] = p
	n.man.Nodes[i].PID = cmd.Process.Pid
	if err := n.saveManifest(); err != nil {
		return err
	}
	onExit := n.po.OnExit
	go func() {
		err := cmd.Wait()
		logf.Close()
		n.mu.Lock()
		p.err = err
		expected := p.stopping
		if n.procs[i] == p && n.man.Nodes[i].PID == cmd.Process.Pid {
			n.man.Nodes[i].PID = 0
			n.saveManifest()
		}
		n.mu.Unlock()
		close(p.done)
		if onExit != nil {
			onExit(i, err, expected)
		}
	}()
	return nil
}

// stopStale stops a process left over from an earlier run (recorded in the manifest) if it is still a
// p2pbft replica of this home. Called with n.mu held.
func (n *Network) stopStale(i int) {
	pid := n.man.Nodes[i].PID
	if pid <= 0 {
		return
	}
	n.man.Nodes[i].PID = 0
	home, _ := filepath.Abs(n.Home(i))
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte(home)) || !bytes.Contains(cmdline, []byte("start")) {
		return // gone, or another process reuses the PID
	}
	syscall.Kill(pid, syscall.SIGTERM)
	for range 100 {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	syscall.Kill(pid, syscall.SIGKILL)
}

// waitHealthy polls replica i's /health until it answers 200, its process ends, or ctx ends.
func (n *Network) waitHealthy(ctx context.Context, i int) error {
	n.mu.Lock()
	p := n.procs[i]
	n.mu.Unlock()
	hc := &http.Client{Timeout: 2 * time.Second}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		resp, err := hc.Get(n.APIURL(i) + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("testnet: %s exited while starting (%v); last lines of %s:\n%s",
				n.man.Nodes[i].Name, p.err, n.LogPath(i), n.LogTail(i, 15))
		case <-ctx.Done():
			return fmt.Errorf("testnet: %s not healthy: %w; last lines of %s:\n%s", n.man.Nodes[i].Name, ctx.Err(), n.LogPath(i), n.LogTail(i, 15))
		case <-t.C:
		}
	}
}

// Stop stops replica i cleanly: SIGTERM, then SIGKILL if it has not exited within StopTimeout.
func (n *Network) Stop(i int) error { return n.signal(i, syscall.SIGTERM) }

// Kill kills replica i with SIGKILL (kill -9) and waits for the process to end.
func (n *Network) Kill(i int) error { return n.signal(i, syscall.SIGKILL) }

// Pause stops replica i with SIGSTOP; Resume continues it (SIGCONT).
func (n *Network) Pause(i int) error  { return n.sendOnly(i, syscall.SIGSTOP) }
func (n *Network) Resume(i int) error { return n.sendOnly(i, syscall.SIGCONT) }

func (n *Network) sendOnly(i int, sig syscall.Signal) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.procs[i]
	if p == nil || !p.running() {
		return fmt.Errorf("testnet: %s does not run", n.man.Nodes[i].Name)
	}
	return p.cmd.Process.Signal(sig)
}

func (n *Network) signal(i int, sig syscall.Signal) error {
	n.mu.Lock()
	p := n.procs[i]
	timeout := n.po.StopTimeout
	name := n.man.Nodes[i].Name
	if p == nil || !p.running() {
		n.mu.Unlock()
		return fmt.Errorf("testnet: %s does not run", name)
	}
	p.stopping = true
	n.mu.Unlock()
	p.cmd.Process.Signal(syscall.SIGCONT) // a paused process must run to handle SIGTERM
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("testnet: signal %s: %w", name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
	}
	p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("testnet: %s did not stop within %s after %s; killed", name, timeout, sig)
}

// Restart stops replica i cleanly (if it runs) and starts it again.
func (n *Network) Restart(ctx context.Context, i int) error {
	if n.Running(i) {
		if err := n.Stop(i); err != nil {
			return err
		}
	}
	return n.StartNode(ctx, i)
}

// Close stops every running replica (SIGTERM, in parallel) and waits for them.
func (n *Network) Close() error {
	var wg sync.WaitGroup
	errs := make([]error, n.N())
	for i := range n.N() {
		if !n.Running(i) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.Stop(i)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// LogTail returns the last lines of replica i's log.
func (n *Network) LogTail(i, lines int) string {
	f, err := os.Open(n.LogPath(i))
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	defer f.Close()
	st, _ := f.Stat()
	off := max(0, st.Size()-64<<10)
	f.Seek(off, io.SeekStart)
	b, _ := io.ReadAll(f)
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

// BuildBinary builds cmd/p2pbft of the module at moduleDir into dir and returns its path. Tests use it
// (without -race, which keeps the replica processes fast).
func BuildBinary(ctx context.Context, moduleDir, dir string) (string, error) {
	out := filepath.Join(dir, "p2pbft")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/p2pbft")
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("testnet: go build: %w\n%s", err, b)
	}
	return out, nil
}

// E2EEnabled reports whether end-to-end tests, which start real processes, run: unless -short is given
// or P2PBFT_E2E=0.
func E2EEnabled() bool {
	for _, a := range os.Args {
		if a == "-test.short" || a == "-test.short=true" {
			return false
		}
	}
	return os.Getenv("P2PBFT_E2E") != "0"
}

// RunWithBinary is the body of the TestMain of a package with end-to-end tests. If E2EEnabled, it builds
// cmd/p2pbft of the module at moduleDir into a temporary folder (BuildBinary: without -race, so the
// replica processes run at full speed while the tests may run under -race) and hands its path to set;
// then it runs the tests (run, usually m.Run) and removes the folder. It returns the exit code.
func RunWithBinary(moduleDir string, set func(bin string), run func() int) int {
	if !E2EEnabled() {
		return run()
	}
	dir, err := os.MkdirTemp("", "p2pbft-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin, err := BuildBinary(ctx, moduleDir, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	set(bin)
	return run()
}
