package netlab

import (
	"net/netip"
	"sync"
	"time"
)

// The forwarding path, independent of the sockets (emulator_linux.go).

// now is the emulator's clock: nanoseconds since it was made (monotonic).
func (e *Emulator) now() int64 { return int64(time.Since(e.start)) }

// bufSize holds a frame of the lab's links (MTU 1500 + the Ethernet header), with room to spare.
const bufSize = 2048

var bufPool = sync.Pool{New: func() any { return new([bufSize]byte) }}

// frame is a packet on its way to a port.
type frame struct {
	at   int64 // due, ns since the emulator started
	seq  uint64
	buf  *[bufSize]byte
	n    int
	link *link
	cuts uint64 // link.cuts when it entered the link
}

// frameHeap is a min-heap of frames by (at, seq).
type frameHeap []frame

func (h frameHeap) less(i, j int) bool {
	return h[i].at < h[j].at || (h[i].at == h[j].at && h[i].seq < h[j].seq)
}

func (h *frameHeap) push(f frame) {
	*h = append(*h, f)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if !s.less(i, p) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *frameHeap) pop() frame {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s[last] = frame{}
	s = s[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(s) && s.less(l, m) {
			m = l
		}
		if r < len(s) && s.less(r, m) {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}

// queue is the frames due at one port, and the wake-up of the goroutine that writes them.
type queue struct {
	mu   sync.Mutex
	h    frameHeap
	seq  uint64
	wake chan struct{}
}

func newQueue() *queue { return &queue{wake: make(chan struct{}, 1)} }

// add schedules a frame, waking the writer if it is now the first due.
func (q *queue) add(f frame) {
	q.mu.Lock()
	q.seq++
	f.seq = q.seq
	q.h.push(f)
	first := q.h[0].seq == f.seq
	q.mu.Unlock()
	if first {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
}

// due moves the frames due by now into out and returns when the next is due (-1: none).
func (q *queue) due(now int64, out []frame) ([]frame, int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.h) > 0 && q.h[0].at <= now {
		out = append(out, q.h.pop())
	}
	if len(q.h) == 0 {
		return out, -1
	}
	return out, q.h[0].at
}

// drain empties the queue, returning its buffers.
func (q *queue) drain() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, f := range q.h {
		bufPool.Put(f.buf)
	}
	q.h = nil
}

// enter puts a frame of n bytes on link l at time now: it returns when the frame is due at the other
// end, or ok false if the link drops it.
func (l *link) enter(n int, now int64) (at int64, cuts uint64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := &l.props
	l.stats.Packets++
	l.stats.Bytes += uint64(n)
	if p.Cut {
		l.stats.Cut++
		return 0, 0, false
	}
	if p.Loss > 0 && l.rng.Float64() < p.Loss {
		l.stats.Lost++
		return 0, 0, false
	}
	at = now
	if p.Bandwidth > 0 {
		start := max(now, l.busy)
		if queued := float64(start-now) * float64(p.Bandwidth) / 8e9; int64(queued)+int64(n) > p.queue() {
			l.stats.Queue++
			return 0, 0, false
		}
		at = start + int64(n)*8*int64(time.Second)/p.Bandwidth
		l.busy = at
	}
	at += int64(p.Delay)
	if p.Jitter > 0 {
		at += int64((2*l.rng.Float64() - 1) * float64(p.Jitter))
		at = max(at, now)
	}
	if !p.Reorder {
		at = max(at, l.last)
	}
	l.last = max(l.last, at)
	return at, l.cuts.Load(), true
}

// count records the fate of a frame at its delivery.
func (l *link) count(delivered, cut, failed bool) {
	l.mu.Lock()
	switch {
	case cut:
		l.stats.Cut++
	case failed:
		l.stats.Errors++
	case delivered:
		l.stats.Delivered++
	}
	l.mu.Unlock()
}

// Frame layout (Ethernet II): destination MAC 0-5, source MAC 6-11, EtherType 12-13, payload from 14.
// IPv4: destination address at payload offset 16. ARP (for IPv4): target protocol address at 24.
const (
	ethHeader     = 14
	etherTypeIPv4 = 0x0800
	etherTypeARP  = 0x0806
)

// route tells where a frame read on port src goes: the destination port (-1: every other port, a
// broadcast or an address no port has), and whether it is ARP (forwarded at once) or not forwarded.
func (e *Emulator) route(b []byte) (dst int, arp, forward bool) {
	if len(b) < ethHeader {
		return 0, false, false
	}
	var ip []byte
	switch uint16(b[12])<<8 | uint16(b[13]) {
	case etherTypeIPv4:
		if len(b) < ethHeader+20 {
			return 0, false, false
		}
		ip = b[ethHeader+16 : ethHeader+20]
	case etherTypeARP:
		if len(b) < ethHeader+28 {
			return 0, false, false
		}
		ip, arp = b[ethHeader+24:ethHeader+28], true
	default:
		return 0, false, false
	}
	if k, ok := e.byAddr[netip.AddrFrom4([4]byte(ip))]; ok {
		return k, arp, true
	}
	return -1, arp, true
}
