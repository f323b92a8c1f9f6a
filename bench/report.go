package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/p2pbft/p2pbft/testnet"
)

// Result is the outcome of a run: what the load saw, what the replicas report, and the time series for
// the plots. Durations in milliseconds, rates per second.
type Result struct {
	Version string     `json:"version,omitempty"`
	Started time.Time  `json:"started"`
	Machine Machine    `json:"machine"`
	Load    LoadConfig `json:"load"`
	N       int        `json:"n"`
	F       int        `json:"f"`
	Nodes   []Node     `json:"nodes"`
	// Where says what the replicas were: local processes, docker containers, or replicas given by address.
	Where string `json:"where"`
	// WarmupMs and WindowMs: the figures cover [warmup, warmup + window] after the load started.
	WarmupMs float64 `json:"warmup_ms"`
	WindowMs float64 `json:"window_ms"`

	Issued  int64 `json:"issued"`
	Acked   int64 `json:"acked"`
	Failed  int64 `json:"failed"`
	Skipped int64 `json:"skipped,omitempty"`
	// Throughput is the requests accepted (f+1 matching replies) per second in the window; Executed the
	// replicas' own count (p2pbft_requests_executed_total, the most advanced replica) per second.
	Throughput float64 `json:"throughput"`
	Executed   float64 `json:"executed_per_s"`
	// Latency of the requests issued in the window (from due time for an open loop).
	Latency Percentiles `json:"latency_ms"`
	// Batch: requests per block in the window, from p2pbft_chain_block_requests (mean over the replicas).
	BatchMean float64 `json:"batch_mean"`
	Blocks    float64 `json:"blocks"`
	// ViewChanges counts the views entered in the window: the rise of the highest view, or the NEW-VIEWs
	// one replica entered (p2pbft_consensus_new_views_total) if more; ViewStart and ViewEnd the highest view at
	// its ends.
	ViewChanges float64 `json:"view_changes"`
	ViewStart   uint64  `json:"view_start"`
	ViewEnd     uint64  `json:"view_end"`
	// MessagesPerRequest: consensus messages the replicas handed to the network (a broadcast counts once)
	// per executed request; ReceivedPerRequest: consensus envelopes the replicas accepted from each other.
	MessagesPerRequest float64 `json:"messages_per_request"`
	ReceivedPerRequest float64 `json:"received_per_request"`
	// BytesPerRequest: TCP bytes the replica processes sent (all connections: peers and clients; the
	// kernel's bytes_acked read with ss) per executed request; BytesSource says over which replicas ("" if
	// unknown).
	BytesPerRequest float64 `json:"bytes_per_request"`
	BytesSource     string  `json:"bytes_source,omitempty"`
	// Replicas: CPU per replica.
	Replicas []ReplicaUsage `json:"replicas"`
	// Generator: this process's CPU while the window lasted; requests signed ahead and during the run.
	GeneratorCPU  float64  `json:"generator_cpu_cores"`
	Presigned     int      `json:"presigned"`
	PresignMs     float64  `json:"presign_ms"`
	SignedLive    int      `json:"signed_during_run"`
	Retransmitted int64    `json:"retransmitted"`
	Series        Series   `json:"series"`
	Events        []Event  `json:"events,omitempty"`
	Notes         []string `json:"notes,omitempty"`
	records       []Record
}

