package scenario

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/bench"
	"github.com/p2pbft/p2pbft/internal/netlab"
	"github.com/p2pbft/p2pbft/node/config"
)

const sample = `
name = "s"
n = 7
[nodes]
request_timeout = "3s"
store_sync = false
[load]
mode = "open"
rate = 500
clients = 32
size = 200
keys = "zipf"
[[events]]
after = "10s"
action = "kill"
target = ["primary", "backup"]
count = "f"
[[events]]
after_requests = 1000
action = "start"
target = "previous"
catch_up_within = "5s"
[short]
tail = "1s"
[short.load]
size = 120
[[short.events]]
after = "1s"
action = "pause"
target = "node3"
`

func TestParseFullAndShort(t *testing.T) {
	full, err := Parse([]byte(sample), false)
	if err != nil {
		t.Fatal(err)
	}
	if full.N != 7 || full.F() != 2 || len(full.Events) != 2 || full.Load.Size != 200 || full.Load.Keys != "zipf" ||
		full.Load.Rate != 500 || full.Tail.D() != 3*time.Second || full.IsShort() {
		t.Fatalf("full form: %+v", full)
	}
	if c, _ := full.count(full.Events[0].Count); c != 2 {
		t.Fatalf("count f = %d", c)
	}
	if full.Events[1].CatchUpWithin == nil || full.Events[1].CatchUpWithin.D() != 5*time.Second || full.Events[0].CatchUpWithin != nil {
		t.Fatalf("per-event bound: %+v", full.Events)
	}
	short, err := Parse([]byte(sample), true)
	if err != nil {
		t.Fatal(err)
	}
	// The short form's events replace the whole list; its tables replace only the fields they name.
	if !short.IsShort() || len(short.Events) != 1 || short.Events[0].Action != ActionPause || short.Events[0].Target != "node3" ||
		short.Load.Size != 120 || short.Load.Rate != 500 || short.Tail.D() != time.Second || short.N != 7 {
		t.Fatalf("short form: %+v", short)
	}
	var c config.Config = config.Default()
	full.Nodes.Apply(&c)
	if c.Consensus.RequestTimeout != 3*time.Second || c.Store.Sync || c.Consensus.BatchMaxRequests != config.Default().Consensus.BatchMaxRequests {
		t.Fatalf("node settings: %+v", c.Consensus)
	}
}

func TestParseErrors(t *testing.T) {
	base := "[load]\nclients = 4\n"
	for _, tc := range []struct{ src, want string }{
		{base + "bogus = 1\n", "unknown key"},
		{base + "[short]\nnope = 2\n", "unknown key"},
		{"n = 100\n" + base, "n = 100"},
		{base + "[[events]]\naction = \"explode\"\ntarget = \"node0\"\n", "action \"explode\""},
		{base + "[[events]]\naction = \"kill\"\n", "no target"},
		{base + "[[events]]\naction = \"kill\"\ntarget = \"node9\"\n", "no replica \"node9\""},
		{base + "[[events]]\naction = \"kill\"\ntarget = \"previous\"\n", "previous on the first event"},
		{base + "[[events]]\naction = \"kill\"\ntarget = \"backup\"\ncount = \"g\"\n", "count"},
		{base + "[[events]]\naction = \"heal\"\ntarget = \"node1\"\n", "takes no target"},
		{base + "[[events]]\naction = \"byzantine\"\ntarget = \"node1\"\n", "mode \"\""},
		{base + "[[events]]\naction = \"byzantine\"\ntarget = \"node1\"\nmode = \"sneaky\"\n", "mode \"sneaky\""},
		{base + "[[events]]\naction = \"kill\"\ntarget = \"node1\"\nmode = \"x\"\n", "mode only applies"},
		{base + "[[events]]\naction = \"pause\"\ntarget = \"node1\"\nmin_throughput_ratio = 1.5\n", "min_throughput_ratio 1.5"},
		{base + "[[events]]\naction = \"pause\"\ntarget = \"node1\"\nmax_p99_ratio = 0.5\n", "max_p99_ratio 0.5"},
		{"[byzantine]\nnode0 = \"equivocate\"\nnode1 = \"silent\"\n" + base, "tolerates f = 1"},
		{"[load]\nmode = \"open\"\n", "rate must be positive"},
		{"[load]\nrequests = 10\n", "timeline bounds"},
		{base + "[[events]]\naction = \"partition\"\ngroups = [[\"node0\", \"node7\"]]\n", "node7"},
	} {
		_, err := Parse([]byte(tc.src), false)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.src, err, tc.want)
		}
	}
}

