package netlab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Config describes a lab.
type Config struct {
	// Hosts names the hosts, one namespace each; host k (in this order) gets address .k+2 of the lab's
	// /24. Names are lower-case letters, digits and '-', unique, and neither "fabric" nor "root" (the
	// link emulator's name of the root namespace). At least one.
	Hosts []string
	// Fabric joins the hosts' links. Default: a Bridge; an Emulator emulates a wide-area network.
	Fabric Fabric
	// Base is the range the lab's /24 is taken from. Default 10.77.0.0/16.
	Base netip.Prefix
}

// Lab is a running virtual network: see the package documentation.
type Lab struct {
	tag      string
	subnet   netip.Prefix
	gateway  netip.Addr
	fabricNS string
	rootLink string
	hosts    []*Host
	fabric   Fabric

	closeOnce sync.Once
	closeErr  error
}

// Host is one namespace of a lab, with one address.
type Host struct {
	// Name is the host's name in Config.Hosts.
	Name string
	// Index is its position in Config.Hosts.
	Index int
	// NS is its network namespace (for `ip netns exec NS` or `ip -n NS`).
	NS string
	// Addr is its IPv4 address, on eth0.
	Addr netip.Addr
	// Link is the name of the other end of its eth0, in the fabric namespace.
	Link string
}

// Link is one end of a link in the fabric namespace: a host's, or the root namespace's (Host nil).
type Link struct {
	Name string
	Host *Host
}

// Fabric joins the links of a lab inside its fabric namespace. Connect is called once every link exists
// (its ends are down and carry no address); Close before the namespaces are deleted.
type Fabric interface {
	Connect(l *Lab, links []Link) error
	Close() error
}

// Bridge is the default fabric: a Linux bridge, br0, in the fabric namespace, every link a port of it.
type Bridge struct{}

// Connect creates the bridge and adds every link to it.
func (Bridge) Connect(l *Lab, links []Link) error {
	if err := l.ipIn(l.fabricNS, "link", "add", "br0", "type", "bridge"); err != nil {
		return err
	}
	for _, k := range links {
		if err := l.ipIn(l.fabricNS, "link", "set", k.Name, "master", "br0", "up"); err != nil {
			return err
		}
	}
	return l.ipIn(l.fabricNS, "link", "set", "br0", "up")
}

// Close does nothing: the bridge goes with the fabric namespace.
func (Bridge) Close() error { return nil }

// Available says why this machine cannot run a lab, or returns nil.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("iproute2's ip command is not installed")
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		return fmt.Errorf("no network namespaces on this system: %w", err)
	}
	return nil
}

// ForTest creates a lab for a test, or skips the test if the machine cannot run one (Available); the lab
// is closed when the test ends. Register it before anything that runs in the lab, so that t.Cleanup
// (last in, first out) stops those first.
func ForTest(tb testing.TB, cfg Config) *Lab {
	tb.Helper()
	if err := Available(); err != nil {
		tb.Skipf("netlab: %v", err)
	}
	l, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := l.Close(); err != nil {
			tb.Errorf("netlab: %v", err)
		}
	})
	return l
}

var (
	seq       atomic.Int64
	hostName  = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	labName   = regexp.MustCompile(`^nl([0-9a-z]+)-([0-9]+)(-.+|r)$`)
	lockPath  = filepath.Join(os.TempDir(), "p2pbft-netlab.lock")
	procsWait = 10 * time.Second
)

