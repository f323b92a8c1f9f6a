package netlab

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The test binary doubles as a small TCP server and client run inside the lab's hosts.
func TestMain(m *testing.M) {
	switch os.Getenv("NETLAB_HELPER") {
	case "serve":
		serve(os.Args[len(os.Args)-1])
		return
	case "dial":
		if err := dialOnce(os.Args[len(os.Args)-1], 10*time.Second); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	os.Exit(m.Run())
}

// serve answers every connection with the address it came from.
func serve(addr string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			os.Exit(1)
		}
		fmt.Fprintf(c, "%s\n", c.RemoteAddr())
		c.Close()
	}
}

// dialOnce connects to addr (retrying until the server listens, within d) and prints its answer.
func dialOnce(addr string, d time.Duration) error {
	line, err := ask(addr, d)
	if err != nil {
		return err
	}
	fmt.Println(line)
	return nil
}

func ask(addr string, d time.Duration) (string, error) {
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			return bufio.NewReader(c).ReadString('\n')
		}
		if time.Now().After(deadline) {
			return "", err
		}
		time.Sleep(20 * time.Millisecond) // the server is starting: poll until the deadline
	}
}

func helper(t *testing.T, h *Host, mode, arg string) *exec.Cmd {
	cmd := h.Command(os.Args[0], "-test.run=^$", arg)
	cmd.Env = append(os.Environ(), "NETLAB_HELPER="+mode)
	return cmd
}

func exists(ns string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", ns))
	return err == nil
}

func linkExists(name string) bool {
	_, err := os.Stat(filepath.Join("/sys/class/net", name))
	return err == nil
}

