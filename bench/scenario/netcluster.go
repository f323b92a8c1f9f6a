package scenario

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"sync"

	"github.com/p2pbft/p2pbft/bench"
	"github.com/p2pbft/p2pbft/internal/netlab"
	"github.com/p2pbft/p2pbft/node/config"
)

// netBasePort is where replicas listen on their hosts (each has an address of its own).
const netBasePort = 26656

// netCluster: replicas as processes on hosts of a network lab (one network namespace each, with its
// own address), joined by the link emulator; the runner (the load generator) is in the root namespace,
// whose link to the lab is the client's. Partitions cut the links between replicas of different sides,
// both ways; heal restores them.
type netCluster struct {
	localCluster
	s     *Scenario
	lab   *netlab.Lab
	em    *netlab.Emulator
	names []string // the emulator's name of each endpoint: the replicas' hosts, then netlab.Root

	mu     sync.Mutex
	base   [][]netlab.LinkProps // as [network] says
	cur    [][]netlab.LinkProps // after the link events
	parted [][]bool             // cut by a partition
	final  *NetworkRecord
}

// NetworkRecord is the emulated network of a run, in its result (run.json).
type NetworkRecord struct {
	// Subnet is the lab's /24; the client (the runner, with the load generator) is at its .1.
	Subnet string        `json:"subnet"`
	Client string        `json:"client_region"`
	Hosts  []NetworkHost `json:"hosts"`
	// Matrix holds the properties of the links from each region to each (as [network] set them).
	Matrix []RegionPath `json:"matrix"`
	// Links are every link between endpoints (replicas and client, one way): as [network] set it, as it
	// was at the end, and what happened to its packets over the run.
	Links  []NetworkLink `json:"links"`
	Totals netlab.Totals `json:"unlinked_frames"`
}

// NetworkHost is an endpoint of the network: a replica or the client.
type NetworkHost struct {
	Name   string `json:"name"`
	Region string `json:"region"`
	Addr   string `json:"addr"`
}

// RegionPath is one cell of the latency matrix.
type RegionPath struct {
	From  string           `json:"from"`
	To    string           `json:"to"`
	Props netlab.LinkProps `json:"props"`
}

// NetworkLink is one direction of a link between endpoints.
type NetworkLink struct {
	From       string           `json:"from"`
	To         string           `json:"to"`
	Configured netlab.LinkProps `json:"configured"`
	Final      netlab.LinkProps `json:"final"`
	Stats      netlab.LinkStats `json:"stats"`
}

// startNetwork creates the lab of a scenario with [network], applies the configured links and starts
// the replicas on its hosts.
func startNetwork(ctx context.Context, s *Scenario, binary, dir string, seed int64, configure func(int, *config.Config),
	args func(int) []string) (*bench.Target, *netCluster, error) {
	if err := netlab.Available(); err != nil {
		return nil, nil, fmt.Errorf("[network] runs every replica on a host of its own (a Linux network namespace with its own address, "+
			"joined by a link emulator) and needs root and network namespaces: %w", err)
	}
	hosts := make([]string, s.N)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("node%d", i)
	}
	em := netlab.NewEmulator(netlab.EmulatorConfig{Seed: uint64(seed)})
	lab, err := netlab.New(netlab.Config{Hosts: hosts, Fabric: em})
	if err != nil {
		return nil, nil, err
	}
	c := &netCluster{s: s, lab: lab, em: em, names: append(slices.Clone(hosts), netlab.Root)}
	c.base = s.Network.base(s)
	c.cur = cloneProps(c.base)
	c.parted = make([][]bool, s.N+1)
	for i := range c.parted {
		c.parted[i] = make([]bool, s.N+1)
	}
	if err := c.push(); err != nil {
		lab.Close()
		return nil, nil, err
	}
	addrs := make([]string, s.N)
	for i, h := range lab.Hosts() {
		addrs[i] = h.Addr.String()
	}
	t, err := bench.StartLocal(ctx, bench.LocalConfig{Dir: dir, N: s.N, Binary: binary, Configure: configure, Args: args,
		Hosts: addrs, BasePort: netBasePort, Where: c.describe(),
		Command: func(i int, name string, arg ...string) *exec.Cmd { return lab.Hosts()[i].Command(name, arg...) }})
	if err != nil {
		return nil, nil, errors.Join(err, lab.Close())
	}
	c.localCluster = localCluster{t: t}
	return t, c, nil
}