// New creates a lab: the namespaces, their links and addresses, the fabric, and the root namespace's
// link. On error, whatever was created is removed again.
func New(cfg Config) (*Lab, error) {
	if err := Available(); err != nil {
		return nil, fmt.Errorf("netlab: %w", err)
	}
	if len(cfg.Hosts) == 0 || len(cfg.Hosts) > 250 {
		return nil, fmt.Errorf("netlab: %d hosts: want 1 to 250", len(cfg.Hosts))
	}
	seen := map[string]bool{}
	for _, h := range cfg.Hosts {
		if !hostName.MatchString(h) || h == "fabric" || h == Root || seen[h] {
			return nil, fmt.Errorf("netlab: host name %q: want lower-case letters, digits and '-', unique, not \"fabric\" or \"root\"", h)
		}
		seen[h] = true
	}
	if cfg.Fabric == nil {
		cfg.Fabric = Bridge{}
	}
	if !cfg.Base.IsValid() {
		cfg.Base = netip.MustParsePrefix("10.77.0.0/16")
	}
	if !cfg.Base.Addr().Is4() || cfg.Base.Bits() > 24 {
		return nil, fmt.Errorf("netlab: base %s: want an IPv4 prefix of /24 or wider", cfg.Base)
	}
	tag := "nl" + strconv.FormatInt(int64(os.Getpid()), 36) + "-" + strconv.FormatInt(seq.Add(1)-1, 10)
	l := &Lab{tag: tag, fabricNS: tag + "-fabric", rootLink: tag + "r", fabric: cfg.Fabric}
	if err := l.create(cfg); err != nil {
		if cerr := l.destroy(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, err
	}
	return l, nil
}

func (l *Lab) create(cfg Config) error {
	// Under the lock: the leftovers, the choice of a /24 and the root link that claims it.
	unlock, err := lockFile(lockPath)
	if err != nil {
		return err
	}
	err = func() error {
		defer unlock()
		if err := removeLeftovers(l.tag); err != nil {
			return err
		}
		subnet, err := freeSubnet(cfg.Base)
		if err != nil {
			return err
		}
		l.subnet = subnet
		l.gateway = subnet.Addr().Next()
		if err := run("ip", "netns", "add", l.fabricNS); err != nil {
			return err
		}
		if err := l.ipIn(l.fabricNS, "link", "set", "lo", "up"); err != nil {
			return err
		}
		if err := run("ip", "link", "add", l.rootLink, "type", "veth", "peer", "name", "root", "netns", l.fabricNS); err != nil {
			return err
		}
		if err := run("ip", "addr", "add", netip.PrefixFrom(l.gateway, 24).String(), "dev", l.rootLink); err != nil {
			return err
		}
		return run("ip", "link", "set", l.rootLink, "up")
	}()
	if err != nil {
		return err
	}
	links := []Link{{Name: "root"}}
	addr := l.gateway
	for i, name := range cfg.Hosts {
		addr = addr.Next()
		h := &Host{Name: name, Index: i, NS: l.tag + "-" + name, Addr: addr, Link: fmt.Sprintf("h%d", i)}
		l.hosts = append(l.hosts, h)
		if err := run("ip", "netns", "add", h.NS); err != nil {
			return err
		}
		steps := [][]string{
			{"-n", l.fabricNS, "link", "add", h.Link, "type", "veth", "peer", "name", "eth0", "netns", h.NS},
			{"-n", h.NS, "link", "set", "lo", "up"},
			{"-n", h.NS, "addr", "add", netip.PrefixFrom(h.Addr, 24).String(), "dev", "eth0"},
			{"-n", h.NS, "link", "set", "eth0", "up"},
		}
		for _, s := range steps {
			if err := run("ip", s...); err != nil {
				return err
			}
		}
		links = append(links, Link{Name: h.Link, Host: h})
	}
	if err := l.fabric.Connect(l, links); err != nil {
		return fmt.Errorf("netlab: fabric: %w", err)
	}
	return nil
}

// Close kills the processes still running in the lab's namespaces and deletes the lab. It is safe to
// call more than once.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() { l.closeErr = l.destroy() })
	return l.closeErr
}

func (l *Lab) destroy() error {
	var errs []error
	namespaces := []string{l.fabricNS}
	for _, h := range l.hosts {
		namespaces = append(namespaces, h.NS)
	}
	if l.fabric != nil {
		errs = append(errs, l.fabric.Close())
	}
	errs = append(errs, removeNamespaces(namespaces))
	errs = append(errs, removeLink(l.rootLink))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("netlab: close %s: %w", l.tag, err)
	}
	return nil
}

// Hosts returns the lab's hosts, in Config.Hosts order.
func (l *Lab) Hosts() []*Host { return l.hosts }

// Host returns the host of that name, or nil.
func (l *Lab) Host(name string) *Host {
	for _, h := range l.hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}

// Subnet returns the lab's /24.
func (l *Lab) Subnet() netip.Prefix { return l.subnet }

// Gateway returns the root namespace's address in the lab (.1): the test process's.
func (l *Lab) Gateway() netip.Addr { return l.gateway }

// Tag returns the prefix of the lab's names.
func (l *Lab) Tag() string { return l.tag }

// FabricNS returns the fabric namespace (where a Fabric works).
func (l *Lab) FabricNS() string { return l.fabricNS }

// FabricCommand returns a command that runs in the fabric namespace.
func (l *Lab) FabricCommand(name string, arg ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", l.fabricNS, name}, arg...)...)
}

// Command returns a command that runs name with arg in the host's namespace (`ip netns exec`, which
// execs it in place: the command's process is name's).
func (h *Host) Command(name string, arg ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", h.NS, name}, arg...)...)
}

// CommandContext is Command with a context that kills the process when it ends.
func (h *Host) CommandContext(ctx context.Context, name string, arg ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS, name}, arg...)...)
}

func (l *Lab) ipIn(ns string, arg ...string) error {
	return run("ip", append([]string{"-n", ns}, arg...)...)
}

