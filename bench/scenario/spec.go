package scenario

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/p2pbft/p2pbft/bench"
	"github.com/p2pbft/p2pbft/node/config"
	"github.com/p2pbft/p2pbft/pbft"
)

// Duration is a Go duration string in the scenario file ("1.5s", "2m").
type Duration = bench.Duration

// Actions an event takes.
const (
	ActionKill      = "kill"       // SIGKILL: a crash
	ActionStop      = "stop"       // SIGTERM: a clean shutdown
	ActionStart     = "start"      // start a stopped or killed replica
	ActionRestart   = "restart"    // stop (cleanly) and start again
	ActionPause     = "pause"      // SIGSTOP: a hung replica (connections stay open)
	ActionResume    = "resume"     // SIGCONT
	ActionPartition = "partition"  // cut the network into groups (the replicas' admin API; with [network], the links)
	ActionHeal      = "heal"       // undo every partition
	ActionByzantine = "byzantine"  // restart the target with a Byzantine mode (experiments only)
	ActionWait      = "wait"       // nothing: a checkpoint in the timeline (after, after_requests)
	ActionLink      = "link"       // change links of the emulated network ([network]): delay, loss, cut, ...
	ActionHealLinks = "heal-links" // every link back to what [network] says (link events and partitions undone)
)

// Actions lists the event actions.
var Actions = []string{ActionKill, ActionStop, ActionStart, ActionRestart, ActionPause, ActionResume,
	ActionPartition, ActionHeal, ActionByzantine, ActionWait, ActionLink, ActionHealLinks}

// Scenario is a scenario file: a network, a load, a timeline of events and what must hold.
type Scenario struct {
	// Name names the scenario (default: the file name).
	Name        string `toml:"name"`
	Description string `toml:"description"`
	// N is the number of replicas. Default 4.
	N int `toml:"n"`
	// Seed seeds the load's keys and the choice of random targets. 0: random (the result records it).
	Seed int64 `toml:"seed"`
	// Nodes sets the replicas' configuration.
	Nodes NodeSettings `toml:"nodes"`
	// Byzantine makes replicas Byzantine from the start: replica name -> mode (see the node's
	// [experiment] byzantine_mode). They are left out of the checks.
	Byzantine map[string]string `toml:"byzantine"`
	// Network, if set, runs every replica on a host of its own with emulated links between them: regions,
	// a latency matrix, loss and bandwidth (see Network). It needs root.
	Network *Network `toml:"network"`
	// Load is the load during the whole timeline. Its duration is an upper bound (default 10m): the load
	// stops Tail after the last event's checks.
	Load bench.LoadConfig `toml:"load"`
	// Warmup is how long the load runs before the first event's wait starts. Default 2s.
	Warmup Duration `toml:"warmup"`
	// Tail is how long the load runs after the last event. Default 3s.
	Tail Duration `toml:"tail"`
	// Expect says what must hold.
	Expect Expect `toml:"expect"`
	// Events is the timeline, applied in order.
	Events []Event `toml:"events"`
	// Short overrides any of the above for the short form (`--short`, and the test suite): a few seconds
	// of load. A table given here replaces the fields it names; an events list replaces the whole list.
	Short toml.Primitive `toml:"short"`

	source []byte
	short  bool
}

// NodeSettings are replica configuration options a scenario may set; zero values keep the defaults.
type NodeSettings struct {
	RequestTimeout     Duration `toml:"request_timeout"`
	ViewChangeTimeout  Duration `toml:"view_change_timeout"`
	BatchMaxRequests   int      `toml:"batch_max_requests"`
	BatchTimeout       Duration `toml:"batch_timeout"`
	MaxInFlight        int      `toml:"max_in_flight"`
	CheckpointInterval uint64   `toml:"checkpoint_interval"`
	Window             uint64   `toml:"window"`
	Broadcast          string   `toml:"broadcast"`
	// StoreSync: nil keeps the default (fsync on).
	StoreSync *bool `toml:"store_sync"`
	// BlockSyncMax is state_sync.block_sync_max: a replica further behind copies a snapshot.
	BlockSyncMax uint64 `toml:"block_sync_max"`
	LogLevel     string `toml:"log_level"`
	// ByzantineDelay and ByzantineDropRate parameterize the delay and drop modes of Byzantine replicas.
	ByzantineDelay    Duration `toml:"byzantine_delay"`
	ByzantineDropRate float64  `toml:"byzantine_drop_rate"`
}

