package netlab

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The emulator's bookkeeping, without a lab (no root needed): link properties, groups, the matrix, what
// a link does to packets (bandwidth, order, loss), the frame heap and routing.
func TestEmulatorLinks(t *testing.T) {
	e := NewEmulator(EmulatorConfig{Seed: 7})
	if err := e.SetLink("a", "b", LinkProps{}); err == nil || !strings.Contains(err.Error(), "not connected") {
		t.Fatalf("SetLink before the lab: %v", err)
	}
	addr := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	if err := e.init([]string{Root, "a", "b", "c"}, []netip.Addr{addr("10.9.9.1"), addr("10.9.9.2"), addr("10.9.9.3"), addr("10.9.9.4")}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		from, to string
		p        LinkProps
		want     string
	}{
		{"a", "x", LinkProps{}, `no host "x"`},
		{"a", "a", LinkProps{}, "to itself"},
		{"a", "b", LinkProps{Delay: -1}, "negative"},
		{"a", "b", LinkProps{Loss: 1.5}, "loss 1.5"},
		{"a", "b", LinkProps{Bandwidth: 100}, "at least 8kbit"},
	} {
		if err := e.SetLink(tc.from, tc.to, tc.p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("SetLink(%s, %s, %+v): %v, want %q", tc.from, tc.to, tc.p, err, tc.want)
		}
	}
	if err := e.SetLink("a", "b", LinkProps{Delay: 5 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if err := e.Cut("a", "b"); err != nil {
		t.Fatal(err)
	}
	if p, _ := e.Link("a", "b"); p.Delay != 5*time.Millisecond || !p.Cut {
		t.Fatalf("a->b after the cut: %+v", p)
	}
	if p, _ := e.Link("b", "a"); p != (LinkProps{}) {
		t.Fatalf("b->a changed with a->b: %+v", p)
	}
	e.HealAll()
	if p, _ := e.Link("a", "b"); p.Cut || p.Delay != 5*time.Millisecond {
		t.Fatalf("a->b after HealAll: %+v", p)
	}

	// A matrix: the reverse pair stands in for a missing one; within a region is its own pair.
	m := Matrix{
		Regions: map[string][]string{"eu": {Root, "a"}, "us": {"b"}, "ap": {"c"}},
		Paths: map[[2]string]LinkProps{
			{"eu", "us"}: {Delay: 20 * time.Millisecond},
			{"us", "ap"}: {Delay: 80 * time.Millisecond, Loss: 0.01},
			{"ap", "us"}: {Delay: 90 * time.Millisecond},
			{"eu", "eu"}: {Delay: time.Millisecond},
		},
	}
	if err := e.Apply(m); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		from, to string
		want     LinkProps
	}{
		{"a", "b", LinkProps{Delay: 20 * time.Millisecond}},
		{"b", Root, LinkProps{Delay: 20 * time.Millisecond}},
		{"b", "c", LinkProps{Delay: 80 * time.Millisecond, Loss: 0.01}},
		{"c", "b", LinkProps{Delay: 90 * time.Millisecond}},
		{Root, "a", LinkProps{Delay: time.Millisecond}},
		{"a", "c", LinkProps{}},
	} {
		if p, _ := e.Link(tc.from, tc.to); p != tc.want {
			t.Errorf("%s->%s: %+v, want %+v", tc.from, tc.to, p, tc.want)
		}
	}
	bad := Matrix{Regions: map[string][]string{"x": {"a"}, "y": {"a"}}, Paths: map[[2]string]LinkProps{{"x", "z"}: {}}}
	if err := e.Apply(bad); err == nil || !strings.Contains(err.Error(), "regions x and y") || !strings.Contains(err.Error(), `no region "z"`) {
		t.Fatalf("bad matrix: %v", err)
	}

	// Bandwidth: 8 Mbit/s sends 1000 bytes in 1 ms; packets queue behind each other; the queue is bounded.
	l := &link{props: LinkProps{Bandwidth: 8_000_000, Delay: 10 * time.Millisecond, Queue: 3000}}
	ms := int64(time.Millisecond)
	for k, want := range []int64{11, 12, 13} {
		at, _, ok := l.enter(1000, 0)
		if !ok || at != want*ms {
			t.Fatalf("packet %d due at %v (%v), want %d ms", k, time.Duration(at), ok, want)
		}
	}
	if _, _, ok := l.enter(1000, 0); ok || l.stats.Queue != 1 {
		t.Fatalf("a fourth packet fits a 3000-byte queue holding three (%+v)", l.stats)
	}
	if at, _, ok := l.enter(1000, 10*ms); !ok || at != 21*ms {
		t.Fatalf("a packet on an idle link is due at %v", time.Duration(at))
	}
	// Jitter without Reorder never lets a packet overtake; with it, some do.
	for _, reorder := range []bool{false, true} {
		l := &link{props: LinkProps{Delay: 20 * time.Millisecond, Jitter: 10 * time.Millisecond, Reorder: reorder}, rng: e.links[1][2].rng}
		var last int64
		overtaken := 0
		for k := range 1000 {
			now := int64(k) * 100_000 // a packet every 0.1 ms
			at, _, _ := l.enter(100, now)
			early, late := now+10*ms, now+30*ms
			if !reorder {
				late = max(late, last) // held behind an earlier packet
			}
			if at < early || at > late {
				t.Fatalf("reorder %v: packet %d due %v after it was sent", reorder, k, time.Duration(at-now))
			}
			if at < last {
				overtaken++
			}
			last = max(last, at)
		}
		if (overtaken > 0) != reorder {
			t.Errorf("reorder %v: %d packets overtaken", reorder, overtaken)
		}
	}
	// Loss draws from the link's own seeded generator: the same seed, the same fate.
	fates := func() []bool {
		e := NewEmulator(EmulatorConfig{Seed: 42})
		e.init([]string{Root, "a"}, nil)
		e.SetLink(Root, "a", LinkProps{Loss: 0.3})
		var out []bool
		for range 200 {
			_, _, ok := e.links[0][1].enter(100, 0)
			out = append(out, ok)
		}
		return out
	}
	if f1, f2 := fates(), fates(); !slices.Equal(f1, f2) {
		t.Fatal("two emulators with the same seed lost different packets")
	}

	// The heap gives frames by due time, then by arrival.
	var h frameHeap
	for k, at := range []int64{5, 1, 5, 3, 1, 9} {
		h.push(frame{at: at, seq: uint64(k)})
	}
	var got []string
	for len(h) > 0 {
		f := h.pop()
		got = append(got, fmt.Sprintf("%d/%d", f.at, f.seq))
	}
	if strings.Join(got, " ") != "1/1 1/4 3/3 5/0 5/2 9/5" {
		t.Fatalf("heap order %v", got)
	}

	// Routing: IPv4 by destination address, ARP by target address, broadcast to all, the rest nowhere.
	ipv4 := func(dst string) []byte {
		b := make([]byte, 34)
		b[12], b[13] = 0x08, 0x00
		a := netip.MustParseAddr(dst).As4()
		copy(b[30:], a[:])
		return b
	}
	arp := make([]byte, 42)
	arp[12], arp[13] = 0x08, 0x06
	copy(arp[38:], []byte{10, 9, 9, 3})
	ipv6 := make([]byte, 60)
	ipv6[12], ipv6[13] = 0x86, 0xdd
	for _, tc := range []struct {
		frame        []byte
		dst          int
		arp, forward bool
	}{
		{ipv4("10.9.9.4"), 3, false, true},
		{ipv4("10.9.9.1"), 0, false, true},
		{ipv4("10.9.9.255"), -1, false, true},
		{arp, 2, true, true},
		{ipv6, 0, false, false},
		{ipv4("10.9.9.4")[:20], 0, false, false},
	} {
		dst, isARP, fwd := e.route(tc.frame)
		if dst != tc.dst || isARP != tc.arp || fwd != tc.forward {
			t.Errorf("route(% x): %d %v %v, want %d %v %v", tc.frame[12:14], dst, isARP, fwd, tc.dst, tc.arp, tc.forward)
		}
	}
}

func TestParseBandwidth(t *testing.T) {
	for s, want := range map[string]int64{"10mbit": 10_000_000, "512kbit": 512_000, "1gbit": 1e9, "2mbps": 16_000_000,
		"1500": 1500, "0": 0, " 1.5 Mbit ": 1_500_000, "100bit": 100, "3kbps": 24_000} {
		got, err := ParseBandwidth(s)
		if err != nil || got != want {
			t.Errorf("ParseBandwidth(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "fast", "-1mbit", "10 furlongs", "5000gbit"} {
		if _, err := ParseBandwidth(s); err == nil {
			t.Errorf("ParseBandwidth(%q) accepted", s)
		}
	}
	for _, v := range []int64{10_000_000, 512_000, 1e9, 1500, 0} {
		if got, _ := ParseBandwidth(FormatBandwidth(v)); got != v {
			t.Errorf("FormatBandwidth(%d) = %q reads back as %d", v, FormatBandwidth(v), got)
		}
	}
}

// emuLab is a lab of hosts a and b (and the test process, Root) joined by an emulator.
func emuLab(t *testing.T, seed uint64) (*Lab, *Emulator) {
	t.Helper()
	if err := Available(); err != nil {
		t.Skipf("netlab: %v", err)
	}
	e := NewEmulator(EmulatorConfig{Seed: seed})
	l := ForTest(t, Config{Hosts: []string{"a", "b"}, Fabric: e})
	t.Cleanup(func() {
		tot := e.Totals()
		if tot.Oversize > 0 || tot.ReadErrors > 0 {
			t.Errorf("emulator: %+v (oversize frames: an offload left on?)", tot)
		}
	})
	return l, e
}

func noErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// udpOn opens a UDP socket on host h (the test process's own namespace for nil) at port.
func udpOn(t *testing.T, l *Lab, h *Host, port int) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	open := func() error {
		addr := l.Gateway()
		if h != nil {
			addr = h.Addr
		}
		var err error
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, uint16(port))))
		return err
	}
	var err error
	if h == nil {
		err = open()
	} else {
		err = h.Do(open)
	}
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadBuffer(4 << 20)
	t.Cleanup(func() { c.Close() })
	return c
}

