package scenario

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/bench"
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