// Apply sets the given options on a replica's configuration.
func (s NodeSettings) Apply(c *config.Config) {
	if s.RequestTimeout > 0 {
		c.Consensus.RequestTimeout = s.RequestTimeout.D()
	}
	if s.ViewChangeTimeout > 0 {
		c.Consensus.ViewChangeTimeout = s.ViewChangeTimeout.D()
	}
	if s.BatchMaxRequests > 0 {
		c.Consensus.BatchMaxRequests = s.BatchMaxRequests
	}
	if s.BatchTimeout > 0 {
		c.Consensus.BatchTimeout = s.BatchTimeout.D()
	}
	if s.MaxInFlight > 0 {
		c.Consensus.MaxInFlight = s.MaxInFlight
	}
	if s.CheckpointInterval > 0 {
		c.Consensus.CheckpointInterval = s.CheckpointInterval
	}
	if s.Window > 0 {
		c.Consensus.Window = s.Window
	}
	if s.Broadcast != "" {
		c.P2P.Broadcast = s.Broadcast
	}
	if s.StoreSync != nil {
		c.Store.Sync = *s.StoreSync
	}
	if s.BlockSyncMax > 0 {
		c.StateSync.BlockSyncMax = s.BlockSyncMax
	}
	if s.LogLevel != "" {
		c.Log.Level = s.LogLevel
	}
	if s.ByzantineDelay > 0 {
		c.Experiment.ByzantineDelay = s.ByzantineDelay.D()
	}
	if s.ByzantineDropRate > 0 {
		c.Experiment.ByzantineDropRate = s.ByzantineDropRate
	}
}

// Expect are the scenario's bounds and limits.
type Expect struct {
	// ResumeWithin bounds, after every event, the time until a request issued after it is accepted.
	// Default 20s. An event may set its own.
	ResumeWithin Duration `toml:"resume_within"`
	// CatchUpWithin bounds, after start, restart, resume and heal, the time until the targets reach the
	// height the others had when the event happened. Default 60s.
	CatchUpWithin Duration `toml:"catch_up_within"`
	// ConvergeWithin bounds, after the load, the time until every correct running replica reaches the
	// same height. Default 60s.
	ConvergeWithin Duration `toml:"converge_within"`
	// MaxFailed is how many requests may end without f+1 matching replies (op_timeout). Default 0.
	MaxFailed int `toml:"max_failed"`
	// MinAccepted is how many requests must be accepted over the run. Default 1.
	MinAccepted int `toml:"min_accepted"`
	// MinView is the view the correct replicas must at least be in at the end (for a scenario whose
	// faulty primary must be replaced). Default 0.
	MinView uint64 `toml:"min_view"`
	// MaxView, if set, is the view the correct replicas may at most be in at the end: 0 says that no
	// view change may happen (none is spurious: a scenario with loss but a correct primary).
	MaxView *uint64 `toml:"max_view"`
}

