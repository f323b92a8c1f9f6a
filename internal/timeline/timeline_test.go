package timeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"image"
	"image/color"
	"image/png"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/node/api/apitypes"
	"github.com/p2pbft/p2pbft/node/trace"
)

const ms1 = int64(1e6) // one millisecond in ns
const t0 = int64(1_700_000_000_000_000_000)

// replicaRecords makes replica r's records of slots 1..slots in view 0 (primary 0) and, if vc, of a view
// change to view 1 after them. Replica 3 is slow: its steps come later, and seq 3 takes 40 ms longer.
func replicaRecords(r, slots int, vc bool) apitypes.TraceResponse {
	resp := apitypes.TraceResponse{Replica: r, Enabled: true, Now: t0 + 10_000*ms1}
	lag := int64(0)
	if r == 3 {
		lag = 2 * ms1
	}
	for s := 1; s <= slots; s++ {
		base := t0 + int64(s)*20*ms1
		extra := int64(0)
		if s == 3 {
			extra = 40 * ms1
		}
		sl := trace.Slot{View: 0, Seq: uint64(s), PrePrepareFrom: -1, Requests: 10, Bytes: 1400}
		if r == 0 {
			sl.PrePrepareSent = base
		} else {
			sl.PrePrepareReceived, sl.PrePrepareFrom = base+ms1+lag, 0
		}
		sl.Prepares = []trace.Vote{{From: 1, At: base + 2*ms1}, {From: 2, At: base + 2*ms1 + lag}}
		sl.Prepared = base + 3*ms1 + lag + extra
		sl.Commits = []trace.Vote{{From: 0, At: base + 4*ms1}, {From: 1, At: base + 4*ms1 + extra}}
		sl.Committed = base + 5*ms1 + lag + extra + int64(s%2)*ms1
		// The later phases vary from slot to slot, so that each has a spread to draw.
		sl.Executed = sl.Committed + ms1/2*int64(1+s%3)
		sl.Durable = sl.Executed + ms1*int64(1+s%2)
		sl.Replied = sl.Durable + ms1/4*int64(1+s%4)
		resp.Slots = append(resp.Slots, sl)
	}
	if vc {
		base := t0 + int64(slots+2)*20*ms1
		v := trace.ViewChange{View: 1, Sent: base + int64(r)*ms1, Received: []trace.Vote{{From: (r + 1) % 4, At: base + 3*ms1}}}
		if r == 1 {
			v.NewViewSent = base + 10*ms1
		} else {
			v.NewViewReceived = base + 11*ms1
		}
		v.FirstCommit, v.FirstCommitSeq = base+30*ms1, uint64(slots+1)
		resp.ViewChanges = append(resp.ViewChanges, v)
	}
	return resp
}

func sample(slots int, vc bool) *Trace {
	var rs []apitypes.TraceResponse
	for r := range 4 {
		rs = append(rs, replicaRecords(r, slots, vc))
	}
	t := &Trace{}
	for _, r := range rs {
		t.Sources = append(t.Sources, Source{API: "test", Replica: r.Replica, Enabled: true, Now: r.Now})
	}
	t.Slots, t.ViewChanges = Merge(rs)
	return t
}

func TestMergeLinesUpSlotsAndOrigins(t *testing.T) {
	tr := sample(4, true)
	if len(tr.Slots) != 4 || len(tr.ViewChanges) != 1 {
		t.Fatalf("merged %d slots and %d view changes, want 4 and 1", len(tr.Slots), len(tr.ViewChanges))
	}
	for i, s := range tr.Slots {
		if s.Seq != uint64(i+1) || s.Primary != 0 || len(s.Replicas) != 4 {
			t.Fatalf("slot %d: seq %d primary %d replicas %d", i, s.Seq, s.Primary, len(s.Replicas))
		}
		if s.Origin != s.Replicas[0].PrePrepareSent {
			t.Errorf("seq %d: origin %d, want the primary's pre-prepare %d", s.Seq, s.Origin, s.Replicas[0].PrePrepareSent)
		}
	}
	vc := tr.ViewChanges[0]
	if vc.Origin != vc.Replicas[0].Sent {
		t.Errorf("view change origin %d, want the first VIEW-CHANGE sent %d", vc.Origin, vc.Replicas[0].Sent)
	}
	if got, want := vc.NewView(), vc.Replicas[1].NewViewSent; got != want {
		t.Errorf("NewView() = %d, want the primary's NEW-VIEW %d", got, want)
	}

	// Without the primary's records, the origin is the first pre-prepare a backup saw and the primary is
	// who sent it.
	var backups []apitypes.TraceResponse
	for r := 1; r < 4; r++ {
		backups = append(backups, replicaRecords(r, 2, false))
	}
	slots, _ := Merge(backups)
	if s := slots[0]; s.Primary != 0 || s.Origin != s.Replicas[0].PrePrepareReceived {
		t.Errorf("without the primary: primary %d origin %d, want 0 and %d", s.Primary, s.Origin, s.Replicas[0].PrePrepareReceived)
	}
	if got := tr.Replicas(); len(got) != 4 || got[3] != 3 {
		t.Errorf("Replicas() = %v", got)
	}
	if s := tr.Slowest(); s == nil || s.Seq != 3 {
		t.Errorf("Slowest() = %+v, want seq 3", s)
	}
}

