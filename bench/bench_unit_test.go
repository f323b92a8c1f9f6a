package bench

import (
	"bytes"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/node/app/kv"
	"github.com/p2pbft/p2pbft/pbft"
)

func TestBuildOpSize(t *testing.T) {
	for _, size := range []int{minOpSize, 40, 100, 255, 256, 257, 1000, 65536, 70000} {
		op, err := buildOp(keyName(42), "s1-r2", size)
		if err != nil {
			t.Fatal(err)
		}
		if len(op) != size {
			t.Errorf("size %d: operation of %d bytes", size, len(op))
		}
		o, err := kv.DecodeOp(op)
		if err != nil || o.Type != kv.OpPut || string(o.Key) != "key-00000042" || !strings.HasPrefix(string(o.Value), "s1-r2") {
			t.Errorf("size %d: %+v %v", size, o, err)
		}
	}
}

func TestKeyChooser(t *testing.T) {
	for _, dist := range []string{KeysUniform, KeysZipf} {
		w := Workload{Keys: dist, KeySpace: 1000}.withDefaults()
		if err := w.validate(); err != nil {
			t.Fatal(err)
		}
		a, b := newKeyChooser(w, 7), newKeyChooser(w, 7)
		counts := make([]int, w.KeySpace)
		for range 20000 {
			k := a.next()
			if k != b.next() {
				t.Fatalf("%s: same seed, different keys", dist)
			}
			if k < 0 || k >= w.KeySpace {
				t.Fatalf("%s: key %d outside [0, %d)", dist, k, w.KeySpace)
			}
			counts[k]++
		}
		// zipf: key 0 is by far the most frequent; uniform: no key above 3x its share.
		if dist == KeysZipf && counts[0] < 20000/10 {
			t.Errorf("zipf: key 0 drawn %d times of 20000", counts[0])
		}
		if dist == KeysUniform && counts[0] > 60 {
			t.Errorf("uniform: key 0 drawn %d times of 20000", counts[0])
		}
	}
	if err := (Workload{Keys: "pareto"}).withDefaults().validate(); err == nil {
		t.Error("unknown distribution accepted")
	}
	if err := (Workload{Keys: KeysZipf, ZipfS: 0.9}).withDefaults().validate(); err == nil {
		t.Error("zipf s <= 1 accepted")
	}
}