// Event is one step of the timeline: wait, then act, then check that progress resumes.
type Event struct {
	// After waits this long after the previous step (its checks included) before acting.
	After Duration `toml:"after"`
	// AfterRequests also waits until this many more requests were accepted since the previous step.
	AfterRequests int `toml:"after_requests"`
	// Action is one of Actions.
	Action string `toml:"action"`
	// Target names the replicas: "node2" (or "2"), a list of them, "primary" (of the current view),
	// "backup" or "random" (Count of them, chosen with the scenario's seed), "all", or "previous" (the
	// previous event's targets).
	Target any `toml:"target"`
	// Count is how many replicas "backup" and "random" pick: a number or "f". Default 1.
	Count any `toml:"count"`
	// Groups are a partition's sides (lists of replica names); replicas not listed form one more group.
	// Without groups, a partition isolates the targets from the others.
	Groups [][]string `toml:"groups"`
	// Mode is the Byzantine mode (action byzantine).
	Mode string `toml:"mode"`
	// ResumeWithin overrides Expect.ResumeWithin for this event ("0s": no check).
	ResumeWithin *Duration `toml:"resume_within"`
	// CatchUpWithin overrides Expect.CatchUpWithin ("0s": no check).
	CatchUpWithin *Duration `toml:"catch_up_within"`
	// MinThroughputRatio and MaxP99Ratio check what the fault costs the load while it lasts, from this
	// event's action to the next event's (or the end of the load): accepted requests per second at least
	// MinThroughputRatio times, and the p99 latency of the requests issued at most MaxP99Ratio times, what
	// they were over as long a window just before the action and, if the next event ends the fault (a
	// resume, a heal, a start), as long a window after it: the weaker of the two (0: no check). For a
	// fault the protocol should absorb, like a silent backup under a healthy primary.
	MinThroughputRatio float64 `toml:"min_throughput_ratio"`
	MaxP99Ratio        float64 `toml:"max_p99_ratio"`
	// From and To (one way), or Between (both ways), are the ends of the links a link event changes:
	// replica names, "primary" (of the current view), "all" (the replicas), "client", region names (a
	// region's replicas, and the client if it is the client's region); From and To take a name or a list.
	From    any      `toml:"from"`
	To      any      `toml:"to"`
	Between []string `toml:"between"`
	// LinkSettings are what a link event sets on those links (delay, jitter, reorder, loss, bandwidth,
	// cut); the fields not given keep their values.
	LinkSettings
}

// linkSpec returns a link event's links and settings.
func (e Event) linkSpec() LinkSpec {
	return LinkSpec{From: e.From, To: e.To, Between: e.Between, LinkSettings: e.LinkSettings}
}

// targetWords are the target names that are not replica names.
var targetWords = []string{"primary", "backup", "random", "all", "previous"}

// Load reads a scenario file; short applies its [short] overrides.
func Load(path string, short bool) (*Scenario, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	s, err := Parse(b, short)
	if err != nil {
		return nil, fmt.Errorf("scenario %s: %w", path, err)
	}
	if s.Name == "" {
		base := path[strings.LastIndexByte(path, '/')+1:]
		s.Name = strings.TrimSuffix(base, ".toml")
	}
	return s, nil
}