func TestFetchListsReplicasThatFailed(t *testing.T) {
	var srvs []*httptest.Server
	for r := range 3 {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if req.URL.Path != "/v1/trace" || req.URL.Query().Get("limit") != "3" {
				http.Error(w, "unexpected "+req.URL.String(), http.StatusBadRequest)
				return
			}
			if r == 2 {
				w.WriteHeader(http.StatusServiceUnavailable)
				json.NewEncoder(w).Encode(map[string]string{"error": "replica is shutting down"})
				return
			}
			json.NewEncoder(w).Encode(replicaRecords(r, 5, false))
		}))
		defer srv.Close()
		srvs = append(srvs, srv)
	}
	urls := []string{srvs[0].URL, srvs[1].URL + "/", srvs[2].URL}
	tr, err := Fetch(context.Background(), srvs[0].Client(), urls, Query{Limit: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Sources) != 3 || tr.Sources[0].Error != "" || tr.Sources[1].Replica != 1 ||
		!strings.Contains(tr.Sources[2].Error, "replica is shutting down") {
		t.Fatalf("sources: %+v", tr.Sources)
	}
	// Each replica sent 5 slots; the latest 3 are kept.
	if len(tr.Slots) != 3 || tr.Slots[0].Seq != 3 || len(tr.Slots[0].Replicas) != 2 {
		t.Fatalf("slots: %d, first seq %d", len(tr.Slots), tr.Slots[0].Seq)
	}
	_, err = Fetch(context.Background(), srvs[0].Client(), urls[2:], Query{Limit: 3})
	if !errors.Is(err, ErrNoAnswer) || !strings.Contains(err.Error(), "shutting down") {
		t.Fatalf("no replica answering: err = %v, want ErrNoAnswer with the reason", err)
	}
}

func TestWriteText(t *testing.T) {
	var b bytes.Buffer
	WriteText(&b, sample(2, true))
	out := b.String()
	for _, want := range []string{
		"seq 1  view 0  primary 0  10 requests  1400 bytes",
		"  0 (P)           0.00       3.00       6.00      7.00     9.00     9.50  1@2.00 2@2.00 | 0@4.00 1@4.00",
		"view change to 1 (ms after the first VIEW-CHANGE sent)",
		"  1 (P)           1.00     10.00     30.00 (3)  2@3.00",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	WriteText(&b, &Trace{})
	if b.String() != "(no trace records)\n" {
		t.Errorf("empty trace: %q", b.String())
	}
}

// countColor counts the pixels of img that are exactly c.
func countColor(img image.Image, c color.RGBA) int {
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if color.RGBAModel.Convert(img.At(x, y)).(color.RGBA) == c {
				n++
			}
		}
	}
	return n
}

func readPNG(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return img
}

