package scenario

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/p2pbft/p2pbft/internal/netlab"
)

// Network is a scenario's [network]: every replica on a host of its own (a network namespace with its
// own address, internal/netlab), the hosts in regions, and the links between them emulated: one-way
// delay, jitter, loss and bandwidth per pair of regions (a latency matrix), with overrides per pair of
// endpoints. The load generator (the runner itself, which also reads the replicas' APIs) is in region
// Client. It needs root.
type Network struct {
	// Regions assigns every replica to a region: region name -> replica names.
	Regions map[string][]string `toml:"regions"`
	// Client is the region of the load generator.
	Client string `toml:"client"`
	// Paths set the links from the hosts of one region to those of another (from, to: one way) or both
	// ways (between = [a, b]); a region to itself sets the links within it. Later entries override
	// earlier ones, field by field. A pair of regions no path names has perfect links.
	Paths []LinkSpec `toml:"paths"`
	// Links override the paths for pairs of endpoints: replica names, "client", region names, "all".
	Links []LinkSpec `toml:"links"`
}

// LinkSpec sets properties of some links: from the endpoints of From to those of To, or both ways
// between the two of Between.
type LinkSpec struct {
	// From and To are a name or a list of names.
	From    any      `toml:"from"`
	To      any      `toml:"to"`
	Between []string `toml:"between"`
	LinkSettings
}

// LinkSettings are link properties to set; a field not given leaves the links' as they are.
type LinkSettings struct {
	// Delay is the one-way delay.
	Delay *Duration `toml:"delay"`
	// Jitter adds up to this much delay either way, per packet; a link's packets keep their order
	// unless Reorder is true.
	Jitter  *Duration `toml:"jitter"`
	Reorder *bool     `toml:"reorder"`
	// Loss is the probability that a packet is lost, 0 to 1.
	Loss *float64 `toml:"loss"`
	// Bandwidth caps the links: "10mbit", "512kbit", "1gbit" ("0": no cap).
	Bandwidth string `toml:"bandwidth"`
	// Cut drops every packet (link events only: cut = true cuts, cut = false heals).
	Cut *bool `toml:"cut"`
}

// empty reports whether the settings set nothing.
func (s LinkSettings) empty() bool {
	return s.Delay == nil && s.Jitter == nil && s.Reorder == nil && s.Loss == nil && s.Bandwidth == "" && s.Cut == nil
}

func (s LinkSettings) validate() error {
	var errs []error
	if s.Delay != nil && (*s.Delay < 0 || s.Delay.D() > time.Minute) {
		errs = append(errs, fmt.Errorf("delay %s: want 0 to 1m", s.Delay.D()))
	}
	if s.Jitter != nil && (*s.Jitter < 0 || s.Jitter.D() > time.Minute) {
		errs = append(errs, fmt.Errorf("jitter %s: want 0 to 1m", s.Jitter.D()))
	}
	if s.Loss != nil && (math.IsNaN(*s.Loss) || *s.Loss < 0 || *s.Loss > 1) {
		errs = append(errs, fmt.Errorf("loss %g: want 0 to 1 (0.02 is 2%%)", *s.Loss))
	}
	if s.Bandwidth != "" {
		if bw, err := netlab.ParseBandwidth(s.Bandwidth); err != nil {
			errs = append(errs, err)
		} else if err := (netlab.LinkProps{Bandwidth: bw}).Validate(); err != nil {
			errs = append(errs, fmt.Errorf("bandwidth %s: %w", s.Bandwidth, err))
		}
	}
	return errors.Join(errs...)
}

// apply sets the given fields on p.
func (s LinkSettings) apply(p *netlab.LinkProps) {
	if s.Delay != nil {
		p.Delay = s.Delay.D()
	}
	if s.Jitter != nil {
		p.Jitter = s.Jitter.D()
	}
	if s.Reorder != nil {
		p.Reorder = *s.Reorder
	}
	if s.Loss != nil {
		p.Loss = *s.Loss
	}
	if s.Bandwidth != "" {
		p.Bandwidth, _ = netlab.ParseBandwidth(s.Bandwidth)
	}
	if s.Cut != nil {
		p.Cut = *s.Cut
	}
}

