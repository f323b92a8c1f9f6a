package netlab

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Root is the emulator's name for the root namespace's link (the test process, at Lab.Gateway): a port
// like a host's, whose links have properties of their own.
const Root = "root"

// LinkProps are the properties of one direction of a link, from one port (host) to another. The zero
// value is a perfect link: no delay, no loss, no bandwidth cap.
type LinkProps struct {
	// Delay is the one-way delay added to every packet.
	Delay time.Duration `json:"delay_ns"`
	// Jitter adds a delay drawn uniformly from [-Jitter, +Jitter] to each packet (the total is never
	// below zero). Packets of a link keep their order unless Reorder is set: a packet is never delivered
	// before the one sent ahead of it, so jitter then delays but does not reorder.
	Jitter  time.Duration `json:"jitter_ns,omitempty"`
	Reorder bool          `json:"reorder,omitempty"`
	// Loss is the probability, 0 to 1, that a packet is dropped (each independently).
	Loss float64 `json:"loss,omitempty"`
	// Bandwidth caps the link, in bits per second (0: no cap): a packet leaves after the packets ahead
	// of it and takes its size over the bandwidth to send; the queue this forms holds Queue bytes, and a
	// packet that finds it full is dropped (tail drop).
	Bandwidth int64 `json:"bandwidth_bps,omitempty"`
	// Queue is the queue of a capped link, in bytes. Default: 200 ms of its bandwidth, at least 64 KiB.
	Queue int `json:"queue_bytes,omitempty"`
	// Cut drops every packet, those already on their way included: a one-way cut when the reverse
	// direction is not cut.
	Cut bool `json:"cut,omitempty"`
}

// String describes the properties briefly ("20ms ±2ms loss 1% 10mbit cut").
func (p LinkProps) String() string {
	var parts []string
	if p.Delay > 0 || p.Jitter == 0 {
		parts = append(parts, p.Delay.String())
	}
	if p.Jitter > 0 {
		j := "±" + p.Jitter.String()
		if p.Reorder {
			j += " (reordering)"
		}
		parts = append(parts, j)
	}
	if p.Loss > 0 {
		parts = append(parts, "loss "+strconv.FormatFloat(100*p.Loss, 'g', 4, 64)+"%")
	}
	if p.Bandwidth > 0 {
		parts = append(parts, FormatBandwidth(p.Bandwidth))
	}
	if p.Cut {
		parts = append(parts, "cut")
	}
	return strings.Join(parts, " ")
}

// Validate checks the properties.
func (p LinkProps) Validate() error {
	switch {
	case p.Delay < 0 || p.Jitter < 0:
		return fmt.Errorf("negative delay or jitter (%s, %s)", p.Delay, p.Jitter)
	case p.Delay > time.Minute || p.Jitter > time.Minute:
		return fmt.Errorf("delay or jitter above a minute (%s, %s)", p.Delay, p.Jitter)
	case math.IsNaN(p.Loss) || p.Loss < 0 || p.Loss > 1:
		return fmt.Errorf("loss %g: want 0 to 1", p.Loss)
	case p.Bandwidth < 0 || p.Queue < 0:
		return fmt.Errorf("negative bandwidth or queue (%d, %d)", p.Bandwidth, p.Queue)
	case p.Bandwidth > 0 && p.Bandwidth < 8000:
		return fmt.Errorf("bandwidth %d bit/s: want at least 8kbit (or 0, no cap)", p.Bandwidth)
	}
	return nil
}

func (p LinkProps) queue() int64 {
	if p.Queue > 0 {
		return int64(p.Queue)
	}
	return max(64<<10, p.Bandwidth/8/5)
}

// LinkStats count what happened to the packets of one direction of a link.
type LinkStats struct {
	// Packets and Bytes entered the link (IPv4 frames from the sender's port to the receiver's).
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
	// Delivered were written to the receiver's port.
	Delivered uint64 `json:"delivered"`
	// Lost were dropped by Loss, Cut by a cut (on entry, or on the wire when the cut came), Queue by
	// the tail drop of a full queue, Errors by a failed write to the receiver's port.
	Lost   uint64 `json:"lost"`
	Cut    uint64 `json:"cut"`
	Queue  uint64 `json:"queue_drops"`
	Errors uint64 `json:"write_errors"`
}

// Totals count the frames the emulator did not put on a link.
type Totals struct {
	// ARP frames are forwarded at once, with no property applied (see the package documentation).
	ARP uint64 `json:"arp"`
	// Other are frames neither IPv4 nor ARP (IPv6 neighbour discovery, ...): dropped.
	Other uint64 `json:"other"`
	// Oversize are frames larger than the emulator's buffers (an offload left on): dropped.
	Oversize uint64 `json:"oversize"`
	// ReadErrors are failed reads of a port.
	ReadErrors uint64 `json:"read_errors"`
}

// EmulatorConfig configures an Emulator.
type EmulatorConfig struct {
	// Seed seeds the draws of loss and jitter: each link draws from a generator of its own, seeded with
	// Seed and the link's ends, so that a link's n-th packet meets the same fate in every run.
	Seed uint64
	// Default are every link's properties when the lab starts.
	Default LinkProps
}