// tcpListen listens on host h at port and accepts connections into the returned channel.
func tcpListen(t *testing.T, h *Host, port int) <-chan net.Conn {
	t.Helper()
	var ln net.Listener
	if err := h.Do(func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(h.Addr, uint16(port)).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	out := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			out <- c
		}
	}()
	return out
}

// tcpDial connects from host h (the test process for nil) to addr.
func tcpDial(h *Host, addr netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	if h == nil {
		return net.DialTimeout("tcp4", addr.String(), timeout)
	}
	var c net.Conn
	err := h.Do(func() (err error) {
		c, err = net.DialTimeout("tcp4", addr.String(), timeout)
		return err
	})
	return c, err
}

// echo answers every datagram on c with itself until c is closed.
func echo(c *net.UDPConn) {
	buf := make([]byte, 2048)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		c.WriteToUDPAddrPort(buf[:n], from)
	}
}

// pings sends count datagrams from c to dst one after the other, each after the previous echo (or a
// timeout), and returns the round-trip times of those echoed.
func pings(t *testing.T, c *net.UDPConn, dst netip.AddrPort, count int, timeout time.Duration) []time.Duration {
	t.Helper()
	rtts, err := pingsErr(c, dst, count, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return rtts
}

func pingsErr(c *net.UDPConn, dst netip.AddrPort, count int, timeout time.Duration) ([]time.Duration, error) {
	var rtts []time.Duration
	buf := make([]byte, 64)
	for k := range count {
		msg := binary.BigEndian.AppendUint64(nil, uint64(k)|1<<63)
		start := time.Now()
		if _, err := c.WriteToUDPAddrPort(msg, dst); err != nil {
			return rtts, err
		}
		c.SetReadDeadline(start.Add(timeout))
		for {
			n, _, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				break // timed out: lost
			}
			if n == 8 && bytes.Equal(buf[:8], msg) {
				rtts = append(rtts, time.Since(start))
				break
			}
		}
	}
	return rtts, nil
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// How long a delivery may take beyond what the emulator adds on a loaded machine: scheduling of the
// emulator's goroutines and of the test's, timers firing late.
const slack = 40 * time.Millisecond

// Without properties the emulator forwards TCP and UDP between hosts and from the test process, and
// moves a bulk transfer at several MB/s, every frame within the MTU (the offloads are off).
func TestEmulatorForwards(t *testing.T) {
	l, e := emuLab(t, 1)
	a, b := l.Host("a"), l.Host("b")
	accepted := tcpListen(t, b, 7001)
	go func() {
		for c := range accepted {
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if strings.HasPrefix(line, "bulk") {
					// Read everything, answer with its length and hash.
					h := sha256.New()
					n, _ := io.Copy(h, br)
					fmt.Fprintf(c, "%d %x\n", n, h.Sum(nil))
					return
				}
				fmt.Fprintf(c, "%s says %s to %s", b.Addr, strings.TrimSpace(line), c.RemoteAddr())
			}()
		}
	}()
	dst := netip.AddrPortFrom(b.Addr, 7001)
	for _, from := range []*Host{a, nil} {
		c, err := tcpDial(from, dst, 5*time.Second)
		if err != nil {
			t.Fatalf("dial from %v: %v", from, err)
		}
		fmt.Fprintf(c, "hello\n")
		c.SetDeadline(time.Now().Add(5 * time.Second))
		got, _ := io.ReadAll(c)
		c.Close()
		want := l.Gateway()
		if from != nil {
			want = from.Addr
		}
		if !strings.HasPrefix(string(got), b.Addr.String()+" says hello to "+want.String()+":") {
			t.Fatalf("answer %q", got)
		}
	}

	// Bulk TCP from a to b: 16 MB arrive intact.
	c, err := tcpDial(a, dst, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const size = 16 << 20
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7 + i>>11)
	}
	var before, after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	start := time.Now()
	fmt.Fprintf(c, "bulk\n")
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	elapsed := time.Since(start)
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	if err != nil {
		t.Fatalf("bulk transfer: %v", err)
	}
	if want := fmt.Sprintf("%d %x\n", size, sha256.Sum256(data)); line != want {
		t.Fatalf("bulk transfer: b got %q, want %q", line, want)
	}
	cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
	st := must[LinkStats](t)(e.Stats("a", "b"))
	rate := float64(size) / elapsed.Seconds() / 1e6
	t.Logf("16 MB from a to b in %s: %.1f MB/s, %d frames (%.0f/s); this process used %s of CPU (%.0f%% of a core; the hosts' TCP stacks run in it too)",
		elapsed.Round(time.Millisecond), rate, st.Packets, float64(st.Packets)/elapsed.Seconds(), cpu.Round(time.Millisecond), 100*cpu.Seconds()/elapsed.Seconds())
	if rate < 2 {
		t.Errorf("bulk transfer at %.1f MB/s: want at least a few MB/s", rate)
	}
	if st.Lost+st.Cut+st.Queue+st.Errors > 0 || st.Delivered != st.Packets {
		t.Errorf("a->b stats %+v: every frame must be delivered", st)
	}

	// UDP both ways.
	ua, ub := udpOn(t, l, a, 7002), udpOn(t, l, b, 7002)
	go echo(ub)
	if rtts := pings(t, ua, netip.AddrPortFrom(b.Addr, 7002), 20, 2*time.Second); len(rtts) != 20 {
		t.Fatalf("%d of 20 UDP pings answered", len(rtts))
	}
	// 10,000 small datagrams a second for two seconds, a->b: all arrive; the CPU this process used is
	// logged (the sender's and receiver's system calls and the hosts' stacks included).
	ur := udpOn(t, l, b, 7005)
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	start = time.Now()
	got := stream(t, ua, ur, netip.AddrPortFrom(b.Addr, 7005), 20000, 10, time.Second)
	elapsed = time.Since(start)
	if len(got) < 20000 {
		elapsed -= time.Second // stream waited one idle second for the missing ones
	}
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu = time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
	t.Logf("20,000 datagrams of 200 bytes from a to b in %s (%.0f/s): %d received; this process used %s of CPU (%.0f%% of a core)",
		elapsed.Round(time.Millisecond), 20000/elapsed.Seconds(), len(got), cpu.Round(time.Millisecond), 100*cpu.Seconds()/elapsed.Seconds())
	if len(got) < 19800 {
		t.Errorf("%d of 20,000 datagrams received", len(got))
	}
	if tot := e.Totals(); tot.ARP == 0 {
		t.Errorf("no ARP frame seen: %+v", tot)
	}
}