// Parse reads a scenario; short applies its [short] overrides. Unknown keys are an error.
func Parse(data []byte, short bool) (*Scenario, error) {
	s := &Scenario{source: data, short: short}
	md, err := toml.Decode(string(data), s)
	if err != nil {
		return nil, err
	}
	// The short form is decoded over the full one (also when not asked for, on a copy, to check its keys).
	target := s
	if !short {
		c := *s
		target = &c
	}
	if md.IsDefined("short", "events") {
		target.Events = nil
	}
	if md.IsDefined("short", "byzantine") {
		target.Byzantine = nil
	}
	if target != s && s.Network != nil {
		nw := *s.Network
		target.Network = &nw
	}
	if target.Network != nil {
		// Lists and the regions are replaced, not merged element by element.
		if md.IsDefined("short", "network", "regions") {
			target.Network.Regions = nil
		}
		if md.IsDefined("short", "network", "paths") {
			target.Network.Paths = nil
		}
		if md.IsDefined("short", "network", "links") {
			target.Network.Links = nil
		}
	}
	if err := md.PrimitiveDecode(s.Short, target); err != nil {
		return nil, fmt.Errorf("[short]: %w", err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("unknown key(s): %s", strings.Join(keys, ", "))
	}
	s.setDefaults()
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Scenario) setDefaults() {
	if s.N == 0 {
		s.N = 4
	}
	if s.Load.Duration == 0 {
		s.Load.Duration = Duration(10 * time.Minute)
	}
	if s.Warmup == 0 {
		s.Warmup = Duration(2 * time.Second)
	}
	if s.Tail == 0 {
		s.Tail = Duration(3 * time.Second)
	}
	if s.Expect.ResumeWithin == 0 {
		s.Expect.ResumeWithin = Duration(20 * time.Second)
	}
	if s.Expect.CatchUpWithin == 0 {
		s.Expect.CatchUpWithin = Duration(60 * time.Second)
	}
	if s.Expect.ConvergeWithin == 0 {
		s.Expect.ConvergeWithin = Duration(60 * time.Second)
	}
	if s.Expect.MinAccepted == 0 {
		s.Expect.MinAccepted = 1
	}
}

// IsShort reports whether the scenario is in its short form.
func (s *Scenario) IsShort() bool { return s.short }

// Source returns the scenario file's bytes.
func (s *Scenario) Source() []byte { return s.source }

// F returns the fault tolerance of the scenario's network.
func (s *Scenario) F() int { return pbft.F(s.N) }

// Validate checks the scenario.
func (s *Scenario) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if s.N < 1 || s.N > 64 {
		bad("n = %d: want 1 to 64", s.N)
	}
	if err := s.Load.Validate(); err != nil {
		bad("[load]: %v", err)
	}
	if s.Load.Requests > 0 {
		bad("[load] requests: the timeline bounds a scenario's load (use after_requests on an event)")
	}
	for name, mode := range s.Byzantine {
		if _, err := s.replica(name); err != nil {
			bad("[byzantine] %s: %v", name, err)
		}
		if !slices.Contains(config.ByzantineModes, mode) {
			bad("[byzantine] %s: mode %q: want one of %s", name, mode, strings.Join(config.ByzantineModes, ", "))
		}
	}
	if len(s.Byzantine) > s.F() {
		bad("[byzantine]: %d Byzantine replicas, but n = %d tolerates f = %d", len(s.Byzantine), s.N, s.F())
	}
	if m := s.Expect.MaxView; m != nil && *m < s.Expect.MinView {
		bad("[expect] max_view = %d is below min_view = %d", *m, s.Expect.MinView)
	}
	if s.Network != nil {
		if err := s.Network.validate(s); err != nil {
			errs = append(errs, err)
		}
	}
	for k, e := range s.Events {
		where := fmt.Sprintf("events[%d] (%s)", k, e.Action)
		if !slices.Contains(Actions, e.Action) {
			bad("events[%d]: action %q: want one of %s", k, e.Action, strings.Join(Actions, ", "))
			continue
		}
		if e.After < 0 || e.AfterRequests < 0 {
			bad("%s: negative after or after_requests", where)
		}
		needsTarget := e.Action != ActionHeal && e.Action != ActionWait && e.Action != ActionLink && e.Action != ActionHealLinks &&
			!(e.Action == ActionPartition && len(e.Groups) > 0)
		names, err := targetNames(e.Target)
		switch {
		case err != nil:
			bad("%s: %v", where, err)
		case needsTarget && len(names) == 0:
			bad("%s: no target", where)
		case !needsTarget && len(names) > 0 && e.Action != ActionPartition:
			bad("%s: takes no target", where)
		}
		for _, name := range names {
			if slices.Contains(targetWords, name) {
				continue
			}
			if _, err := s.replica(name); err != nil {
				bad("%s: target %s: %v (or one of %s)", where, name, err, strings.Join(targetWords, ", "))
			}
		}
		if k == 0 && slices.Contains(names, "previous") {
			bad("%s: target previous on the first event", where)
		}
		if _, err := s.count(e.Count); err != nil {
			bad("%s: %v", where, err)
		}
		for _, g := range e.Groups {
			for _, name := range g {
				if _, err := s.replica(name); err != nil {
					bad("%s: group member %s: %v", where, name, err)
				}
			}
		}
		if len(e.Groups) > 0 && e.Action != ActionPartition {
			bad("%s: groups only apply to partition", where)
		}
		if e.Action == ActionByzantine && !slices.Contains(config.ByzantineModes, e.Mode) {
			bad("%s: mode %q: want one of %s", where, e.Mode, strings.Join(config.ByzantineModes, ", "))
		}
		if e.Mode != "" && e.Action != ActionByzantine {
			bad("%s: mode only applies to byzantine", where)
		}
		s.validateLinkEvent(where, e, bad)
		if e.MinThroughputRatio < 0 || e.MinThroughputRatio > 1 {
			bad("%s: min_throughput_ratio %g: want 0 to 1", where, e.MinThroughputRatio)
		}
		if e.MaxP99Ratio != 0 && e.MaxP99Ratio < 1 {
			bad("%s: max_p99_ratio %g: want 1 or more (0: no check)", where, e.MaxP99Ratio)
		}
	}
	return errors.Join(errs...)
}