// text describes the settings ("delay 40ms, loss 5%, cut").
func (s LinkSettings) text() string {
	var parts []string
	if s.Delay != nil {
		parts = append(parts, "delay "+s.Delay.D().String())
	}
	if s.Jitter != nil {
		parts = append(parts, "jitter "+s.Jitter.D().String())
	}
	if s.Reorder != nil {
		parts = append(parts, fmt.Sprintf("reorder %v", *s.Reorder))
	}
	if s.Loss != nil {
		parts = append(parts, fmt.Sprintf("loss %g%%", 100**s.Loss))
	}
	if s.Bandwidth != "" {
		parts = append(parts, "bandwidth "+s.Bandwidth)
	}
	if s.Cut != nil {
		if *s.Cut {
			parts = append(parts, "cut")
		} else {
			parts = append(parts, "not cut")
		}
	}
	return strings.Join(parts, ", ")
}

// Endpoint words: names that are not replicas or regions.
const (
	endpointClient  = "client"
	endpointAll     = "all"
	endpointPrimary = "primary"
)

var regionName = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)

// ends reads a from/to value: a name or a list of names.
func ends(v any) ([]string, error) {
	names, err := targetNames(v)
	if err != nil {
		return nil, fmt.Errorf("%v: want a name or a list of names", v)
	}
	return names, nil
}

// sides returns the two sides of a spec, and whether it is both ways.
func (l LinkSpec) sides() (from, to []string, both bool, err error) {
	switch {
	case len(l.Between) > 0 && (l.From != nil || l.To != nil):
		return nil, nil, false, errors.New("give from and to (one way) or between (both ways), not both")
	case len(l.Between) > 0:
		if len(l.Between) != 2 {
			return nil, nil, false, fmt.Errorf("between %v: want two names", l.Between)
		}
		return l.Between[:1], l.Between[1:], true, nil
	case l.From == nil || l.To == nil:
		return nil, nil, false, errors.New("no from and to (one way) or between (both ways)")
	}
	if from, err = ends(l.From); err != nil {
		return nil, nil, false, fmt.Errorf("from %w", err)
	}
	if to, err = ends(l.To); err != nil {
		return nil, nil, false, fmt.Errorf("to %w", err)
	}
	if len(from) == 0 || len(to) == 0 {
		return nil, nil, false, errors.New("empty from or to")
	}
	return from, to, false, nil
}

// validate checks [network] for a scenario of n replicas.
func (nw *Network) validate(s *Scenario) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("[network] "+format, args...)) }
	if len(nw.Regions) == 0 {
		bad("regions: none (give every replica a region: [network.regions] eu = [\"node0\", \"node1\"], ...)")
	}
	region := map[int]string{}
	for _, r := range sortedRegions(nw.Regions) {
		if !regionName.MatchString(r) || slices.Contains(targetWords, r) || r == endpointClient || strings.HasPrefix(r, "node") {
			bad("region %q: want a lower-case name that is not a replica's, client, %s", r, strings.Join(targetWords, ", "))
		}
		for _, name := range nw.Regions[r] {
			i, err := s.replica(name)
			if err != nil {
				bad("region %s: %v", r, err)
				continue
			}
			if other, ok := region[i]; ok {
				bad("node%d is in regions %s and %s", i, other, r)
			}
			region[i] = r
		}
	}
	var missing []string
	for i := range s.N {
		if _, ok := region[i]; !ok {
			missing = append(missing, fmt.Sprintf("node%d", i))
		}
	}
	if len(missing) > 0 && len(nw.Regions) > 0 {
		bad("regions: %s in no region", strings.Join(missing, ", "))
	}
	if _, ok := nw.Regions[nw.Client]; !ok {
		bad("client %q: want the region of the load generator (one of %s)", nw.Client, strings.Join(sortedRegions(nw.Regions), ", "))
	}
	for k, p := range nw.Paths {
		from, to, _, err := p.sides()
		if err != nil {
			bad("paths[%d]: %v", k, err)
			continue
		}
		for _, r := range slices.Concat(from, to) {
			if _, ok := nw.Regions[r]; !ok {
				bad("paths[%d]: %q is not a region (paths join regions; links join replicas)", k, r)
			}
		}
		if len(from) != 1 || len(to) != 1 {
			bad("paths[%d]: from and to are one region each", k)
		}
		nw.checkSettings(&errs, fmt.Sprintf("paths[%d]", k), p.LinkSettings)
	}
	for k, l := range nw.Links {
		from, to, _, err := l.sides()
		if err != nil {
			bad("links[%d]: %v", k, err)
			continue
		}
		for _, name := range slices.Concat(from, to) {
			if _, err := nw.endpoints(s, name, -1); err != nil {
				bad("links[%d]: %v", k, err)
			}
		}
		nw.checkSettings(&errs, fmt.Sprintf("links[%d]", k), l.LinkSettings)
	}
	return errors.Join(errs...)
}