// Two hosts with their own addresses reach each other and the test process (the gateway) reaches them;
// each sees the other's address as the source, not loopback. Close kills what still runs in the lab and
// deletes every namespace and the root link.
func TestLabHostsReachEachOther(t *testing.T) {
	if err := Available(); err != nil {
		t.Skipf("netlab: %v", err)
	}
	fab := &recordingFabric{}
	l, err := New(Config{Hosts: []string{"a", "b"}, Fabric: fab})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			l.Close()
		}
	})
	a, b := l.Host("a"), l.Host("b")
	if got := fmt.Sprint(fab.links); got != fmt.Sprintf("[{root <nil>} {h0 %p} {h1 %p}]", a, b) {
		t.Fatalf("the fabric was handed %s", got)
	}
	if !l.Subnet().Contains(a.Addr) || !l.Subnet().Contains(b.Addr) || a.Addr == b.Addr || l.Gateway() != l.Subnet().Addr().Next() {
		t.Fatalf("addresses: subnet %s gateway %s a %s b %s", l.Subnet(), l.Gateway(), a.Addr, b.Addr)
	}
	if a.Addr != l.Gateway().Next() || b.Addr != a.Addr.Next() {
		t.Fatalf("host k must have address .k+2: a %s b %s", a.Addr, b.Addr)
	}

	srvAddr := netip.AddrPortFrom(a.Addr, 7000).String()
	srv := helper(t, a, "serve", srvAddr)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Wait() }()

	// From host b: the server sees b's address.
	out, err := helper(t, b, "dial", srvAddr).Output()
	if err != nil {
		t.Fatalf("dial from b: %v", err)
	}
	if got := strings.TrimSpace(string(out)); !strings.HasPrefix(got, b.Addr.String()+":") {
		t.Fatalf("server saw %q, want b's address %s", got, b.Addr)
	}
	// From the test process, through the gateway.
	got, err := ask(srvAddr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(got, l.Gateway().String()+":") {
		t.Fatalf("server saw %q, want the gateway %s", got, l.Gateway())
	}
	// Nothing of b listens on a's address space: a dial to b's unused port is refused, not hung.
	if c, err := net.DialTimeout("tcp", netip.AddrPortFrom(b.Addr, 7000).String(), 5*time.Second); err == nil {
		c.Close()
		t.Fatal("b accepted a connection nobody listens for")
	}

	names := []string{l.FabricNS(), a.NS, b.NS}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	select {
	case <-srvDone: // killed by Close
	case <-time.After(10 * time.Second):
		t.Fatal("the server in host a survived Close")
	}
	for _, ns := range names {
		if exists(ns) {
			t.Errorf("namespace %s left after Close", ns)
		}
	}
	if linkExists(l.Tag() + "r") {
		t.Errorf("root link %sr left after Close", l.Tag())
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if fab.closed != 1 {
		t.Fatalf("fabric closed %d times", fab.closed)
	}
}

// recordingFabric is a Bridge that remembers what it was given (the hook a link emulator will use).
type recordingFabric struct {
	links  []Link
	closed int
}

func (f *recordingFabric) Connect(l *Lab, links []Link) error {
	f.links = links
	return Bridge{}.Connect(l, links)
}

func (f *recordingFabric) Close() error { f.closed++; return nil }

// New removes what a crashed run left: namespaces and root links named after a process that is gone, and
// anything already bearing the new lab's own names. It leaves a live process's names alone.
func TestLabRemovesLeftovers(t *testing.T) {
	if err := Available(); err != nil {
		t.Skipf("netlab: %v", err)
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	deadTag := "nl" + strconv.FormatInt(int64(dead.Process.Pid), 36) + "-0"
	nextTag := "nl" + strconv.FormatInt(int64(os.Getpid()), 36) + "-" + strconv.FormatInt(seq.Load(), 10)
	liveTag := "nl" + strconv.FormatInt(int64(os.Getppid()), 36) + "-999"
	leftNS := []string{deadTag + "-fabric", deadTag + "-x", nextTag + "-x", liveTag + "-x"}
	leftLinks := map[string]string{deadTag + "r": deadTag + "-fabric", nextTag + "r": nextTag + "-x"} // root link -> its peer's namespace
	t.Cleanup(func() {
		removeNamespaces(leftNS)
		for ln := range leftLinks {
			removeLink(ln)
		}
	})
	for _, ns := range leftNS {
		if err := run("ip", "netns", "add", ns); err != nil {
			t.Fatal(err)
		}
	}
	for ln, ns := range leftLinks {
		if err := run("ip", "link", "add", ln, "type", "veth", "peer", "name", "root", "netns", ns); err != nil {
			t.Fatal(err)
		}
	}
	l := ForTest(t, Config{Hosts: []string{"x"}})
	if l.Tag() != nextTag {
		t.Fatalf("tag %s, want %s", l.Tag(), nextTag)
	}
	for _, ns := range leftNS[:2] {
		if exists(ns) {
			t.Errorf("leftover namespace %s of a dead process not removed", ns)
		}
	}
	if !exists(nextTag+"-x") || !exists(l.Host("x").NS) {
		t.Errorf("the lab's own namespace is missing")
	}
	if !exists(liveTag + "-x") {
		t.Errorf("a live process's namespace %s was removed", liveTag+"-x")
	}
	if linkExists(deadTag + "r") {
		t.Errorf("leftover link %sr not removed", deadTag)
	}
	if !linkExists(nextTag + "r") {
		t.Errorf("the lab's root link is missing")
	}
	if out, err := output("ip", "-o", "-4", "addr", "show", "dev", nextTag+"r"); err != nil || !strings.Contains(out, l.Gateway().String()+"/24") {
		t.Errorf("the lab's root link does not hold the gateway address (a leftover kept?): %v %s", err, out)
	}
}

func TestNewRejectsBadHosts(t *testing.T) {
	if err := Available(); err != nil {
		t.Skipf("netlab: %v", err)
	}
	for _, hosts := range [][]string{nil, {"A"}, {"a", "a"}, {"fabric"}, {"root"}, {"a b"}} {
		if l, err := New(Config{Hosts: hosts}); err == nil {
			l.Close()
			t.Errorf("hosts %q accepted", hosts)
		}
	}
}