// Percentiles of a latency distribution, in milliseconds.
type Percentiles struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// ReplicaUsage is one replica's CPU in the window.
type ReplicaUsage struct {
	Name string `json:"name"`
	// Cores is CPU seconds per second; MicrosPerRequest CPU microseconds per executed request (-1 unknown).
	Cores            float64 `json:"cpu_cores"`
	MicrosPerRequest float64 `json:"cpu_us_per_request"`
	// Source: "proc" (/proc/PID/stat) or "metrics" (process_cpu_seconds_total).
	Source string `json:"source,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs    int     `json:"cpus"`
	Model   string  `json:"cpu_model,omitempty"`
	Load    string  `json:"loadavg,omitempty"`
	Go      string  `json:"go"`
	OS      string  `json:"os"`
	MemoryG float64 `json:"memory_gib,omitempty"`
}

// Series are the run's time series, in buckets of BucketMs since the load started.
type Series struct {
	BucketMs float64 `json:"bucket_ms"`
	// T is each bucket's end in seconds; Acked the requests accepted in it per second; P50, P99 and Max
	// the latency of those requests (ms, NaN for none); Executed the replicas' executed requests per
	// second (most advanced replica, at the replica sampling times TS).
	T        []float64 `json:"t"`
	Acked    []float64 `json:"acked_per_s"`
	P50      []float64 `json:"p50_ms"`
	P99      []float64 `json:"p99_ms"`
	Max      []float64 `json:"max_ms"`
	TS       []float64 `json:"sample_t"`
	Executed []float64 `json:"executed_per_s"`
	View     []float64 `json:"view"`
}

// Records returns the per-request records of the run.
func (res *Result) Records() []Record { return res.records }

func (r *Run) result() *Result {
	r.mu.Lock()
	base, final, samples, events := r.baseline, r.final, slices.Clone(r.samples), slices.Clone(r.events)
	r.mu.Unlock()
	recs := r.gen.Records()
	counts := r.gen.Counts()
	res := &Result{Started: r.start.UTC(), Machine: thisMachine(), Load: r.cfg.Load, N: r.t.N(), F: r.t.Genesis.F(),
		Nodes: r.t.Snapshot(), Where: r.t.Where(), Issued: counts.Issued, Acked: counts.Acked, Failed: counts.Failed,
		Skipped: counts.Skipped, Events: events, records: recs}
	res.Presigned, _ = r.gen.Presigned()
	_, pd := r.gen.Presigned()
	res.PresignMs = ms(pd)
	res.SignedLive = r.gen.SignedLive()
	if base == nil {
		// The load ended before the warmup did.
		base = &snapshot{at: 0}
		res.Notes = append(res.Notes, "the load ended before the warmup: the window is the whole run, replica counters unavailable")
	}
	if final == nil {
		final = &snapshot{at: time.Since(r.start)}
	}
	from, to := base.at, final.at
	res.WarmupMs, res.WindowMs = ms(from), ms(to-from)
	window := (to - from).Seconds()

	// The load's view of the window.
	var lat []time.Duration
	var ackedIn int64
	for _, rec := range recs {
		if rec.Rounds > 1 {
			res.Retransmitted++
		}
		if !rec.OK {
			continue
		}
		if rec.Done >= from && rec.Done <= to {
			ackedIn++
		}
		if rec.Issued >= from && rec.Issued <= to {
			lat = append(lat, rec.Latency())
		}
	}
	if window > 0 {
		res.Throughput = float64(ackedIn) / window
	}
	res.Latency = percentiles(lat)

	// The replicas' view of the window.
	if base.metrics != nil && final.metrics != nil {
		var executed, sends, received, batchSum, batchCount float64
		nb := 0
		for i := range base.metrics {
			b, f := base.metrics[i], final.metrics[i]
			if b == nil || f == nil {
				continue
			}
			executed = max(executed, f["p2pbft_requests_executed_total"]-b["p2pbft_requests_executed_total"])
			sends += f.Sum("p2pbft_consensus_sends_total", `result="ok"`) - b.Sum("p2pbft_consensus_sends_total", `result="ok"`)
			received += peerMessages(f) - peerMessages(b)
			if c := f["p2pbft_chain_block_requests_count"] - b["p2pbft_chain_block_requests_count"]; c > 0 {
				batchSum += f["p2pbft_chain_block_requests_sum"] - b["p2pbft_chain_block_requests_sum"]
				batchCount += c
				nb++
			}
			res.ViewChanges = max(res.ViewChanges, f["p2pbft_consensus_new_views_total"]-b["p2pbft_consensus_new_views_total"])
			res.ViewStart = max(res.ViewStart, uint64(b["p2pbft_consensus_view"]))
			res.ViewEnd = max(res.ViewEnd, uint64(f["p2pbft_consensus_view"]))
		}
		if window > 0 {
			res.Executed = executed / window
		}
		if batchCount > 0 {
			res.BatchMean = batchSum / batchCount
			res.Blocks = batchCount / float64(nb)
		}
		if executed > 0 {
			res.MessagesPerRequest = sends / executed
			res.ReceivedPerRequest = received / executed
		}
		// Bytes sent, by process: the kernel's TCP counters (ss), or for a replica in its own network
		// namespace (a container, a netlab host) its interfaces' counters.
		if executed > 0 {
			var sent uint64
			viaTCP, viaNetns := 0, 0
			for i, pid := range final.pids {
				if pid <= 0 || i >= len(base.pids) || base.pids[i] != pid {
					continue
				}
				if b, ok := base.netns[pid]; ok {
					if f, ok := final.netns[pid]; ok && f >= b {
						sent += f - b
						viaNetns++
					}
					continue
				}
				// A process whose sockets ss does not see is unknown, not silent.
				if base.tcpErr == nil && final.tcpErr == nil && len(final.tcp[pid]) > 0 {
					s, _ := tcpDelta(base.tcp[pid], final.tcp[pid])
					sent += s
					viaTCP++
				}
			}
			known := viaTCP + viaNetns
			how := "TCP counters via ss"
			switch {
			case viaNetns == known:
				how = "interfaces of the replicas' network namespaces"
			case viaTCP != known:
				how = "TCP counters via ss and interfaces of network namespaces"
			}
			switch {
			case known == len(final.pids) && known > 0:
				res.BytesPerRequest = float64(sent) / executed
				res.BytesSource = how + ", all replicas"
			case known > 0:
				res.BytesPerRequest = float64(sent) / executed
				res.BytesSource = fmt.Sprintf("%s, %d of %d replicas (the others restarted or are not visible)", how, known, len(final.pids))
			case base.tcpErr != nil:
				res.Notes = append(res.Notes, "bytes per request unknown: "+base.tcpErr.Error())
			}
		}
		for i := range r.t.Nodes {
			u := ReplicaUsage{Name: r.t.Nodes[i].Name, Cores: -1, MicrosPerRequest: -1}
			if i < len(base.cpu) && i < len(final.cpu) && base.cpu[i] >= 0 && final.cpu[i] >= 0 &&
				(i >= len(final.pids) || base.pids[i] == final.pids[i]) {
				d := final.cpu[i] - base.cpu[i]
				if window > 0 {
					u.Cores = d / window
				}
				if executed > 0 {
					u.MicrosPerRequest = d / executed * 1e6
				}
				u.Source = "proc"
				if i < len(final.pids) && final.pids[i] == 0 {
					u.Source = "metrics"
				}
			}
			res.Replicas = append(res.Replicas, u)
		}
		if window > 0 {
			res.GeneratorCPU = (final.self - base.self) / window
		}
	}
	res.Series = buildSeries(recs, samples, r.t.N(), to)
	res.Events = append(res.Events, viewEvents(samples)...)
	slices.SortStableFunc(res.Events, func(a, b Event) int { return int(a.At - b.At) })
	if v := float64(res.ViewEnd) - float64(res.ViewStart); v > res.ViewChanges {
		res.ViewChanges = v
	}
	return res
}

// viewEvents marks every rise of the highest view the replicas reported.
func viewEvents(samples []sample) []Event {
	var out []Event
	var last uint64
	for k, s := range samples {
		var v uint64
		for _, x := range s.view {
			v = max(v, x)
		}
		if k > 0 && v > last {
			out = append(out, Event{At: s.at, Label: fmt.Sprintf("view %d", v), Kind: EventView})
		}
		last = max(last, v)
	}
	return out
}

// peerMessages sums the envelopes a replica accepted from other replicas (direct streams and gossip).
func peerMessages(m testnet.Metrics) float64 {
	return m.Sum("p2pbft_p2p_messages_total", `result="accepted"`, "/msg/") +
		m.Sum("p2pbft_p2p_messages_total", `result="accepted"`, "/consensus/")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func percentiles(lat []time.Duration) Percentiles {
	if len(lat) == 0 {
		return Percentiles{}
	}
	slices.Sort(lat)
	var sum time.Duration
	for _, l := range lat {
		sum += l
	}
	return Percentiles{P50: ms(percentile(lat, 0.5)), P90: ms(percentile(lat, 0.9)), P99: ms(percentile(lat, 0.99)),
		Max: ms(lat[len(lat)-1]), Mean: ms(sum / time.Duration(len(lat)))}
}

// buildSeries buckets the records by completion time (buckets of 1s, or longer so that a run has at most
// 600 of them) and turns the replica samples into rates. Acceptance rates stop at issuedUntil, when the
// load stopped issuing: the replies that trickle in afterwards are no throughput.
func buildSeries(recs []Record, samples []sample, n int, issuedUntil time.Duration) Series {
	var end time.Duration
	for _, r := range recs {
		end = max(end, r.Done)
	}
	bucket := time.Second
	for end/bucket > 600 {
		bucket *= 2
	}
	if end < 10*time.Second {
		bucket = 250 * time.Millisecond
	}
	nb := int(end/bucket) + 1
	s := Series{BucketMs: ms(bucket)}
	lats := make([][]time.Duration, nb)
	acked := make([]int, nb)
	for _, r := range recs {
		if !r.OK {
			continue
		}
		b := int(r.Done / bucket)
		acked[b]++
		lats[b] = append(lats[b], r.Latency())
	}
	for b := range nb {
		bEnd, span := time.Duration(b+1)*bucket, bucket
		if b == nb-1 && end < bEnd {
			// The last bucket ends with the run: its rate is over the part that elapsed.
			span = max(end-time.Duration(b)*bucket, bucket/10)
			bEnd = time.Duration(b)*bucket + span
		}
		s.T = append(s.T, bEnd.Seconds())
		if span < bucket/2 || (issuedUntil > 0 && time.Duration(b)*bucket+bucket/2 > issuedUntil) {
			// After the load stopped issuing, or too short a tail to give a rate: no point.
			s.Acked = append(s.Acked, math.NaN())
		} else {
			s.Acked = append(s.Acked, float64(acked[b])/span.Seconds())
		}
		if len(lats[b]) == 0 {
			s.P50, s.P99, s.Max = append(s.P50, math.NaN()), append(s.P99, math.NaN()), append(s.Max, math.NaN())
			continue
		}
		slices.Sort(lats[b])
		s.P50 = append(s.P50, ms(percentile(lats[b], 0.5)))
		s.P99 = append(s.P99, ms(percentile(lats[b], 0.99)))
		s.Max = append(s.Max, ms(lats[b][len(lats[b])-1]))
	}
	// Executed per second between consecutive samples, by the replica that executed most.
	for k := 1; k < len(samples); k++ {
		a, b := samples[k-1], samples[k]
		dt := (b.at - a.at).Seconds()
		if dt <= 0 {
			continue
		}
		rate := math.NaN()
		for i := 0; i < n && i < len(a.executed) && i < len(b.executed); i++ {
			if a.executed[i] >= 0 && b.executed[i] >= a.executed[i] {
				v := (b.executed[i] - a.executed[i]) / dt
				if math.IsNaN(rate) || v > rate {
					rate = v
				}
			}
		}
		var view uint64
		for _, v := range b.view {
			view = max(view, v)
		}
		s.TS = append(s.TS, b.at.Seconds())
		s.Executed = append(s.Executed, rate)
		s.View = append(s.View, float64(view))
	}
	return s
}

// thisMachine describes the machine the run happened on.
func thisMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				if j := strings.IndexByte(l, ':'); j >= 0 {
					m.Model = strings.TrimSpace(l[j+1:])
				}
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			m.Load = strings.Join(f[:3], " ")
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb float64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %f kB", &kb); err == nil {
			m.MemoryG = math.Round(kb/1024/1024*10) / 10
		}
	}
	return m
}

// MarshalJSON encodes the result; gaps (NaN) in the series become -1, which encoding/json accepts.
func (res *Result) MarshalJSON() ([]byte, error) {
	type plain Result
	return json.Marshal((*plain)(res.jsonSafe()))
}

// ReadResult reads a result written by JSON (gaps in the series, written as -1, become NaN again).
func ReadResult(r io.Reader) (*Result, error) {
	var res Result
	if err := json.NewDecoder(r).Decode(&res); err != nil {
		return nil, fmt.Errorf("bench: read result: %w", err)
	}
	unfix := func(xs []float64) {
		for i, x := range xs {
			if x < 0 {
				xs[i] = math.NaN()
			}
		}
	}
	s := &res.Series
	for _, xs := range [][]float64{s.Acked, s.P50, s.P99, s.Max, s.Executed} {
		unfix(xs)
	}
	return &res, nil
}

// JSON writes the result as indented JSON.
func (res *Result) JSON(w io.Writer) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// jsonSafe returns a copy whose series hold no NaN (encoding/json refuses it): gaps become -1.
func (res *Result) jsonSafe() *Result {
	c := *res
	fix := func(xs []float64) []float64 {
		out := slices.Clone(xs)
		for i, x := range out {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				out[i] = -1
			}
		}
		return out
	}
	c.Series.P50, c.Series.P99, c.Series.Max = fix(c.Series.P50), fix(c.Series.P99), fix(c.Series.Max)
	c.Series.Executed, c.Series.Acked = fix(c.Series.Executed), fix(c.Series.Acked)
	return &c
}

// Table writes the result for people.
func (res *Result) Table(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	l := res.Load
	load := fmt.Sprintf("closed loop, %d clients", l.Clients)
	if l.Mode == Open {
		load = fmt.Sprintf("open loop, %.0f req/s offered, up to %d outstanding", l.Rate, l.Clients)
	}
	fmt.Fprintf(tw, "network\tn=%d (f=%d), %s\n", res.N, res.F, res.Where)
	fmt.Fprintf(tw, "load\t%s; %d-byte puts, %s keys over %d; window %.1fs after %.1fs warmup; seed %d\n",
		load, l.Size, l.Keys, l.KeySpace, res.WindowMs/1000, res.WarmupMs/1000, l.Seed)
	fmt.Fprintf(tw, "requests\t%d issued, %d accepted (f+1 matching replies), %d failed", res.Issued, res.Acked, res.Failed)
	if res.Skipped > 0 {
		fmt.Fprintf(tw, ", %d not issued (every client busy)", res.Skipped)
	}
	fmt.Fprintf(tw, ", %d retransmitted\n", res.Retransmitted)
	fmt.Fprintf(tw, "throughput\t%.0f req/s accepted; replicas executed %.0f req/s\n", res.Throughput, res.Executed)
	fmt.Fprintf(tw, "latency\tp50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms  (mean %.2f ms)\n",
		res.Latency.P50, res.Latency.P90, res.Latency.P99, res.Latency.Max, res.Latency.Mean)
	fmt.Fprintf(tw, "batches\t%.1f requests per block, %.0f blocks\n", res.BatchMean, res.Blocks)
	fmt.Fprintf(tw, "view changes\t%.0f (highest view %d -> %d)\n", res.ViewChanges, res.ViewStart, res.ViewEnd)
	fmt.Fprintf(tw, "messages\t%.2f consensus messages sent and %.2f received per request (all replicas)\n", res.MessagesPerRequest, res.ReceivedPerRequest)
	if res.BytesSource != "" {
		fmt.Fprintf(tw, "bytes\t%.0f bytes sent per request (%s)\n", res.BytesPerRequest, res.BytesSource)
	} else {
		fmt.Fprintf(tw, "bytes\tunknown\n")
	}
	var cpu []string
	for _, u := range res.Replicas {
		if u.Cores < 0 {
			cpu = append(cpu, u.Name+" ?")
			continue
		}
		cpu = append(cpu, fmt.Sprintf("%s %.2f cores (%.0f µs/req)", u.Name, u.Cores, u.MicrosPerRequest))
	}
	fmt.Fprintf(tw, "CPU per replica\t%s\n", strings.Join(cpu, ", "))
	fmt.Fprintf(tw, "load generator\t%.2f cores; %d requests signed ahead in %.1fs, %d signed during the run\n",
		res.GeneratorCPU, res.Presigned, res.PresignMs/1000, res.SignedLive)
	fmt.Fprintf(tw, "machine\t%d CPUs %s, load average %s, %s\n", res.Machine.CPUs, res.Machine.Model, res.Machine.Load, res.Machine.Go)
	for _, e := range res.Events {
		what := "event"
		if e.Kind == EventView {
			what = "replicas"
		}
		fmt.Fprintf(tw, "%s\t%6.2fs  %s\n", what, e.At.Seconds(), e.Label)
	}
	for _, n := range res.Notes {
		fmt.Fprintf(tw, "note\t%s\n", n)
	}
	tw.Flush()
}

func fmtClock(d time.Duration) string {
	s := int(d.Seconds())
	return fmt.Sprintf("%02d:%02d", s/60, s%60)
}

func fmtMs(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000)
}