func (nw *Network) checkSettings(errs *[]error, where string, ls LinkSettings) {
	if ls.empty() {
		*errs = append(*errs, fmt.Errorf("[network] %s: sets nothing (delay, jitter, reorder, loss, bandwidth)", where))
	}
	if ls.Cut != nil {
		*errs = append(*errs, fmt.Errorf("[network] %s: cut: the network starts connected (cut links with a link event)", where))
	}
	if err := ls.validate(); err != nil {
		*errs = append(*errs, fmt.Errorf("[network] %s: %w", where, err))
	}
}

// endpoints resolves an endpoint name to endpoint indexes: replicas 0..n-1, and n for the client.
// primary is the current primary (-1: not known, "primary" is refused).
func (nw *Network) endpoints(s *Scenario, name string, primary int) ([]int, error) {
	switch name {
	case endpointClient:
		return []int{s.N}, nil
	case endpointAll:
		out := make([]int, s.N)
		for i := range out {
			out[i] = i
		}
		return out, nil
	case endpointPrimary:
		if primary < 0 {
			return nil, errors.New(`"primary" is only known during the run (link events)`)
		}
		return []int{primary}, nil
	}
	if reps, ok := nw.Regions[name]; ok {
		var out []int
		for _, r := range reps {
			if i, err := s.replica(r); err == nil {
				out = append(out, i)
			}
		}
		if name == nw.Client {
			out = append(out, s.N)
		}
		sort.Ints(out)
		return out, nil
	}
	if i, err := s.replica(name); err == nil {
		return []int{i}, nil
	}
	return nil, fmt.Errorf("endpoint %q: want a replica (node0 to node%d), a region (%s), client, all or primary",
		name, s.N-1, strings.Join(sortedRegions(nw.Regions), ", "))
}

// pairs resolves a spec to the ordered endpoint pairs it sets (a pair of an endpoint with itself is
// left out).
func (nw *Network) pairs(s *Scenario, l LinkSpec, primary int) ([][2]int, error) {
	from, to, both, err := l.sides()
	if err != nil {
		return nil, err
	}
	resolve := func(names []string) ([]int, error) {
		var out []int
		for _, name := range names {
			eps, err := nw.endpoints(s, name, primary)
			if err != nil {
				return nil, err
			}
			for _, e := range eps {
				if !slices.Contains(out, e) {
					out = append(out, e)
				}
			}
		}
		return out, nil
	}
	a, err := resolve(from)
	if err != nil {
		return nil, err
	}
	b, err := resolve(to)
	if err != nil {
		return nil, err
	}
	var out [][2]int
	add := func(x, y int) {
		if x != y && !slices.Contains(out, [2]int{x, y}) {
			out = append(out, [2]int{x, y})
		}
	}
	for _, x := range a {
		for _, y := range b {
			add(x, y)
			if both {
				add(y, x)
			}
		}
	}
	return out, nil
}

// regionOf returns each endpoint's region (the client's is Client).
func (nw *Network) regionOf(s *Scenario) []string {
	out := make([]string, s.N+1)
	for r, reps := range nw.Regions {
		for _, name := range reps {
			if i, err := s.replica(name); err == nil {
				out[i] = r
			}
		}
	}
	out[s.N] = nw.Client
	return out
}

// between returns the properties the paths give the links from region a to region b.
func (nw *Network) between(a, b string) netlab.LinkProps {
	var p netlab.LinkProps
	for _, path := range nw.Paths {
		from, to, both, err := path.sides()
		if err != nil || len(from) != 1 || len(to) != 1 {
			continue
		}
		if (from[0] == a && to[0] == b) || (both && from[0] == b && to[0] == a) {
			path.apply(&p)
		}
	}
	return p
}

// base returns the configured properties of every link between endpoints: [from][to], the client last.
func (nw *Network) base(s *Scenario) [][]netlab.LinkProps {
	region := nw.regionOf(s)
	out := make([][]netlab.LinkProps, s.N+1)
	for i := range out {
		out[i] = make([]netlab.LinkProps, s.N+1)
		for j := range out[i] {
			if i != j {
				out[i][j] = nw.between(region[i], region[j])
			}
		}
	}
	for _, l := range nw.Links {
		pairs, err := nw.pairs(s, l, -1)
		if err != nil {
			continue
		}
		for _, pr := range pairs {
			l.apply(&out[pr[0]][pr[1]])
		}
	}
	return out
}

func sortedRegions(m map[string][]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