// Emulator is a Fabric that emulates a wide-area network between the hosts of a lab: a switch in user
// space, in the fabric namespace, that forwards each frame to the port of its destination after the
// delay, jitter, loss and bandwidth of that direction of that link. See the package documentation.
type Emulator struct {
	cfg   EmulatorConfig
	start time.Time

	mu     sync.Mutex // guards the fields below (not the links' properties: each link has its lock)
	names  []string
	index  map[string]int
	byAddr map[netip.Addr]int
	links  [][]*link // [from][to]; nil on the diagonal
	ports  []*port
	closed bool

	done chan struct{}
	wg   sync.WaitGroup

	arp, other, oversize, readErrors atomic.Uint64
}

// NewEmulator returns an emulator to give a lab as its Config.Fabric. Links get their properties once
// the lab exists (SetLink, Apply, ...).
func NewEmulator(cfg EmulatorConfig) *Emulator {
	return &Emulator{cfg: cfg, start: time.Now(), done: make(chan struct{})}
}

// link is one direction of a link.
type link struct {
	from, to int

	mu    sync.Mutex
	props LinkProps
	rng   *rand.Rand
	busy  int64 // the link is sending until then (ns since the emulator started), with a bandwidth cap
	last  int64 // when its latest packet is due
	stats LinkStats

	cuts atomic.Uint64 // how many times the link was cut: packets scheduled before a cut are dropped
}

// init sets up the ports' names and links: names[k] is port k's.
func (e *Emulator) init(names []string, addrs []netip.Addr) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.names != nil {
		return errors.New("netlab: the emulator is already connected to a lab")
	}
	if err := e.cfg.Default.Validate(); err != nil {
		return fmt.Errorf("netlab: default link properties: %w", err)
	}
	e.names = slices.Clone(names)
	e.index = make(map[string]int, len(names))
	e.byAddr = make(map[netip.Addr]int, len(names))
	for i, n := range names {
		e.index[n] = i
		if i < len(addrs) && addrs[i].IsValid() {
			e.byAddr[addrs[i]] = i
		}
	}
	e.links = make([][]*link, len(names))
	for i := range names {
		e.links[i] = make([]*link, len(names))
		for j := range names {
			if i == j {
				continue
			}
			seed := e.cfg.Seed ^ (uint64(i+1) << 40) ^ (uint64(j+1) << 20)
			e.links[i][j] = &link{from: i, to: j, props: e.cfg.Default, rng: rand.New(rand.NewPCG(seed, 0x6e65746c6162))}
		}
	}
	return nil
}

// Names returns the ports' names: Root, then the lab's hosts in order.
func (e *Emulator) Names() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.names)
}

func (e *Emulator) link(from, to string) (*link, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.names == nil {
		return nil, errors.New("netlab: the emulator is not connected to a lab yet")
	}
	i, ok := e.index[from]
	if !ok {
		return nil, fmt.Errorf("netlab: no host %q (hosts: %s)", from, strings.Join(e.names, ", "))
	}
	j, ok := e.index[to]
	if !ok {
		return nil, fmt.Errorf("netlab: no host %q (hosts: %s)", to, strings.Join(e.names, ", "))
	}
	if i == j {
		return nil, fmt.Errorf("netlab: no link from %s to itself", from)
	}
	return e.links[i][j], nil
}

// set replaces a link's properties. A cut that starts drops the packets on their way.
func (l *link) set(p LinkProps) {
	l.mu.Lock()
	if p.Cut && !l.props.Cut {
		l.cuts.Add(1)
	}
	l.props = p
	l.mu.Unlock()
}

func (l *link) get() LinkProps {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.props
}

// SetLink sets the properties of the link from host from to host to (names of Names; one direction
// only). It applies to the packets that enter the link from now on; those on their way keep their
// schedule, unless the link is cut.
func (e *Emulator) SetLink(from, to string, p LinkProps) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("netlab: link %s->%s: %w", from, to, err)
	}
	l, err := e.link(from, to)
	if err != nil {
		return err
	}
	l.set(p)
	return nil
}

// UpdateLink changes the properties of the link from host from to host to with f.
func (e *Emulator) UpdateLink(from, to string, f func(*LinkProps)) error {
	l, err := e.link(from, to)
	if err != nil {
		return err
	}
	p := l.get()
	f(&p)
	if err := p.Validate(); err != nil {
		return fmt.Errorf("netlab: link %s->%s: %w", from, to, err)
	}
	l.set(p)
	return nil
}

// Link returns the properties of the link from host from to host to.
func (e *Emulator) Link(from, to string) (LinkProps, error) {
	l, err := e.link(from, to)
	if err != nil {
		return LinkProps{}, err
	}
	return l.get(), nil
}

