package netlab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// port is one link end in the fabric namespace: an AF_PACKET socket bound to it, and the frames due
// there.
type port struct {
	name string
	f    *os.File
	rc   syscall.RawConn
	q    *queue
}

// Connect opens a socket on every link end in the fabric namespace and starts forwarding. Called by
// New once every link exists.
func (e *Emulator) Connect(l *Lab, links []Link) error {
	names := make([]string, len(links))
	addrs := make([]netip.Addr, len(links))
	for k, ln := range links {
		if ln.Host == nil {
			names[k], addrs[k] = Root, l.Gateway()
		} else {
			names[k], addrs[k] = ln.Host.Name, ln.Host.Addr
		}
	}
	if err := e.init(names, addrs); err != nil {
		return err
	}
	// The hosts' ends (and the root namespace's) must send frames the size of the MTU with their
	// checksums: see the package documentation.
	for _, h := range l.Hosts() {
		if err := h.Do(func() error { return disableOffloads("eth0") }); err != nil {
			return fmt.Errorf("host %s: %w", h.Name, err)
		}
	}
	if err := disableOffloads(l.rootLink); err != nil {
		return err
	}
	for _, ln := range links {
		if err := l.ipIn(l.fabricNS, "link", "set", ln.Name, "up"); err != nil {
			return err
		}
	}
	var ports []*port
	err := inNamespace(l.fabricNS, func() error {
		for _, ln := range links {
			if err := disableOffloads(ln.Name); err != nil {
				return err
			}
			p, err := openPort(ln.Name)
			if err != nil {
				return err
			}
			ports = append(ports, p)
		}
		return nil
	})
	e.mu.Lock()
	e.ports = ports
	e.mu.Unlock()
	if err != nil {
		return err
	}
	for k := range ports {
		e.wg.Add(2)
		go e.read(k)
		go e.deliver(k)
	}
	return nil
}

// Close stops forwarding and closes the sockets. The lab calls it before it deletes the namespaces.
func (e *Emulator) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	ports := e.ports
	e.mu.Unlock()
	close(e.done)
	var errs []error
	for _, p := range ports {
		errs = append(errs, p.f.Close())
	}
	e.wg.Wait()
	for _, p := range ports {
		p.q.drain()
	}
	return errors.Join(errs...)
}

func (e *Emulator) stopped() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

// read forwards the frames that arrive on port k: ARP at once, IPv4 onto the link to its destination's
// port (every other port for a broadcast), the rest nowhere.
func (e *Emulator) read(k int) {
	defer e.wg.Done()
	p := e.ports[k]
	buf := bufPool.Get().(*[bufSize]byte)
	defer func() { bufPool.Put(buf) }()
	for {
		n, err := p.recv(buf[:])
		if err != nil {
			if e.stopped() {
				return
			}
			e.readErrors.Add(1)
			time.Sleep(time.Millisecond) // an unexpected error: do not spin on it
			continue
		}
		if n < 0 {
			continue // a frame this port sent
		}
		if n > bufSize {
			e.oversize.Add(1)
			continue
		}
		dst, arp, ok := e.route(buf[:n])
		switch {
		case !ok:
			e.other.Add(1)
			continue
		case arp:
			e.arp.Add(1)
			if dst >= 0 && dst != k {
				e.ports[dst].write(buf[:n])
				continue
			}
			for j, q := range e.ports {
				if j != k {
					q.write(buf[:n])
				}
			}
			continue
		case dst == k:
			continue
		}
		now := e.now()
		if dst >= 0 {
			l := e.links[k][dst]
			if at, cuts, ok := l.enter(n, now); ok {
				e.ports[dst].q.add(frame{at: at, buf: buf, n: n, link: l, cuts: cuts})
				buf = bufPool.Get().(*[bufSize]byte)
			}
			continue
		}
		for j := range e.ports {
			if j == k {
				continue
			}
			l := e.links[k][j]
			if at, cuts, ok := l.enter(n, now); ok {
				c := bufPool.Get().(*[bufSize]byte)
				copy(c[:n], buf[:n])
				e.ports[j].q.add(frame{at: at, buf: c, n: n, link: l, cuts: cuts})
			}
		}
	}
}

// deliver writes the frames due at port k when they are due.
func (e *Emulator) deliver(k int) {
	defer e.wg.Done()
	p := e.ports[k]
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var batch []frame
	for {
		var next int64
		batch, next = p.q.due(e.now(), batch[:0])
		for i := range batch {
			f := &batch[i]
			cut := f.link.cuts.Load() != f.cuts
			failed := false
			if !cut {
				failed = p.write(f.buf[:f.n]) != nil
			}
			f.link.count(!cut && !failed, cut, failed)
			bufPool.Put(f.buf)
			*f = frame{}
		}
		if next >= 0 {
			timer.Reset(time.Duration(next - e.now()))
		}
		select {
		case <-e.done:
			return
		case <-p.q.wake:
		case <-timer.C:
		}
	}
}