// The shipped examples parse in both forms.
func TestExamplesParse(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "scenarios", "*.toml"))
	if err != nil || len(files) < 6 {
		t.Fatalf("%d example scenarios (%v)", len(files), err)
	}
	for _, f := range files {
		for _, short := range []bool{false, true} {
			s, err := Load(f, short)
			if err != nil {
				t.Fatal(err)
			}
			if s.Name+".toml" != filepath.Base(f) {
				t.Errorf("%s is named %q", f, s.Name)
			}
			if len(s.Events) == 0 {
				t.Errorf("%s (short %v): no events", f, short)
			}
		}
	}
}

// The load window a degradation check reads: accepted requests by completion, latency by issue time.
func TestLoadWindow(t *testing.T) {
	ms := time.Millisecond
	recs := []bench.Record{
		{Issued: 0, Done: 10 * ms, OK: true},
		{Issued: 5 * ms, Done: 900 * ms, OK: true},
		{Issued: 950 * ms, Done: 1100 * ms, OK: true},
		{Issued: 990 * ms, Done: 1000 * ms, OK: false},
	}
	w := window(recs, 0, time.Second)
	if w.accepted != 2 || w.rate != 2 || w.p99 != 895*ms {
		t.Fatalf("window %+v", w)
	}
	if w := window(recs, time.Second, 2*time.Second); w.accepted != 1 || w.p99 != 0 {
		t.Fatalf("second window %+v", w)
	}
}

const networkSample = `
n = 4
[network]
client = "eu"
[network.regions]
eu = ["node0", "node1"]
us = ["node2"]
ap = ["node3"]
[[network.paths]]
between = ["eu", "us"]
delay = "20ms"
jitter = "1ms"
[[network.paths]]
from = "us"
to = "ap"
delay = "80ms"
loss = 0.01
[[network.paths]]
between = ["eu", "eu"]
delay = "1ms"
[[network.links]]
from = "node0"
to = ["node2", "client"]
bandwidth = "10mbit"
[load]
clients = 4
[[events]]
action = "link"
from = "primary"
to = "all"
cut = true
[[events]]
action = "link"
between = ["eu", "ap"]
loss = 0.05
delay = "150ms"
[[events]]
action = "heal-links"
[short]
[[short.network.links]]
between = ["node1", "node3"]
loss = 0.5
`