func TestTimelinePNGDrawsEveryPhaseAndTheViewChange(t *testing.T) {
	dir := t.TempDir()
	tr := sample(3, false)
	// A view change inside the drawn time: between seq 2 and seq 3.
	tr.ViewChanges = []ViewChange{{View: 1, Origin: t0 + 45*ms1, Replicas: []ReplicaViewChange{
		{Replica: 1, ViewChange: trace.ViewChange{View: 1, Sent: t0 + 45*ms1, NewViewSent: t0 + 55*ms1}}}}}
	path := filepath.Join(dir, "trace.png")
	if err := WriteTimelinePNG(tr, "test", path); err != nil {
		t.Fatal(err)
	}
	img := readPNG(t, path)
	if b := img.Bounds(); b.Dx() != 1100 || b.Dy() < 300 {
		t.Fatalf("size %v", b)
	}
	for _, ph := range slotPhases {
		// The legend's swatch alone is small; the bars of 3 slots x 4 replicas make many more pixels.
		if n := countColor(img, ph.color); n < 200 {
			t.Errorf("phase %q: %d pixels of its colour, want its bars drawn", ph.name, n)
		}
	}
	if n := countColor(img, colorQuorum); n < 100 {
		t.Errorf("quorum marks: %d black pixels", n)
	}

	// Many slots: only the latest DefaultTimelineSlots are drawn, so the picture keeps its size.
	big := sample(40, true)
	if err := WriteTimelinePNG(big, "test", path); err != nil {
		t.Fatal(err)
	}
	if h := readPNG(t, path).Bounds().Dy(); h > 1400 {
		t.Errorf("40 slots drawn %d pixels high: the latest %d slots only should be drawn", h, DefaultTimelineSlots)
	}
	if err := WriteTimelinePNG(&Trace{}, "empty", path); err != nil {
		t.Errorf("empty trace: %v", err)
	}
	if err := WriteTimelinePNG(tr, "test", filepath.Join(dir, "missing", "x.png")); err == nil {
		t.Error("a path in a missing folder: no error")
	}
}

func TestPhasesPNG(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "phases.png")
	if err := WritePhasesPNG(sample(30, true), "test", path); err != nil {
		t.Fatal(err)
	}
	img := readPNG(t, path)
	for _, ph := range slotPhases {
		if n := countColor(img, ph.color); n < 50 {
			t.Errorf("phase %q: %d pixels of its colour, want its box", ph.name, n)
		}
	}
	if err := WritePhasesPNG(&Trace{}, "empty", path); err != nil {
		t.Errorf("empty trace: %v", err)
	}
	d := durations(sample(2, false))
	if len(d[0]) != 8 || d[0][0] != 3 || d[1][0] != 3 {
		t.Errorf("durations of pre-prepare → prepared: %v, prepared → committed: %v", d[0], d[1])
	}
}

// TestWriteExamplePictures writes both pictures of a sample trace to $TIMELINE_PNG_DIR, for a person to
// look at; it does nothing without it.
func TestWriteExamplePictures(t *testing.T) {
	dir := os.Getenv("TIMELINE_PNG_DIR")
	if dir == "" {
		t.Skip("set TIMELINE_PNG_DIR to write the example pictures")
	}
	tr := sample(6, false)
	tr.ViewChanges = []ViewChange{{View: 1, Origin: t0 + 85*ms1, Replicas: []ReplicaViewChange{
		{Replica: 1, ViewChange: trace.ViewChange{View: 1, Sent: t0 + 85*ms1, NewViewSent: t0 + 95*ms1}}}}}
	if err := WriteTimelinePNG(tr, "sample", filepath.Join(dir, "trace.png")); err != nil {
		t.Fatal(err)
	}
	if err := WritePhasesPNG(sample(30, true), "sample", filepath.Join(dir, "phases.png")); err != nil {
		t.Fatal(err)
	}
}

func TestWriteFiles(t *testing.T) {
	dir := t.TempDir()
	tr := sample(30, true)
	tr.Sources = append(tr.Sources, Source{API: "http://127.0.0.1:1", Replica: -1, Error: "connection refused"})
	if err := WriteFiles(dir, tr, "test"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, FileJSON))
	if err != nil {
		t.Fatal(err)
	}
	var back Trace
	if err := json.Unmarshal(b, &back); err != nil || len(back.Slots) != 30 || len(back.ViewChanges) != 1 {
		t.Fatalf("trace.json: %v, %d slots", err, len(back.Slots))
	}
	txt, err := os.ReadFile(filepath.Join(dir, FileText))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"30 slots and 1 view changes from 5 replicas", "http://127.0.0.1:1: no records: connection refused",
		"== the slowest slot ==\n\nseq 3 ", "== view changes ==", "== the latest 20 slots ==\n\nseq 11 "} {
		if !strings.Contains(string(txt), want) {
			t.Errorf("trace.txt lacks %q:\n%s", want, txt)
		}
	}
	for _, name := range []string{FileTimeline, FilePhases} {
		readPNG(t, filepath.Join(dir, name))
	}
	if err := WriteFiles(filepath.Join(dir, "missing"), tr, "test"); err == nil {
		t.Error("a missing folder: no error")
	}
}