func TestLoadConfigValidate(t *testing.T) {
	for _, c := range []LoadConfig{
		{Mode: "sideways", Duration: Duration(time.Second)},
		{Mode: Open, Duration: Duration(time.Second)}, // no rate
		{Mode: Closed}, // no bound
		{Mode: Closed, Requests: 10, Workload: Workload{Size: 3}},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	ok := LoadConfig{Mode: Open, Rate: 100, Duration: Duration(time.Second)}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	if n := ok.withDefaults().presignCount(); n < 100 || n > 400 {
		t.Errorf("open loop 100/s for 1s pre-signs %d", n)
	}
}

func TestSessionsTimestampsIncrease(t *testing.T) {
	base, _ := identity.GenerateKey()
	w := Workload{}.withDefaults()
	ss, err := newSessions(base, 3, 2, w, 1)
	if err != nil {
		t.Fatal(err)
	}
	if ss[2].host != 1 || ss[1].host != 0 {
		t.Fatalf("hosts %d %d", ss[1].host, ss[2].host)
	}
	if _, err := presign(ss, 5, "chain", w); err != nil {
		t.Fatal(err)
	}
	v, _ := identity.NewVerifier(nil, 0)
	for _, s := range ss {
		var last uint64
		for range 8 { // 5 pre-signed, 3 signed on the spot
			p, err := s.take("chain", w)
			if err != nil {
				t.Fatal(err)
			}
			if p.ts <= last {
				t.Fatalf("session %d: timestamp %d after %d", s.index, p.ts, last)
			}
			last = p.ts
			if err := v.Verify(p.env); err != nil {
				t.Fatal(err)
			}
			r, err := pbft.DecodeRequest(p.env.Payload)
			if err != nil || r.Timestamp != p.ts || !bytes.Equal(p.env.Author, s.pub) {
				t.Fatalf("request %+v %v", r, err)
			}
		}
		if s.signedLive != 3 {
			t.Fatalf("session %d signed %d live", s.index, s.signedLive)
		}
	}
}

func TestProcessCPUAndListeningPID(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	c0, err := ProcessCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(200 * time.Millisecond)
	x := 0
	for time.Now().Before(deadline) {
		x++
	}
	c1, err := ProcessCPU(os.Getpid())
	if err != nil || c1 < c0 {
		t.Fatalf("cpu %v -> %v: %v", c0, c1, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pid, err := listeningPID(ln.Addr().(*net.TCPAddr).Port)
	if err != nil || pid != os.Getpid() {
		t.Fatalf("listening pid %d (%v), want %d", pid, err, os.Getpid())
	}
	if got := localPID("http://" + ln.Addr().String()); got != os.Getpid() {
		t.Fatalf("localPID %d", got)
	}
	if got := localPID("http://10.1.2.3:80"); got != 0 {
		t.Fatalf("remote address: pid %d", got)
	}
}

func TestPercentilesAndSeries(t *testing.T) {
	var lat []time.Duration
	for i := 1; i <= 100; i++ {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	p := percentiles(lat)
	if p.P50 != 50 || p.P90 != 90 || p.P99 != 99 || p.Max != 100 || p.Mean != 50.5 {
		t.Fatalf("%+v", p)
	}
	var recs []Record
	for i := range 40 {
		at := time.Duration(i) * 100 * time.Millisecond
		recs = append(recs, Record{Issued: at, Done: at + 10*time.Millisecond, OK: i%10 != 9})
	}
	samples := []sample{
		{at: time.Second, executed: []float64{10, 5}, view: []uint64{0, 0}},
		{at: 2 * time.Second, executed: []float64{20, 5}, view: []uint64{0, 1}},
		{at: 3 * time.Second, executed: []float64{-1, 25}, view: []uint64{1, 1}},
	}
	s := buildSeries(recs, samples, 2, 0)
	if s.BucketMs != 250 || len(s.T) != 16 {
		t.Fatalf("buckets %v x %d", s.BucketMs, len(s.T))
	}
	total := 0.0
	for _, a := range s.Acked[:len(s.Acked)-1] {
		total += a * 0.25
	}
	if math.Abs(total-36) > 1 {
		t.Fatalf("acked over the full buckets %v", total)
	}
	if len(s.Executed) != 2 || s.Executed[0] != 10 || s.Executed[1] != 20 {
		t.Fatalf("executed %v", s.Executed)
	}
	ev := viewEvents(samples)
	if len(ev) != 1 || ev[0].At != 2*time.Second || ev[0].Kind != EventView {
		t.Fatalf("view events %+v", ev)
	}
}

// TestWritePlot draws a synthetic run (latency, throughput, a gap, events) as PNG and SVG. Set
// BENCH_PLOT_DIR to keep the files and look at them.
func TestWritePlot(t *testing.T) {
	res := &Result{N: 4, F: 1, Load: LoadConfig{Mode: Closed, Clients: 64}}
	for i := range 120 {
		ts := float64(i+1) * 0.25
		res.Series.T = append(res.Series.T, ts)
		p50, acked := 3+math.Sin(ts), 2000+300*math.Cos(ts/2)
		if ts > 10 && ts < 13 {
			p50, acked = math.NaN(), 0 // a view change: nothing accepted
		}
		res.Series.Acked = append(res.Series.Acked, acked)
		res.Series.P50 = append(res.Series.P50, p50)
		res.Series.P99 = append(res.Series.P99, p50*4)
		res.Series.Max = append(res.Series.Max, p50*9)
		if i%4 == 3 {
			res.Series.TS = append(res.Series.TS, ts)
			res.Series.Executed = append(res.Series.Executed, acked*1.02)
		}
	}
	res.Events = []Event{{At: 9980 * time.Millisecond, Label: "view 1", Kind: EventView}, {At: 10 * time.Second, Label: "kill node1 (primary)"}, {At: 13200 * time.Millisecond, Label: "view 1", Kind: EventView},
		{At: 20 * time.Second, Label: "start node0"}}
	dir := os.Getenv("BENCH_PLOT_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	for _, name := range []string{"synthetic.png", "synthetic.svg"} {
		path := filepath.Join(dir, name)
		if err := WritePlot(res, "synthetic run: primary crash", path); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(path)
		if err != nil || st.Size() < 1000 {
			t.Fatalf("%s: %v %v", name, st, err)
		}
	}
	if err := WritePlot(res, "x", filepath.Join(dir, "x.gif")); err == nil {
		t.Fatal("unknown format accepted")
	}
	var buf bytes.Buffer
	if err := res.JSON(&buf); err != nil || !strings.Contains(buf.String(), `"p50_ms"`) {
		t.Fatalf("json: %v", err)
	}
	buf.Reset()
	res.Table(&buf)
	if !strings.Contains(buf.String(), "kill node1 (primary)") {
		t.Fatalf("table:\n%s", buf.String())
	}
}

func TestStep125(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		up   bool
		want float64
	}{{706, true, 1000}, {2118, true, 5000}, {150, false, 100}, {0.31, false, 0.2}, {4.9, true, 5}, {5, true, 5}, {5, false, 5}, {9.99, false, 5}} {
		if got := step125(tc.v, tc.up); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("step125(%v, %v) = %v, want %v", tc.v, tc.up, got, tc.want)
		}
	}
}