func cloneProps(m [][]netlab.LinkProps) [][]netlab.LinkProps {
	out := make([][]netlab.LinkProps, len(m))
	for i := range m {
		out[i] = slices.Clone(m[i])
	}
	return out
}

// push sets every link of the emulator to what the configuration, the link events and the partitions
// make it.
func (c *netCluster) push() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.cur {
		for j := range c.cur[i] {
			if i == j {
				continue
			}
			p := c.cur[i][j]
			p.Cut = p.Cut || c.parted[i][j]
			if err := c.em.SetLink(c.names[i], c.names[j], p); err != nil {
				return err
			}
		}
	}
	return nil
}

// partition cuts, both ways, the links between replicas of different sides (the client keeps its
// links). Partitions add up until heal.
func (c *netCluster) partition(_ context.Context, side []int, _ func(int) bool) error {
	c.mu.Lock()
	for i := range side {
		for j := range side {
			if side[i] != side[j] {
				c.parted[i][j] = true
			}
		}
	}
	c.mu.Unlock()
	return c.push()
}

// heal undoes the partitions (not the link events).
func (c *netCluster) heal(_ context.Context, _ func(int) bool) error {
	c.mu.Lock()
	for i := range c.parted {
		clear(c.parted[i])
	}
	c.mu.Unlock()
	return c.push()
}

// link applies a link event's settings to the links between endpoints pairs.
func (c *netCluster) link(pairs [][2]int, ls LinkSettings) error {
	c.mu.Lock()
	for _, pr := range pairs {
		ls.apply(&c.cur[pr[0]][pr[1]])
	}
	c.mu.Unlock()
	return c.push()
}

// healLinks puts every link back to what [network] says: link events and partitions undone.
func (c *netCluster) healLinks() error {
	c.mu.Lock()
	c.cur = cloneProps(c.base)
	for i := range c.parted {
		clear(c.parted[i])
	}
	c.mu.Unlock()
	return c.push()
}

func (c *netCluster) describe() string {
	return fmt.Sprintf("hosts of a network lab (%s), emulated links", c.lab.Subnet())
}

// close stops the replicas, records the network and its counters, and deletes the lab.
func (c *netCluster) close() error {
	err := c.localCluster.close()
	c.final = c.record()
	return errors.Join(err, c.lab.Close())
}

// record describes the network and what its links did.
func (c *netCluster) record() *NetworkRecord {
	nw := c.s.Network
	region := nw.regionOf(c.s)
	rec := &NetworkRecord{Subnet: c.lab.Subnet().String(), Client: nw.Client, Totals: c.em.Totals()}
	for i := range c.s.N + 1 {
		name, addr := c.names[i], c.lab.Gateway().String()
		if i < c.s.N {
			addr = c.lab.Hosts()[i].Addr.String()
		} else {
			name = endpointClient
		}
		rec.Hosts = append(rec.Hosts, NetworkHost{Name: name, Region: region[i], Addr: addr})
	}
	regions := sortedRegions(nw.Regions)
	for _, a := range regions {
		for _, b := range regions {
			rec.Matrix = append(rec.Matrix, RegionPath{From: a, To: b, Props: nw.between(a, b)})
		}
	}
	for i := range c.s.N + 1 {
		for j := range c.s.N + 1 {
			if i == j {
				continue
			}
			l := NetworkLink{From: rec.Hosts[i].Name, To: rec.Hosts[j].Name, Configured: c.base[i][j]}
			l.Final, _ = c.em.Link(c.names[i], c.names[j])
			l.Stats, _ = c.em.Stats(c.names[i], c.names[j])
			rec.Links = append(rec.Links, l)
		}
	}
	return rec
}