func TestSelectAndRead(t *testing.T) {
	tr := sample(10, true)
	got := tr.Select(Query{From: 4, Limit: 3})
	if len(got.Slots) != 3 || got.Slots[0].Seq != 4 || got.Slots[2].Seq != 6 || len(got.ViewChanges) != 0 {
		t.Fatalf("from 4, limit 3: %d slots from %d, %d view changes", len(got.Slots), got.Slots[0].Seq, len(got.ViewChanges))
	}
	if got := tr.Select(Query{Limit: 2}); len(got.Slots) != 2 || got.Slots[0].Seq != 9 {
		t.Fatalf("latest 2: %+v", got.Slots)
	}
	// The view change (after seq 10) is kept with the slots around it.
	if got := tr.Select(Query{From: 10, Limit: 5}); len(got.Slots) != 1 || len(got.ViewChanges) != 0 {
		t.Fatalf("from 10: %d slots, %d view changes", len(got.Slots), len(got.ViewChanges))
	}
	tr.ViewChanges[0].Origin = tr.Slots[8].Origin + ms1
	if got := tr.Select(Query{From: 9, Limit: 1}); len(got.ViewChanges) != 1 {
		t.Fatalf("a view change during seq 9 not kept with it")
	}
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(tr); err != nil {
		t.Fatal(err)
	}
	back, err := Read(&b)
	if err != nil || len(back.Slots) != 10 || back.Slots[3].Replicas[2].Committed != tr.Slots[3].Replicas[2].Committed {
		t.Fatalf("Read: %v", err)
	}
	if _, err := Read(strings.NewReader("{")); err == nil {
		t.Error("Read of a truncated file: no error")
	}
}

// A merged trace read from a file (`p2pbft trace --in`) is whatever the file holds: reading, selecting and
// writing it as text must never panic, whatever the records say. (The pictures are rendered in
// TestPicturesOfDamagedTraces instead: rasterizing under the fuzzer's coverage instrumentation takes
// seconds an input, which would leave the fuzzer nothing but the seed corpus.)
func FuzzReadTrace(f *testing.F) {
	for _, tr := range []*Trace{sample(3, true), sample(1, false), {}} {
		b, err := json.Marshal(tr)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint64(0), 2)
	}
	f.Add([]byte(`{"slots":[{"view":1,"seq":5,"primary":9,"origin":-5,"replicas":[{"replica":-3,"committed":1}]}]}`), uint64(5), 1)
	f.Add([]byte(`{"view_changes":[{"view":2,"origin":1,"replicas":[{"replica":70000}]}]}`), uint64(0), 0)
	f.Fuzz(func(t *testing.T, b []byte, from uint64, limit int) {
		tr, err := Read(bytes.NewReader(b))
		if err != nil {
			return
		}
		sel := tr.Select(Query{From: from, Limit: limit % 16})
		WriteText(io.Discard, sel)
		WriteSummary(io.Discard, sel, 3)
		sel.Slowest()
		sel.Replicas()
	})
}

// Both pictures of a damaged trace (digits of a real one changed at random: times far apart or negative,
// unknown replicas and primaries) are drawn without a panic or an error.
func TestPicturesOfDamagedTraces(t *testing.T) {
	good, err := json.Marshal(sample(3, true))
	if err != nil {
		t.Fatal(err)
	}
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("seed %d: panic: %v", seed, r)
		}
	}()
	digits := []byte("0123456789-")
	drawn := 0
	for range 25 {
		b := bytes.Clone(good)
		for range 1 + rng.IntN(3) {
			if p := rng.IntN(len(b)); b[p] >= '0' && b[p] <= '9' {
				b[p] = digits[rng.IntN(len(digits))]
			}
		}
		tr, err := Read(bytes.NewReader(b))
		if err != nil {
			continue // a leading zero or a stray minus: not JSON
		}
		if err := writeTimeline(io.Discard, tr, "damaged", 12); err != nil {
			t.Fatalf("seed %d: timeline of %s: %v", seed, b, err)
		}
		if err := writePhases(io.Discard, tr, "damaged"); err != nil {
			t.Fatalf("seed %d: phases of %s: %v", seed, b, err)
		}
		drawn++
	}
	if drawn == 0 {
		t.Fatalf("seed %d: no damaged trace was still JSON", seed)
	}
}