// A round trip takes the delays of both directions (and no less), a TCP connection one round trip to
// set up; a delay changed while packets flow applies to the next ones; a latency matrix sets the links
// of the test process (Root) too.
func TestEmulatorDelay(t *testing.T) {
	l, e := emuLab(t, 1)
	a, b := l.Host("a"), l.Host("b")
	ua, ub := udpOn(t, l, a, 7002), udpOn(t, l, b, 7002)
	go echo(ub)
	bAddr := netip.AddrPortFrom(b.Addr, 7002)
	// Resolve the neighbours first (ARP is not delayed anyway).
	pings(t, ua, bAddr, 1, 2*time.Second)

	check := func(what string, rtts []time.Duration, count int, want time.Duration) {
		t.Helper()
		if len(rtts) != count {
			t.Fatalf("%s: %d of %d pings answered", what, len(rtts), count)
		}
		lo, mid := slices.Min(rtts), median(rtts)
		t.Logf("%s: configured round trip %s, measured min %s median %s max %s", what, want, lo.Round(10*time.Microsecond),
			mid.Round(10*time.Microsecond), slices.Max(rtts).Round(10*time.Microsecond))
		if lo < want {
			t.Errorf("%s: a round trip of %s, below the configured %s", what, lo, want)
		}
		if mid > want+slack {
			t.Errorf("%s: median round trip %s, above the configured %s + %s", what, mid, want, slack)
		}
	}
	noErr(t, e.SetLink("a", "b", LinkProps{Delay: 30 * time.Millisecond}))
	noErr(t, e.SetLink("b", "a", LinkProps{Delay: 20 * time.Millisecond}))
	check("a<->b, 30 ms + 20 ms", pings(t, ua, bAddr, 30, 2*time.Second), 30, 50*time.Millisecond)

	accepted := tcpListen(t, b, 7003)
	start := time.Now()
	c, err := tcpDial(a, netip.AddrPortFrom(b.Addr, 7003), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	setup := time.Since(start)
	c.Close()
	(<-accepted).Close()
	if setup < 50*time.Millisecond || setup > 50*time.Millisecond+slack {
		t.Errorf("TCP connection set up in %s: want one round trip, 50 ms", setup)
	} else {
		t.Logf("TCP connection a->b set up in %s", setup.Round(10*time.Microsecond))
	}

	// Change a->b while a stream of pings flows: the later ones take the new delay.
	done := make(chan []time.Duration)
	go func() {
		rtts, _ := pingsErr(ua, bAddr, 40, 2*time.Second)
		done <- rtts
	}()
	time.Sleep(500 * time.Millisecond)
	noErr(t, e.UpdateLink("a", "b", func(p *LinkProps) { p.Delay = 80 * time.Millisecond }))
	rtts := <-done
	if len(rtts) != 40 {
		t.Fatalf("%d of 40 pings answered across the change", len(rtts))
	}
	if first, last := rtts[0], rtts[len(rtts)-1]; first > 50*time.Millisecond+slack || last < 100*time.Millisecond {
		t.Errorf("across the change of a->b from 30 to 80 ms: first round trip %s, last %s", first, last)
	}

	// A matrix: the test process in region x, both hosts in y, 10 ms apart, 2 ms within y.
	m := Matrix{Regions: map[string][]string{"x": {Root}, "y": {"a", "b"}},
		Paths: map[[2]string]LinkProps{{"x", "y"}: {Delay: 10 * time.Millisecond}, {"y", "y"}: {Delay: 2 * time.Millisecond}}}
	if err := e.Apply(m); err != nil {
		t.Fatal(err)
	}
	ur := udpOn(t, l, nil, 7004)
	pings(t, ur, bAddr, 1, 2*time.Second)
	check("root<->b, 10 ms each way", pings(t, ur, bAddr, 20, 2*time.Second), 20, 20*time.Millisecond)
	check("a<->b within a region, 2 ms each way", pings(t, ua, bAddr, 20, 2*time.Second), 20, 4*time.Millisecond)
}

// stream sends count numbered datagrams from c to dst, a burst of burst every millisecond, and returns
// the numbers the receiver r got, in order of arrival, once wait has passed without one.
func stream(t *testing.T, c, r *net.UDPConn, dst netip.AddrPort, count, burst int, wait time.Duration) []int {
	t.Helper()
	var got []int
	var sent atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		// The idle gap counts only once everything is sent: on a loaded machine the first datagram may
		// take longer than the gap to come through the emulator. The whole stream is bounded all the same.
		limit := time.Now().Add(time.Minute)
		for len(got) < count && time.Now().Before(limit) {
			r.SetReadDeadline(time.Now().Add(wait))
			n, _, err := r.ReadFromUDPAddrPort(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() && !sent.Load() {
					continue
				}
				return
			}
			if n >= 8 {
				got = append(got, int(binary.BigEndian.Uint64(buf)))
			}
		}
	}()
	msg := make([]byte, 200)
	for k := range count {
		binary.BigEndian.PutUint64(msg, uint64(k))
		if _, err := c.WriteToUDPAddrPort(msg, dst); err != nil {
			t.Fatal(err)
		}
		if k%burst == burst-1 {
			time.Sleep(time.Millisecond)
		}
	}
	sent.Store(true)
	wg.Wait()
	return got
}

