package netlab

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Root is the emulator's name for the root namespace's link (the test process, at Lab.Gateway): a port
// like a host's, whose links have properties of their own.
const Root = "root"

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