// A latency matrix, per-link overrides, link events and their endpoints.
func TestParseNetwork(t *testing.T) {
	s, err := Parse([]byte(networkSample), false)
	if err != nil {
		t.Fatal(err)
	}
	nw := s.Network
	ms := time.Millisecond
	base := nw.base(s)
	const client = 4
	for _, tc := range []struct {
		from, to int
		want     netlab.LinkProps
	}{
		{0, 2, netlab.LinkProps{Delay: 20 * ms, Jitter: ms, Bandwidth: 10_000_000}}, // eu->us, and the link override
		{2, 0, netlab.LinkProps{Delay: 20 * ms, Jitter: ms}},                        // between: both ways
		{1, 2, netlab.LinkProps{Delay: 20 * ms, Jitter: ms}},
		{2, 3, netlab.LinkProps{Delay: 80 * ms, Loss: 0.01}}, // from/to: one way
		{3, 2, netlab.LinkProps{}},
		{0, 1, netlab.LinkProps{Delay: ms}},
		{client, 0, netlab.LinkProps{Delay: ms}}, // the client is in eu
		{0, client, netlab.LinkProps{Delay: ms, Bandwidth: 10_000_000}},
		{client, 2, netlab.LinkProps{Delay: 20 * ms, Jitter: ms}},
		{0, 3, netlab.LinkProps{}}, // no path eu-ap
	} {
		if got := base[tc.from][tc.to]; got != tc.want {
			t.Errorf("link %d->%d: %+v, want %+v", tc.from, tc.to, got, tc.want)
		}
	}
	// Link events: primary and all; a region includes the client when it is the client's region.
	pairs, err := nw.pairs(s, s.Events[0].linkSpec(), 1)
	if err != nil || fmt.Sprint(pairs) != "[[1 0] [1 2] [1 3]]" {
		t.Fatalf("primary -> all with primary 1: %v, %v", pairs, err)
	}
	pairs, err = nw.pairs(s, s.Events[1].linkSpec(), 0)
	if err != nil || fmt.Sprint(pairs) != "[[0 3] [3 0] [1 3] [3 1] [4 3] [3 4]]" {
		t.Fatalf("between eu and ap: %v, %v", pairs, err)
	}
	if l := linkLabel(s.Events[0], "node1"); l != "link node1 (primary) -> all: cut" {
		t.Errorf("label %q", l)
	}
	if l := linkLabel(s.Events[1], "node1"); l != "link eu <-> ap: delay 150ms, loss 5%" {
		t.Errorf("label %q", l)
	}
	// The short form replaces the links and leaves the full form alone.
	short, err := Parse([]byte(networkSample), true)
	if err != nil {
		t.Fatal(err)
	}
	if len(short.Network.Links) != 1 || len(s.Network.Links) != 1 || s.Network.Links[0].Bandwidth != "10mbit" ||
		short.Network.base(short)[3][1].Loss != 0.5 || short.Network.Client != "eu" || len(short.Network.Paths) != 3 {
		t.Fatalf("short network %+v (full %+v)", short.Network, s.Network)
	}
}

func TestParseNetworkErrors(t *testing.T) {
	net := "[network]\nclient = \"eu\"\n[network.regions]\neu = [\"node0\", \"node1\"]\nus = [\"node2\", \"node3\"]\n"
	base := "[load]\nclients = 4\n"
	for _, tc := range []struct{ src, want string }{
		{"[network]\nclient = \"eu\"\n" + base, "regions: none"},
		{"[network]\nclient = \"eu\"\n[network.regions]\neu = [\"node0\", \"node1\", \"node2\"]\n" + base, "node3 in no region"},
		{"[network]\nclient = \"eu\"\n[network.regions]\neu = [\"node0\", \"node1\"]\nus = [\"node1\", \"node2\", \"node3\"]\n" + base, "node1 is in regions eu and us"},
		{"[network]\nclient = \"mars\"\n[network.regions]\neu = [\"node0\", \"node1\", \"node2\", \"node3\"]\n" + base, `client "mars"`},
		{"[network]\nclient = \"all\"\n[network.regions]\nall = [\"node0\", \"node1\", \"node2\", \"node3\"]\n" + base, `region "all"`},
		{"[network]\nclient = \"eu\"\n[network.regions]\neu = [\"node0\", \"node1\", \"node2\", \"node9\"]\n" + base, `no replica "node9"`},
		{net + "[[network.paths]]\nbetween = [\"eu\", \"asia\"]\ndelay = \"1ms\"\n" + base, `"asia" is not a region`},
		{net + "[[network.paths]]\nbetween = [\"eu\", \"us\"]\nloss = 2.0\n" + base, "loss 2"},
		{net + "[[network.paths]]\nbetween = [\"eu\", \"us\"]\nbandwidth = \"fast\"\n" + base, `bandwidth "fast"`},
		{net + "[[network.paths]]\nbetween = [\"eu\", \"us\"]\n" + base, "sets nothing"},
		{net + "[[network.paths]]\nbetween = [\"eu\", \"us\"]\ncut = true\n" + base, "the network starts connected"},
		{net + "[[network.paths]]\nfrom = \"eu\"\nbetween = [\"eu\", \"us\"]\ndelay = \"1ms\"\n" + base, "not both"},
		{net + "[[network.paths]]\nfrom = \"eu\"\ndelay = \"1ms\"\n" + base, "no from and to"},
		{net + "[[network.links]]\nfrom = \"node0\"\nto = \"primary\"\ndelay = \"1ms\"\n" + base, `"primary" is only known during the run`},
		{net + "[[network.links]]\nfrom = \"node0\"\nto = \"moon\"\ndelay = \"1ms\"\n" + base, `endpoint "moon"`},
		{net + base + "[[events]]\naction = \"link\"\nfrom = \"node0\"\nto = \"all\"\n", "sets nothing"},
		{net + base + "[[events]]\naction = \"link\"\nfrom = \"node0\"\nto = \"x\"\ncut = true\n", `endpoint "x"`},
		{net + base + "[[events]]\naction = \"link\"\ntarget = \"node0\"\nfrom = \"node0\"\nto = \"all\"\ncut = true\n", "takes no target"},
		{net + base + "[[events]]\naction = \"kill\"\ntarget = \"node0\"\nloss = 0.1\n", "only apply to link"},
		{net + base + "[[events]]\naction = \"heal-links\"\ntarget = \"node0\"\n", "takes no target"},
		{base + "[[events]]\naction = \"link\"\nfrom = \"node0\"\nto = \"all\"\ncut = true\n", "needs a [network]"},
		{base + "[[events]]\naction = \"heal-links\"\n", "needs a [network]"},
	} {
		_, err := Parse([]byte(tc.src), false)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.src, err, tc.want)
		}
	}
}