// warmUp sends one datagram and waits for it (the first one waits for ARP), so that nothing from it is
// still in flight when a test starts counting.
func warmUp(t *testing.T, c, r *net.UDPConn, dst netip.AddrPort) {
	t.Helper()
	if got := stream(t, c, r, dst, 1, 1, 30*time.Second); len(got) != 1 {
		t.Fatalf("the warm-up datagram to %s did not arrive in 30 s", dst)
	}
}

func inversions(seq []int) int {
	n := 0
	for i := 1; i < len(seq); i++ {
		if seq[i] < seq[i-1] {
			n++
		}
	}
	return n
}

// Jitter keeps a link's packets in order unless reordering is asked for.
func TestEmulatorJitter(t *testing.T) {
	l, e := emuLab(t, 1)
	a, b := l.Host("a"), l.Host("b")
	ua, ub := udpOn(t, l, a, 7002), udpOn(t, l, b, 7002)
	bAddr := netip.AddrPortFrom(b.Addr, 7002)
	warmUp(t, ua, ub, bAddr)
	for _, reorder := range []bool{false, true} {
		noErr(t, e.SetLink("a", "b", LinkProps{Delay: 20 * time.Millisecond, Jitter: 10 * time.Millisecond, Reorder: reorder}))
		got := stream(t, ua, ub, bAddr, 500, 4, 500*time.Millisecond)
		inv := inversions(got)
		t.Logf("reorder %v: %d of 500 received, %d out of order", reorder, len(got), inv)
		if len(got) != 500 {
			t.Errorf("reorder %v: %d of 500 datagrams received", reorder, len(got))
		}
		if reorder != (inv > 0) {
			t.Errorf("reorder %v: %d datagrams arrived out of order", reorder, inv)
		}
	}
}

