//go:build linux

package testnet

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/internal/netlab"
)

// Linux only: the machines are network namespaces (netlab).
//
// Four machines, set up as README's "Running across machines" says, step by step, on hosts of their own
// (network namespaces with their own addresses) joined by a wide-area link emulator: 25 ms one way and
// 1% loss on every link. Then what goes wrong between machines: a replica killed (-9) while the others
// commit, and brought back on another machine (a new address) on an idle network, which must catch up
// without client traffic; a replica cut off from the others, which their status must report as
// unreachable while its connections may linger, and which comes back after the heal.
func TestAcrossMachines(t *testing.T) {
	needE2E(t)
	const seed = 7
	t.Logf("emulator seed %d: 25 ms one way, 1%% loss on every link", seed)
	em := netlab.NewEmulator(netlab.EmulatorConfig{Seed: seed, Default: netlab.LinkProps{Delay: 25 * time.Millisecond, Loss: 0.01}})
	names := []string{"a", "b", "c", "d", "e", "client"}
	lab := netlab.ForTest(t, netlab.Config{Hosts: names, Fabric: em})
	dir := t.TempDir()
	m := &machines{t: t, lab: lab, dir: dir}
	t.Cleanup(m.stopAll)

	// 1. On every machine: p2pbft init, and the peer ID from p2pbft id --json.
	replicas := names[:4]
	peers := map[string]string{}
	for _, name := range replicas {
		home := m.home(name)
		m.run(name, "init", "--home", home, "--moniker", name)
		var id struct {
			PeerID string   `json:"peer_id"`
			Addrs  []string `json:"addrs"`
		}
		if err := json.Unmarshal([]byte(m.run(name, "id", "--home", home, "--json")), &id); err != nil || id.PeerID == "" {
			t.Fatalf("id --json on %s: %v", name, err)
		}
		want := "/ip4/" + lab.Host(name).Addr.String() + "/tcp/26690"
		if !slices.ContainsFunc(id.Addrs, func(a string) bool { return strings.HasPrefix(a, want) }) {
			t.Fatalf("id on %s prints %v: want its interface address %s (the listen address is a wildcard)", name, id.Addrs, want)
		}
		peers[name] = id.PeerID
	}
	// 2. The genesis, built on one machine from every peer ID and address, copied into every home.
	genesis := filepath.Join(dir, "genesis.toml")
	args := []string{"genesis", "--chain-id", "lab", "--out", genesis}
	for _, name := range replicas {
		args = append(args, "--replica", fmt.Sprintf("%s=%s@/ip4/%s/tcp/26690", name, peers[name], lab.Host(name).Addr))
	}
	m.run("a", args...)
	g, err := os.ReadFile(genesis)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range replicas {
		if err := os.WriteFile(filepath.Join(m.home(name), "genesis.toml"), g, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// 3. Start every replica, bootstrapping from one that is up (the first one from none).
	bootstrap := fmt.Sprintf("/ip4/%s/tcp/26690/p2p/%s", lab.Host("a").Addr, peers["a"])
	// a serves its HTTP API on every interface (step 5), for status from another machine.
	m.start("a", "a", "--api", "0.0.0.0:26680")
	for _, name := range replicas[1:] {
		m.start(name, name, "--bootstrap", bootstrap)
	}
	for _, name := range replicas {
		m.waitStatus(name, name, "every replica connected and reachable", 90*time.Second, func(s machineStatus) bool {
			return len(s.Peers) == 3 && len(s.Reachable) == 3
		})
	}
	// 4. A transaction from another machine, and the status on each.
	if err := os.MkdirAll(m.home("client"), 0o700); err != nil {
		t.Fatal(err)
	}
	out := m.run("client", "tx", "--home", m.home("client"), "--genesis", genesis, "--bootstrap", bootstrap,
		"--timeout", "60s", "put", "hello", "world")
	t.Logf("tx from the client machine: %s", strings.TrimSpace(out))
	if _, err := os.Stat(filepath.Join(m.home("client"), "cli_key")); err != nil {
		t.Fatalf("tx did not create its client key on first use: %v", err)
	}
	// Step 5: status from another machine, through the API exposed beyond loopback, which a's log warns
	// about.
	remote := m.run("client", "status", "--api", lab.Host("a").Addr.String()+":26680", "--json")
	var rs machineStatus
	if err := json.Unmarshal([]byte(remote), &rs); err != nil || len(rs.Peers) != 3 {
		t.Fatalf("status of a from the client machine: %v\n%s", err, remote)
	}
	if b, err := os.ReadFile(filepath.Join(m.home("a"), "node.log")); err != nil || !strings.Contains(string(b), "no authentication") {
		t.Fatalf("a serves its API beyond loopback without a warning in its log (%v)", err)
	}
	for _, name := range replicas {
		m.waitStatus(name, name, "the transaction executed", 60*time.Second, func(s machineStatus) bool { return s.Height >= 1 })
	}

	// Kill -9 replica d; the other three commit a few dozen blocks without it.
	m.kill9("d")
	before := m.status("a", "a").Height
	m.run("a", "bench", "--api", "127.0.0.1:26680", "--genesis", genesis, "--clients", "4", "--requests", "200",
		"--duration", "60s", "--warmup", "0s", "--progress=false")
	head := m.status("a", "a").Height
	if head < before+20 {
		t.Fatalf("the three replicas went from height %d to %d: want a few dozen blocks for d to catch up on", before, head)
	}
	m.waitStatus("b", "b", "b at the head", 60*time.Second, func(s machineStatus) bool { return s.Height >= head })

	// d comes back on machine e (its home moved there: a new address), on an idle network: the genesis
	// still lists its old address. It must learn the others' height from their status messages and catch
	// up without any client request.
	start := time.Now()
	m.start("d", "e", "--bootstrap", bootstrap)
	m.waitStatus("d", "e", "d connected from its new address", 90*time.Second, func(s machineStatus) bool { return len(s.Peers) == 3 })
	connected := time.Since(start)
	m.waitStatus("d", "e", fmt.Sprintf("d caught up to height %d on an idle network", head), 90*time.Second,
		func(s machineStatus) bool { return s.Height >= head })
	t.Logf("d moved from %s to %s, %d blocks behind: connected to all after %s, caught up %s after that, with no client traffic",
		lab.Host("d").Addr, lab.Host("e").Addr, head-before, connected.Round(time.Millisecond), (time.Since(start) - connected).Round(time.Millisecond))
	m.waitStatus("a", "a", "a reaches d at its new address", 60*time.Second, func(s machineStatus) bool { return slices.Contains(s.Reachable, 3) })

	// Cut c off from every other machine (both directions): the others report it unreachable within
	// seconds, and still commit; after the heal it is reachable again and catches up.
	for _, other := range []string{"a", "b", "e", "client"} {
		for _, cut := range [][2]string{{"c", other}, {other, "c"}} {
			if err := em.Cut(cut[0], cut[1]); err != nil {
				t.Fatal(err)
			}
		}
	}
	cutAt := time.Now()
	m.waitStatus("a", "a", "a reports c unreachable", 60*time.Second, func(s machineStatus) bool { return !slices.Contains(s.Reachable, 2) })
	t.Logf("c cut off: a's status said so after %s", time.Since(cutAt).Round(time.Millisecond))
	m.run("client", "tx", "--home", m.home("client"), "--genesis", genesis, "--bootstrap", bootstrap,
		"--timeout", "60s", "put", "during", "partition")
	during := m.status("a", "a").Height
	em.HealAll()
	m.waitStatus("a", "a", "a reaches c again", 60*time.Second, func(s machineStatus) bool { return slices.Contains(s.Reachable, 2) })
	m.waitStatus("c", "c", "c caught up after the heal", 90*time.Second, func(s machineStatus) bool { return s.Height >= during })
}

// machines runs p2pbft processes on the hosts of a lab, each replica with its home under dir.
type machines struct {
	t     *testing.T
	lab   *netlab.Lab
	dir   string
	procs map[string]*exec.Cmd // replica name -> its running process
}

type machineStatus struct {
	Height    uint64            `json:"height"`
	Peers     []json.RawMessage `json:"peers"`
	Reachable []int             `json:"reachable"`
}

func (m *machines) home(name string) string { return filepath.Join(m.dir, name) }

// run runs a p2pbft command on a host and returns its output; it fails the test on error.
func (m *machines) run(host string, args ...string) string {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := m.lab.Host(host).CommandContext(ctx, p2pbftBinary, args...).CombinedOutput()
	if err != nil {
		m.t.Fatalf("on %s: p2pbft %s: %v\n%s", host, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// start starts replica name (its home) on host, logging to its home's node.log.
func (m *machines) start(name, host string, args ...string) {
	m.t.Helper()
	logf, err := os.OpenFile(filepath.Join(m.home(name), "node.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		m.t.Fatal(err)
	}
	defer logf.Close()
	cmd := m.lab.Host(host).Command(p2pbftBinary, append([]string{"start", "--home", m.home(name)}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Replicas never outlive the test process, however it ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	if m.procs == nil {
		m.procs = map[string]*exec.Cmd{}
	}
	m.procs[name] = cmd
}

// kill9 kills replica name with SIGKILL and waits for it.
func (m *machines) kill9(name string) {
	m.t.Helper()
	cmd := m.procs[name]
	if err := cmd.Process.Kill(); err != nil {
		m.t.Fatal(err)
	}
	_ = cmd.Wait()
	delete(m.procs, name)
}

// stopAll stops the replicas the test started (SIGTERM, then SIGKILL after 20 s) and shows their logs if
// the test failed.
func (m *machines) stopAll() {
	for name, cmd := range m.procs {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			m.t.Errorf("replica %s did not stop within 20 s of SIGTERM", name)
		}
	}
	if m.t.Failed() {
		for _, name := range []string{"a", "b", "c", "d"} {
			if b, err := os.ReadFile(filepath.Join(m.home(name), "node.log")); err == nil {
				lines := strings.Split(strings.TrimSpace(string(b)), "\n")
				m.t.Logf("--- %s: last lines of node.log ---\n%s", name, strings.Join(lines[max(0, len(lines)-30):], "\n"))
			}
		}
	}
}

// status reads replica name's status with `p2pbft status --home HOME --json` on its host (the API
// listens on the host's loopback, as configured by default).
func (m *machines) status(name, host string) machineStatus {
	m.t.Helper()
	s, err := m.tryStatus(name, host)
	if err != nil {
		m.t.Fatal(err)
	}
	return s
}

func (m *machines) tryStatus(name, host string) (machineStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := m.lab.Host(host).CommandContext(ctx, p2pbftBinary, "status", "--home", m.home(name), "--json").Output()
	if err != nil {
		return machineStatus{}, fmt.Errorf("status of %s on %s: %w", name, host, err)
	}
	var s machineStatus
	if err := json.Unmarshal(out, &s); err != nil {
		return machineStatus{}, fmt.Errorf("status of %s on %s: %w\n%s", name, host, err, out)
	}
	return s, nil
}

// waitStatus waits until replica name's status satisfies ok.
func (m *machines) waitStatus(name, host, what string, d time.Duration, ok func(machineStatus) bool) {
	m.t.Helper()
	deadline := time.Now().Add(d)
	var last machineStatus
	var lastErr error
	for {
		s, err := m.tryStatus(name, host)
		if err == nil && ok(s) {
			return
		}
		last, lastErr = s, err
		if time.Now().After(deadline) {
			m.t.Fatalf("%s: not within %s (last status %+v, error %v)", what, d, last, lastErr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