// SetGroups sets p on every link from a host of group from to a host of group to (a host's link to
// itself excepted): between two regions, say. Call it twice, the groups swapped, for both directions.
func (e *Emulator) SetGroups(from, to []string, p LinkProps) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("netlab: links %v->%v: %w", from, to, err)
	}
	var ls []*link
	for _, a := range from {
		for _, b := range to {
			if a == b {
				continue
			}
			l, err := e.link(a, b)
			if err != nil {
				return err
			}
			ls = append(ls, l)
		}
	}
	for _, l := range ls {
		l.set(p)
	}
	return nil
}

// Cut cuts the link from host from to host to: every packet from one to the other is dropped, those on
// their way included, while the other direction works as before.
func (e *Emulator) Cut(from, to string) error {
	return e.UpdateLink(from, to, func(p *LinkProps) { p.Cut = true })
}

// Heal undoes Cut; the link keeps its other properties.
func (e *Emulator) Heal(from, to string) error {
	return e.UpdateLink(from, to, func(p *LinkProps) { p.Cut = false })
}

// HealAll undoes every cut.
func (e *Emulator) HealAll() {
	e.mu.Lock()
	links := e.links
	e.mu.Unlock()
	for _, row := range links {
		for _, l := range row {
			if l != nil {
				p := l.get()
				p.Cut = false
				l.set(p)
			}
		}
	}
}

// Stats returns the counters of the link from host from to host to.
func (e *Emulator) Stats(from, to string) (LinkStats, error) {
	l, err := e.link(from, to)
	if err != nil {
		return LinkStats{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats, nil
}

// Totals returns the counters of frames that went on no link.
func (e *Emulator) Totals() Totals {
	return Totals{ARP: e.arp.Load(), Other: e.other.Load(), Oversize: e.oversize.Load(), ReadErrors: e.readErrors.Load()}
}

// Matrix is a latency matrix: hosts grouped in regions, and the properties of the links from one region
// to another.
type Matrix struct {
	// Regions maps a region's name to its hosts (names of the emulator's ports: host names, Root). A
	// host is in one region at most; Apply leaves the links of hosts in none as they are.
	Regions map[string][]string
	// Paths gives the one-way properties from a region to a region: Paths[[2]string{"eu", "us"}] for
	// the links from the hosts of eu to those of us. A pair not given takes the reverse pair's
	// properties, if given, else the zero LinkProps; a region to itself (the links within it) likewise.
	Paths map[[2]string]LinkProps
}

// Between returns the properties of the links from region a to region b.
func (m Matrix) Between(a, b string) LinkProps {
	if p, ok := m.Paths[[2]string{a, b}]; ok {
		return p
	}
	return m.Paths[[2]string{b, a}]
}

// Validate checks that every host is in one region at most and that every path joins regions.
func (m Matrix) Validate() error {
	var errs []error
	seen := map[string]string{}
	for _, r := range sortedKeys(m.Regions) {
		for _, h := range m.Regions[r] {
			if other, ok := seen[h]; ok {
				errs = append(errs, fmt.Errorf("host %s is in regions %s and %s", h, other, r))
			}
			seen[h] = r
		}
	}
	for k, p := range m.Paths {
		for _, r := range k {
			if _, ok := m.Regions[r]; !ok {
				errs = append(errs, fmt.Errorf("path %s->%s: no region %q", k[0], k[1], r))
			}
		}
		if err := p.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("path %s->%s: %w", k[0], k[1], err))
		}
	}
	return errors.Join(errs...)
}

// Apply sets every link between hosts of the matrix's regions (m.Between of their regions).
func (e *Emulator) Apply(m Matrix) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("netlab: matrix: %w", err)
	}
	regions := sortedKeys(m.Regions)
	for _, a := range regions {
		for _, b := range regions {
			if err := e.SetGroups(m.Regions[a], m.Regions[b], m.Between(a, b)); err != nil {
				return err
			}
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ParseBandwidth reads a bandwidth as tc(8) writes it: a number of bits per second with an optional
// unit, bit, kbit, mbit or gbit (powers of 1000; "10mbit"), or bytes per second as bps, kbps, mbps,
// gbps ("1mbps" is 8mbit). "0" is no cap.
func ParseBandwidth(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	units := []struct {
		suffix string
		mult   float64
	}{
		{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1},
		{"gbps", 8e9}, {"mbps", 8e6}, {"kbps", 8e3}, {"bps", 8},
	}
	mult := 1.0
	for _, u := range units {
		if num, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) || v*mult > 1e12 {
		return 0, fmt.Errorf("bandwidth %q: want a rate such as 10mbit, 512kbit, 1gbit or 2mbps (bytes), up to 1000gbit", s)
	}
	return int64(math.Round(v * mult)), nil
}

// FormatBandwidth writes bits per second as ParseBandwidth reads them ("10mbit").
func FormatBandwidth(bps int64) string {
	switch {
	case bps == 0:
		return "0"
	case bps%1e9 == 0:
		return strconv.FormatInt(bps/1e9, 10) + "gbit"
	case bps%1e6 == 0:
		return strconv.FormatInt(bps/1e6, 10) + "mbit"
	case bps%1e3 == 0:
		return strconv.FormatInt(bps/1e3, 10) + "kbit"
	}
	return strconv.FormatInt(bps, 10) + "bit"
}

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