// Summary writes the network for people: the hosts by region, the latency matrix, the links set apart
// from it, and what the links did to the packets.
func (n *NetworkRecord) Summary(w io.Writer) {
	byRegion := map[string][]string{}
	var regions []string
	for _, h := range n.Hosts {
		if _, ok := byRegion[h.Region]; !ok {
			regions = append(regions, h.Region)
		}
		byRegion[h.Region] = append(byRegion[h.Region], h.Name+" "+h.Addr)
	}
	slices.Sort(regions)
	fmt.Fprintf(w, "  hosts of a network lab %s, links emulated; the load comes from region %s\n", n.Subnet, n.Client)
	for _, r := range regions {
		fmt.Fprintf(w, "  region %-8s %s\n", r, strings.Join(byRegion[r], ", "))
	}
	var names []string
	for _, p := range n.Matrix {
		if !slices.Contains(names, p.From) {
			names = append(names, p.From)
		}
	}
	cell := map[[2]string]string{}
	width := 8
	for _, p := range n.Matrix {
		s := p.Props.String()
		cell[[2]string{p.From, p.To}] = s
		width = max(width, len(s)+2)
	}
	fmt.Fprintf(w, "  one way   %s\n", strings.Join(padAll(prefixAll("to ", names), width), ""))
	for _, a := range names {
		var row []string
		for _, b := range names {
			row = append(row, cell[[2]string{a, b}])
		}
		fmt.Fprintf(w, "  from %-5s%s\n", a, strings.Join(padAll(row, width), ""))
	}
	var sent, lost, cut, queue uint64
	for _, l := range n.Links {
		sent += l.Stats.Packets
		lost += l.Stats.Lost
		cut += l.Stats.Cut
		queue += l.Stats.Queue
		if l.Configured != matrixProps(n, l.From, l.To) {
			fmt.Fprintf(w, "  link %s->%s set apart: %s\n", l.From, l.To, l.Configured)
		}
	}
	pct := func(x uint64) float64 {
		if sent == 0 {
			return 0
		}
		return 100 * float64(x) / float64(sent)
	}
	fmt.Fprintf(w, "  packets: %d sent over the links, %d lost (%.2f%%), %d dropped by cuts (%.2f%%), %d by full queues\n",
		sent, lost, pct(lost), cut, pct(cut), queue)
}

// matrixProps returns what the matrix gives the link from endpoint a to endpoint b.
func matrixProps(n *NetworkRecord, a, b string) netlab.LinkProps {
	var ra, rb string
	for _, h := range n.Hosts {
		if h.Name == a {
			ra = h.Region
		}
		if h.Name == b {
			rb = h.Region
		}
	}
	for _, p := range n.Matrix {
		if p.From == ra && p.To == rb {
			return p.Props
		}
	}
	return netlab.LinkProps{}
}

func prefixAll(prefix string, ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = prefix + s
	}
	return out
}

func padAll(ss []string, width int) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%-*s", width, s)
	}
	return out
}

// linkLabel describes a link event for the timeline ("link node0 (primary) -> all: cut").
func linkLabel(e Event, primary string) string {
	name := func(n string) string {
		if n == endpointPrimary {
			return primary + " (primary)"
		}
		return n
	}
	join := func(v any) string {
		ns, _ := ends(v)
		out := make([]string, len(ns))
		for i, n := range ns {
			out[i] = name(n)
		}
		return strings.Join(out, ",")
	}
	var sides string
	if len(e.Between) == 2 {
		sides = name(e.Between[0]) + " <-> " + name(e.Between[1])
	} else {
		sides = join(e.From) + " -> " + join(e.To)
	}
	return "link " + sides + ": " + e.LinkSettings.text()
}