// Without root, a scenario with [network] fails at once and says why.
func TestNetworkNeedsRoot(t *testing.T) {
	if err := netlab.Available(); err == nil {
		t.Skip("this machine can run network namespaces (root): the example scenarios run the [network] ones")
	}
	s, err := Parse([]byte(networkSample), true)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Run(context.Background(), s, Options{Binary: "p2pbft", Dir: filepath.Join(t.TempDir(), "out")})
	if err == nil || !strings.Contains(err.Error(), "needs root and network namespaces") {
		t.Fatalf("Run without root: %v", err)
	}
}

// The degradation check compares a fault with the healthy load on both sides of it: a machine that slowed
// down from the fault on (and stayed slow after it ended) is not the fault's cost, a fault that costs
// the load shows against both sides, and a fault nothing ends is compared with the window before it.
func TestCheckDegradationBaseline(t *testing.T) {
	// load issues one request every 1/rate s in each second of the timeline, each taking 10 ms.
	load := func(rates ...int) []bench.Record {
		var recs []bench.Record
		for sec, rate := range rates {
			for i := range rate {
				issued := time.Duration(sec)*time.Second + time.Duration(i)*time.Second/time.Duration(rate)
				recs = append(recs, bench.Record{Issued: issued, Done: issued + 10*time.Millisecond, OK: true})
			}
		}
		return recs
	}
	events := []Event{
		{Action: ActionPause, MinThroughputRatio: 0.8, MaxP99Ratio: 3},
		{Action: ActionResume},
	}
	steps := []Step{{Action: ActionPause, AtS: 2}, {Action: ActionResume, AtS: 4}}
	for _, tc := range []struct {
		name   string
		events []Event
		steps  []Step
		rates  []int
		pass   bool
	}{
		{"machine slowed from the fault on", events, steps, []int{100, 100, 60, 60, 60, 60}, true},
		{"the fault costs the load", events, steps, []int{100, 100, 40, 40, 100, 100}, false},
		{"machine slowed only after", events, steps, []int{100, 100, 90, 90, 50, 50}, true},
		{"no end: only before", events[:1], steps[:1], []int{100, 100, 60, 60, 60, 60}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &runner{s: &Scenario{Events: tc.events}, out: &Outcome{Steps: tc.steps}}
			r.checkDegradation(load(tc.rates...))
			if len(r.out.Checks) != 1 || r.out.Checks[0].Pass != tc.pass {
				t.Fatalf("checks %+v, want one with pass %v", r.out.Checks, tc.pass)
			}
			t.Log(r.out.Checks[0].Detail)
		})
	}
}