// Loss drops each packet with the configured probability: over 4,000 datagrams the count lost is
// within 5 standard deviations of the mean (the draws are seeded, so a run repeats itself); the other
// direction loses none.
func TestEmulatorLoss(t *testing.T) {
	l, e := emuLab(t, 3)
	a, b := l.Host("a"), l.Host("b")
	ua, ub := udpOn(t, l, a, 7002), udpOn(t, l, b, 7002)
	aAddr, bAddr := netip.AddrPortFrom(a.Addr, 7002), netip.AddrPortFrom(b.Addr, 7002)
	warmUp(t, ua, ub, bAddr)
	warmUp(t, ub, ua, aAddr)
	const count, p = 4000, 0.1
	noErr(t, e.SetLink("a", "b", LinkProps{Loss: p, Delay: time.Millisecond}))
	before := must[LinkStats](t)(e.Stats("a", "b"))
	got := stream(t, ua, ub, bAddr, count, 20, time.Second)
	st := must[LinkStats](t)(e.Stats("a", "b"))
	sent, lost, delivered := st.Packets-before.Packets, st.Lost-before.Lost, st.Delivered-before.Delivered
	mean, sd := count*p, math.Sqrt(count*p*(1-p))
	t.Logf("a->b at %.0f%% loss: %d sent, %d lost by the emulator (expected %.0f ± %.0f), %d delivered, %d received",
		100*p, sent, lost, mean, sd, delivered, len(got))
	if sent != count {
		t.Errorf("the link a->b saw %d datagrams, %d were sent", sent, count)
	}
	if math.Abs(float64(lost)-mean) > 5*sd {
		t.Errorf("%d of %d lost: outside %.0f ± 5 x %.1f", lost, count, mean, sd)
	}
	if delivered != sent-lost || uint64(len(got)) > delivered || uint64(len(got)) < delivered-delivered/100 {
		t.Errorf("%d delivered, %d received, of %d sent and %d lost", delivered, len(got), sent, lost)
	}
	back := stream(t, ub, ua, aAddr, 1000, 20, time.Second)
	if st := must[LinkStats](t)(e.Stats("b", "a")); st.Lost != 0 || len(back) < 990 {
		t.Errorf("b->a (no loss set): %d of 1000 received, stats %+v", len(back), st)
	}
}