// openPort opens an AF_PACKET socket on interface name of the calling thread's network namespace.
func openPort(name string) (*port, error) {
	// Protocol 0 until bound: the socket receives nothing from the other interfaces meanwhile.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("netlab: packet socket: %w", err)
	}
	fail := func(what string, err error) (*port, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("netlab: packet socket on %s: %s: %w", name, what, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fail("interface name", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return fail("interface index", err)
	}
	index := int(ifr.Uint32())
	// Frames this socket (or the fabric namespace's own stack) sends are not read back.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil && !errors.Is(err, unix.ENOPROTOOPT) {
		return fail("PACKET_IGNORE_OUTGOING", err)
	}
	// Room for bursts: 4 MiB each way (root may exceed the system's maximum).
	for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[0], 4<<20); err != nil {
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[1], 4<<20)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: index}); err != nil {
		return fail("bind", err)
	}
	f := os.NewFile(uintptr(fd), "netlab-"+name)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("netlab: packet socket on %s: %w", name, err)
	}
	return &port{name: name, f: f, rc: rc, q: newQueue()}, nil
}

// recv reads one frame into b: its full length (above len(b) if it was truncated), or -1 for a frame
// sent from this side (on a kernel without PACKET_IGNORE_OUTGOING).
func (p *port) recv(b []byte) (int, error) {
	var n int
	var rerr error
	err := p.rc.Read(func(fd uintptr) bool {
		var from unix.Sockaddr
		n, from, rerr = unix.Recvfrom(int(fd), b, unix.MSG_TRUNC)
		if rerr == unix.EAGAIN || rerr == unix.EINTR {
			return false
		}
		if sa, ok := from.(*unix.SockaddrLinklayer); ok && sa.Pkttype == unix.PACKET_OUTGOING {
			n = -1
		}
		return true
	})
	if err != nil {
		return 0, err
	}
	return n, rerr
}

// write sends one frame out of the port.
func (p *port) write(b []byte) error {
	var werr error
	err := p.rc.Write(func(fd uintptr) bool {
		_, werr = unix.Write(int(fd), b)
		return werr != unix.EAGAIN && werr != unix.EINTR
	})
	if err != nil {
		return err
	}
	return werr
}

func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// inNamespace runs f on an OS thread that is in network namespace ns (a name of `ip netns`) for the
// duration: the sockets f creates belong to ns, and stay there when used from other threads later.
func inNamespace(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		restored := true
		err := func() error {
			self, err := os.Open("/proc/thread-self/ns/net")
			if err != nil {
				return fmt.Errorf("netlab: %w", err)
			}
			defer self.Close()
			target, err := os.Open(filepath.Join("/run/netns", ns))
			if err != nil {
				return fmt.Errorf("netlab: namespace %s: %w", ns, err)
			}
			defer target.Close()
			if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
				return fmt.Errorf("netlab: enter namespace %s: %w", ns, err)
			}
			ferr := f()
			if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
				restored = false
				return errors.Join(ferr, fmt.Errorf("netlab: leave namespace %s: %w", ns, err))
			}
			return ferr
		}()
		if restored {
			runtime.UnlockOSThread()
		} // else the thread ends with this goroutine, still locked: no other goroutine runs in ns
		errc <- err
	}()
	return <-errc
}

// Do runs f on an OS thread in the host's network namespace, and waits for it: the sockets f creates
// (net.Listen, net.ListenPacket, net.Dial with an IP address) belong to the host, as if a process of
// the host had opened them, and keep working from any goroutine afterwards. f should not start
// goroutines: they do not run in the host's namespace.
func (h *Host) Do(f func() error) error { return inNamespace(h.NS, f) }

// ethtoolValue is struct ethtool_value of linux/ethtool.h.
type ethtoolValue struct{ cmd, data uint32 }

// ifreqData is struct ifreq with ifr_data, a pointer.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// disableOffloads turns off, on interface name of the calling thread's namespace, what would make it
// hand over frames larger than the MTU or without their checksums: checksum offload (and with it TCP
// and UDP segmentation offload), generic segmentation and receive offload. Features the interface
// cannot change are left as they are.
func disableOffloads(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("netlab: ethtool socket: %w", err)
	}
	defer unix.Close(fd)
	for _, cmd := range []uint32{unix.ETHTOOL_STXCSUM, unix.ETHTOOL_STSO, unix.ETHTOOL_SGSO, unix.ETHTOOL_SGRO} {
		v := &ethtoolValue{cmd: cmd}
		ifr := &ifreqData{data: unsafe.Pointer(v)}
		copy(ifr.name[:unix.IFNAMSIZ-1], name)
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(ifr)))
		runtime.KeepAlive(ifr)
		runtime.KeepAlive(v)
		if errno != 0 && errno != unix.EOPNOTSUPP {
			return fmt.Errorf("netlab: ethtool command %#x on %s: %w", cmd, name, errno)
		}
	}
	return nil
}