func run(name string, arg ...string) error {
	out, err := exec.Command(name, arg...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("netlab: %s %s: %v: %s", name, strings.Join(arg, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func output(name string, arg ...string) (string, error) {
	out, err := exec.Command(name, arg...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, bytes.TrimSpace(ee.Stderr))
		}
		return "", fmt.Errorf("netlab: %s %s: %w", name, strings.Join(arg, " "), err)
	}
	return string(out), nil
}

// lockFile takes an exclusive lock on path (created if needed) and returns its release.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("netlab: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("netlab: lock %s: %w", path, err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// freeSubnet returns the first /24 of base that no address or route of the root namespace overlaps.
func freeSubnet(base netip.Prefix) (netip.Prefix, error) {
	addrs, err := output("ip", "-o", "-4", "addr", "show")
	if err != nil {
		return netip.Prefix{}, err
	}
	routes, err := output("ip", "-4", "route", "show")
	if err != nil {
		return netip.Prefix{}, err
	}
	var used []netip.Prefix
	for _, line := range strings.Split(addrs, "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "inet" {
				if p, err := netip.ParsePrefix(f[i+1]); err == nil {
					used = append(used, p.Masked())
				}
			}
		}
	}
	for _, line := range strings.Split(routes, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] == "default" {
			continue
		}
		if p, err := netip.ParsePrefix(f[0]); err == nil {
			used = append(used, p)
		} else if a, err := netip.ParseAddr(f[0]); err == nil {
			used = append(used, netip.PrefixFrom(a, 32))
		}
	}
	base = base.Masked()
	for p := netip.PrefixFrom(base.Addr(), 24); base.Contains(p.Addr()); {
		free := true
		for _, u := range used {
			if u.Overlaps(p) {
				free = false
				break
			}
		}
		if free {
			return p, nil
		}
		next := p.Addr().As4()
		if next[2] == 255 {
			break
		}
		next[2]++
		p = netip.PrefixFrom(netip.AddrFrom4(next), 24)
	}
	return netip.Prefix{}, fmt.Errorf("netlab: no free /24 left in %s", base)
}

// removeLeftovers deletes the namespaces and root interfaces of labs whose process is gone, and
// anything that already bears the names of the lab being created (tag).
func removeLeftovers(tag string) error {
	stale := func(name string) bool {
		m := labName.FindStringSubmatch(name)
		if m == nil {
			return false
		}
		if strings.HasPrefix(name, tag+"-") || name == tag+"r" {
			return true
		}
		pid, err := strconv.ParseInt(m[1], 36, 64)
		if err != nil || pid <= 0 || pid > 1<<22 {
			return false
		}
		return !processExists(int(pid))
	}
	list, err := output("ip", "netns", "list")
	if err != nil {
		return err
	}
	var namespaces []string
	for _, line := range strings.Split(list, "\n") {
		if f := strings.Fields(line); len(f) > 0 && stale(f[0]) {
			namespaces = append(namespaces, f[0])
		}
	}
	links, err := output("ip", "-o", "link", "show")
	if err != nil {
		return err
	}
	var errs []error
	errs = append(errs, removeNamespaces(namespaces))
	for _, line := range strings.Split(links, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if stale(name) {
			errs = append(errs, removeLink(name))
		}
	}
	return errors.Join(errs...)
}

func processExists(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// removeNamespaces kills the processes in the namespaces (SIGKILL, by PID), waits until none is left,
// and deletes the namespaces. Namespaces that do not exist are no error.
func removeNamespaces(names []string) error {
	exists := func(ns string) bool {
		_, err := os.Stat(filepath.Join("/run/netns", ns))
		return err == nil
	}
	var live []string
	for _, ns := range names {
		if exists(ns) {
			live = append(live, ns)
		}
	}
	deadline := time.Now().Add(procsWait)
	for {
		var pids []int
		for _, ns := range live {
			out, err := output("ip", "netns", "pids", ns)
			if err != nil {
				continue
			}
			sc := bufio.NewScanner(strings.NewReader(out))
			for sc.Scan() {
				if pid, err := strconv.Atoi(strings.TrimSpace(sc.Text())); err == nil && pid > 1 && pid != os.Getpid() {
					pids = append(pids, pid)
				}
			}
		}
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v still run in %v after SIGKILL", pids, live)
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond) // poll the kill's effect; the deadline bounds the wait
	}
	var errs []error
	for _, ns := range live {
		if err := run("ip", "netns", "del", ns); err != nil && exists(ns) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeLink deletes an interface of the root namespace; one that does not exist is no error.
func removeLink(name string) error {
	if _, err := os.Stat(filepath.Join("/sys/class/net", name)); err != nil {
		return nil
	}
	if err := run("ip", "link", "del", name); err != nil {
		if _, serr := os.Stat(filepath.Join("/sys/class/net", name)); serr != nil {
			return nil
		}
		return err
	}
	return nil
}