// validateLinkEvent checks the fields of link and heal-links events.
func (s *Scenario) validateLinkEvent(where string, e Event, bad func(string, ...any)) {
	isLink := e.Action == ActionLink
	if (isLink || e.Action == ActionHealLinks) && s.Network == nil {
		bad("%s: needs a [network] (replicas on emulated links)", where)
		return
	}
	if !isLink {
		if e.From != nil || e.To != nil || len(e.Between) > 0 || !e.LinkSettings.empty() {
			bad("%s: from, to, between and link settings (delay, jitter, reorder, loss, bandwidth, cut) only apply to link", where)
		}
		return
	}
	from, to, _, err := e.linkSpec().sides()
	if err != nil {
		bad("%s: %v", where, err)
	}
	for _, name := range slices.Concat(from, to) {
		if _, err := s.Network.endpoints(s, name, 0); err != nil {
			bad("%s: %v", where, err)
		}
	}
	if e.LinkSettings.empty() {
		bad("%s: sets nothing (delay, jitter, reorder, loss, bandwidth, cut)", where)
	}
	if err := e.LinkSettings.validate(); err != nil {
		bad("%s: %v", where, err)
	}
}

// replica resolves a replica name ("node2" or "2").
func (s *Scenario) replica(name string) (int, error) {
	n := strings.TrimPrefix(name, "node")
	i, err := strconv.Atoi(n)
	if err != nil || i < 0 || i >= s.N {
		return 0, fmt.Errorf("no replica %q (replicas are node0 to node%d)", name, s.N-1)
	}
	return i, nil
}

// count reads an event's count: a number or "f".
func (s *Scenario) count(v any) (int, error) {
	switch c := v.(type) {
	case nil:
		return 1, nil
	case int64:
		if c < 1 || int(c) > s.N {
			return 0, fmt.Errorf("count %d: want 1 to n", c)
		}
		return int(c), nil
	case string:
		if c == "f" {
			return max(1, s.F()), nil
		}
	}
	return 0, fmt.Errorf("count %v: want a number or \"f\"", v)
}

// targetNames reads an event's target: a string or a list of strings.
func targetNames(v any) ([]string, error) {
	switch t := v.(type) {
	case nil:
		return nil, nil
	case string:
		return []string{t}, nil
	case []any:
		var out []string
		for _, x := range t {
			s, ok := x.(string)
			if !ok {
				return nil, fmt.Errorf("target %v: want names", v)
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, fmt.Errorf("target %v: want a name or a list of names", v)
}