// A one-way cut: a->b drops everything, b->a works; a TCP connection cannot be set up across it, and one
// that was set up before goes on in the direction that works. Heal restores the link: the data held back
// is retransmitted and arrives.
func TestEmulatorOneWayCut(t *testing.T) {
	l, e := emuLab(t, 1)
	a, b := l.Host("a"), l.Host("b")
	ua, ub := udpOn(t, l, a, 7002), udpOn(t, l, b, 7002)
	aAddr, bAddr := netip.AddrPortFrom(a.Addr, 7002), netip.AddrPortFrom(b.Addr, 7002)
	warmUp(t, ua, ub, bAddr)
	warmUp(t, ub, ua, aAddr)
	accepted := tcpListen(t, b, 7003)
	ca, err := tcpDial(a, netip.AddrPortFrom(b.Addr, 7003), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	cb := <-accepted
	defer cb.Close()

	noErr(t, e.Cut("a", "b"))
	if got := stream(t, ua, ub, bAddr, 50, 10, 300*time.Millisecond); len(got) != 0 {
		t.Errorf("a->b cut: %d of 50 datagrams arrived", len(got))
	}
	if got := stream(t, ub, ua, aAddr, 50, 10, 300*time.Millisecond); len(got) != 50 {
		t.Errorf("b->a (not cut): %d of 50 datagrams arrived", len(got))
	}
	if c, err := tcpDial(a, netip.AddrPortFrom(b.Addr, 7003), time.Second); err == nil {
		c.Close()
		t.Error("a TCP connection a->b was set up across the cut")
	}
	// The established connection: b's data reaches a; a's does not reach b.
	fmt.Fprintf(cb, "from b\n")
	ca.SetReadDeadline(time.Now().Add(5 * time.Second))
	ra := bufio.NewReader(ca)
	if line, err := ra.ReadString('\n'); err != nil || line != "from b\n" {
		t.Errorf("b->a over TCP during the cut: %q, %v", line, err)
	}
	fmt.Fprintf(ca, "from a\n")
	rb := bufio.NewReader(cb)
	cb.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if line, err := rb.ReadString('\n'); err == nil {
		t.Errorf("a->b over TCP during the cut: %q arrived", line)
	}
	if st := must[LinkStats](t)(e.Stats("a", "b")); st.Cut == 0 {
		t.Errorf("a->b stats count no cut packet: %+v", st)
	}

	noErr(t, e.Heal("a", "b"))
	cb.SetReadDeadline(time.Now().Add(15 * time.Second)) // TCP's retransmission timer backs off during the cut
	if line, err := rb.ReadString('\n'); err != nil || line != "from a\n" {
		t.Errorf("a->b over TCP after heal: %q, %v", line, err)
	}
	if got := stream(t, ua, ub, bAddr, 50, 10, 300*time.Millisecond); len(got) != 50 {
		t.Errorf("a->b healed: %d of 50 datagrams arrived", len(got))
	}
	c, err := tcpDial(a, netip.AddrPortFrom(b.Addr, 7003), 5*time.Second)
	if err != nil {
		t.Errorf("TCP a->b after heal: %v", err)
	} else {
		c.Close()
	}
}

// A bandwidth cap: a bulk TCP transfer through an 8 Mbit/s link takes at least what the cap allows and
// not much more.
func TestEmulatorBandwidth(t *testing.T) {
	l, e := emuLab(t, 1)
	a, b := l.Host("a"), l.Host("b")
	noErr(t, e.SetLink("a", "b", LinkProps{Bandwidth: 8_000_000, Delay: 5 * time.Millisecond}))
	noErr(t, e.SetLink("b", "a", LinkProps{Delay: 5 * time.Millisecond}))
	accepted := tcpListen(t, b, 7003)
	result := make(chan int64, 1)
	go func() {
		c := <-accepted
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		result <- n
	}()
	c, err := tcpDial(a, netip.AddrPortFrom(b.Addr, 7003), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	const size = 2 << 20
	start := time.Now()
	if _, err := c.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	var n int64
	select {
	case n = <-result:
	case <-time.After(30 * time.Second):
		t.Fatal("the transfer did not end within 30 s")
	}
	elapsed := time.Since(start)
	rate := float64(n) * 8 / elapsed.Seconds() / 1e6
	st := must[LinkStats](t)(e.Stats("a", "b"))
	t.Logf("2 MiB through 8 Mbit/s in %s: %.2f Mbit/s of payload; %d frames, %d dropped by the full queue", elapsed.Round(time.Millisecond), rate, st.Packets, st.Queue)
	if n != size {
		t.Fatalf("%d bytes arrived of %d", n, size)
	}
	if rate > 8 || rate < 4 {
		t.Errorf("%.2f Mbit/s of payload through an 8 Mbit/s link: want a little under 8", rate)
	}
}
