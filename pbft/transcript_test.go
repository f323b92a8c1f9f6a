package pbft

import (
	"cmp"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	"github.com/p2pbft/p2pbft/wire"
	"github.com/p2pbft/p2pbft/wire/wiretest"
)

// Golden transcript tests, in the style of etcd raft's interaction tests. Each file in
// testdata/transcripts is a sequence of commands driving n replicas through the engine's public inputs
// (Propose, Step, Tick, Executed, InstallSnapshot, ApplyCommitted), with the expected output under each
// command. The output shows only what the engine hands out (Ready values, Step errors, Status, Stats),
// printed deterministically: keys come from fixed seeds (wiretest), digests show their first 4 bytes in
// hex (the null batch's as "null"), replicas are r0..r{n-1} and clients are named after their one request.
//
// After an engine change that is meant to change the transcripts, regenerate them and review the diff:
//
//	go test ./pbft/ -run TestTranscripts -rewrite
//
// Commands (lists are comma-separated; no replica= means every replica):
//
//	init n=4 [k=4] [window=] [batch=] [timeout=20] [retransmit=5]
//	    n replicas (CheckpointInterval, Window, MaxBatchRequests, RequestTimeout, RetransmitTimeout; the
//	    rest default); their first Ready (the initial hard state) is handled silently.
//	propose [replica=] requests=a,b   Propose each request (client "a", op "a", timestamp 1); naming a
//	    request again hands in the same envelope, as a client's retransmission would.
//	ready [replica=] [quiet]   handle each replica's Readys as a node must, printing them (unless quiet):
//	    persist, queue the messages, execute Committed with a toy application and report Executed.
//	deliver [from=] [to=] [kind=] [seq=] [quiet]   Step the queued messages that match, in queue order,
//	    printing each with its Step error, or (quiet) a count by kind. Recipients' Readys are not handled.
//	deliver-all   deliver with no filter.  drop [from=] [to=] [kind=] [seq=]   remove matching messages.
//	cut replica=3 / heal replica=3   messages to or from the replica are dropped (queued or later) / not.
//	tick [replica=] [n=1]   Tick n times (Readys accumulate until the next ready).
//	stabilize   ready (quiet) and deliver-all until nothing is left; print counts and every status.
//	status [replica=]   Status() and selected Stats().   log [replica=]   the batches each replica executed.
//	install-snapshot replica=3 from=1 [corrupt]   the driver's state transfer by snapshot: install the
//	    snapshot r1 persisted (HardState.Snapshot) on r3 (corrupt: with a wrong application digest).
//	apply-blocks replica=3 from=1 [first=]   the driver's state transfer by blocks: ApplyCommitted the
//	    blocks r1 executed, from first (default: Applied+1 of r3's last StateTransfer) to its Seq.
func TestTranscripts(t *testing.T) {
	datadriven.Walk(t, "testdata/transcripts", func(t *testing.T, path string) {
		var x *transcript
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			if d.Cmd == "init" {
				x = &transcript{reqs: map[string]*wire.Envelope{}, names: map[string]string{}}
			} else if x == nil {
				d.Fatalf(t, "init first")
			}
			x.t, x.d = t, d
			x.out.Reset()
			x.run()
			return x.out.String()
		})
	})
}

// transcript is the test network: replicas, their stores and applications, and a FIFO message queue.
type transcript struct {
	t      *testing.T
	d      *datadriven.TestData
	out    strings.Builder
	n      int
	reg    *wiretest.Registry
	reps   []*Replica
	stores []*tstore
	apps   []*tapp
	blocks []map[uint64]CommittedBatch // what each replica executed, by sequence number (served as blocks)
	xfers  []*StateTransfer            // the last StateTransfer each replica asked for
	cut    []bool
	ticks  []int
	queue  []tmsg
	reqs   map[string]*wire.Envelope // requests by name
	names  map[string]string         // public key -> "r0" or the client's name
}

func (x *transcript) init() {
	x.n = x.num("n", 4)
	cfg := Config{ChainID: testChain, CheckpointInterval: uint64(x.num("k", 4)), Window: uint64(x.num("window", 0)),
		MaxBatchRequests: x.num("batch", 0), RequestTimeout: x.num("timeout", 20), RetransmitTimeout: x.num("retransmit", 5)}
	var keys []*wiretest.Key
	for i := 0; i < x.n; i++ {
		keys = append(keys, wiretest.NewKey(fmt.Sprintf("replica-%d", i)))
		cfg.Replicas = append(cfg.Replicas, keys[i].PublicKey())
		x.names[string(keys[i].PublicKey())] = fmt.Sprintf("r%d", i)
	}
	x.reg = wiretest.NewRegistry(keys...)
	cfg.Verifier = x.reg
	x.cut, x.ticks, x.xfers = make([]bool, x.n), make([]int, x.n), make([]*StateTransfer, x.n)
	for i := 0; i < x.n; i++ {
		cfg.Signer = keys[i]
		r, err := New(cfg)
		x.must(err)
		x.reps, x.stores, x.apps = append(x.reps, r), append(x.stores, &tstore{}), append(x.apps, newTapp())
		x.blocks = append(x.blocks, map[uint64]CommittedBatch{})
		x.handle(i, false)
	}
	c := cfg.WithDefaults()
	x.printf("%d replicas, f=%d, quorum=%d, K=%d, window=%d, request timeout=%d, retransmit=%d\n",
		x.n, F(x.n), Quorum(x.n), c.CheckpointInterval, c.Window, c.RequestTimeout, c.RetransmitTimeout)
}

func (x *transcript) printf(format string, args ...any) { fmt.Fprintf(&x.out, format, args...) }

func (x *transcript) must(err error) {
	if err != nil {
		x.d.Fatalf(x.t, "%v", err)
	}
}

// run executes one command.
func (x *transcript) run() {
	quiet := x.d.HasArg("quiet")
	switch x.d.Cmd {
	case "init":
		x.init()
	case "propose":
		for _, i := range x.replicas() {
			for _, name := range x.list("requests") {
				x.printf("r%d <- request %s: %s\n", i, name, errText(x.reps[i].Propose(x.request(name))))
			}
		}
	case "ready":
		for _, i := range x.replicas() {
			x.handle(i, !quiet)
		}
	case "deliver", "deliver-all":
		if ms := x.deliver(x.take(), !quiet); quiet {
			x.printf("delivered: %s\n", countLine(ms))
		}
	case "drop":
		x.printf("dropped: %s\n", countLine(x.take()))
	case "cut", "heal":
		for _, i := range x.replicas() {
			x.cut[i] = x.d.Cmd == "cut"
		}
	case "tick":
		for _, i := range x.replicas() {
			for k := x.num("n", 1); k > 0; k-- {
				x.reps[i].Tick()
				x.ticks[i]++
			}
			x.printf("r%d at tick %d\n", i, x.ticks[i])
		}
	case "stabilize":
		x.stabilize()
	case "status":
		x.status(x.replicas())
	case "log":
		for _, i := range x.replicas() {
			for _, seq := range slices.Sorted(maps.Keys(x.blocks[i])) {
				b := x.blocks[i][seq]
				x.printf("r%d executed s%d v%d %s batch %s\n", i, seq, b.View, short(b.Digest), x.requests(b.Batch))
			}
		}
	case "install-snapshot":
		i, from := x.num("replica", 0), x.num("from", 0)
		src := x.stores[from].hs.Snapshot
		app := src.AppDigest
		if x.d.HasArg("corrupt") {
			app[0] ^= 1
		}
		err := x.reps[i].InstallSnapshot(src.Seq, app, src.ClientTable)
		x.printf("r%d installs r%d's snapshot s%d %s: %s\n", i, from, src.Seq, short(app), errText(err))
		if err == nil { // the application's part: the toy application's state is its digest
			x.apps[i].applied, x.apps[i].digest = src.Seq, app
		}
	case "apply-blocks":
		i, from, st := x.num("replica", 0), x.num("from", 0), x.xfers[x.num("replica", 0)]
		if st == nil {
			x.d.Fatalf(x.t, "r%d asked for no state transfer", i)
		}
		for seq := uint64(x.num("first", int(st.Applied+1))); seq <= st.Seq; seq++ {
			b := x.blocks[from][seq]
			err := x.reps[i].ApplyCommitted(seq, b.Batch, b.Cert)
			x.printf("r%d applies r%d's block s%d %s: %s\n", i, from, seq, short(b.Digest), errText(err))
			if err != nil {
				break
			}
		}
	default:
		x.d.Fatalf(x.t, "unknown command %q", x.d.Cmd)
	}
}

// handle drives replica i through its Readys as a node must: persist, send, reply, execute and report.
func (x *transcript) handle(i int, show bool) {
	r := x.reps[i]
	for r.HasReady() {
		rd := r.Ready()
		if show {
			x.printReady(i, &rd)
		}
		x.stores[i].apply(&rd)
		for _, m := range rd.Messages {
			for j := 0; j < x.n; j++ {
				if (m.To == j || m.To == Broadcast && j != i) && !x.cut[i] && !x.cut[j] {
					x.queue = append(x.queue, tmsg{from: i, to: j, env: m.Env})
				}
			}
		}
		for _, cb := range rd.Committed { // no restarts here, so never AlreadyApplied
			x.blocks[i][cb.Seq] = cb
			res, dg := x.apps[i].execute(cb.Seq, cb.Execute)
			if show {
				x.printf("  r%d executes s%d: app digest %s\n", i, cb.Seq, short(dg))
			}
			x.must(r.Executed(cb.Seq, res, dg))
		}
		if rd.StateTransfer != nil {
			x.xfers[i] = rd.StateTransfer
		}
		r.Advance()
	}
}

func (x *transcript) printReady(i int, rd *Ready) {
	x.printf("r%d ready:\n", i)
	if h := rd.HardState; h != nil {
		x.printf("  hardstate: view %d active=%t stable s%d", h.View, h.Active, h.StableSeq)
		if h.StableSeq > 0 {
			x.printf(" %s proof %s", short(h.StableDigest), x.authors(h.StableProof))
		}
		if h.Snapshot != nil {
			x.printf(", snapshot s%d", h.Snapshot.Seq)
		}
		for _, e := range []*wire.Envelope{h.ViewChange, h.NewView} {
			if e != nil {
				x.printf(", own %s", x.describe(e))
			}
		}
		x.printf("\n")
	}
	for _, e := range rd.Entries {
		switch {
		case e.Env != nil:
			x.printf("  persist s%d: %s by %s\n", e.Seq, x.describe(e.Env), x.name(e.Env.Author))
		case e.Cert != nil:
			x.printf("  persist s%d: committed batch %s cert %s\n", e.Seq, x.batch(e.Batch), x.authors(e.Cert))
		default:
			x.printf("  persist s%d: batch body %s\n", e.Seq, x.batch(e.Batch))
		}
	}
	if rd.Truncate != 0 {
		x.printf("  truncate log <= s%d\n", rd.Truncate)
	}
	for _, m := range rd.Messages {
		x.printf("  send to %s: %s\n", map[bool]string{true: "all", false: fmt.Sprintf("r%d", m.To)}[m.To == Broadcast], x.describe(m.Env))
	}
	for _, rm := range rd.Replies {
		x.printf("  reply to %s: ts %d s%d result %q\n", x.name(rm.Client), rm.Timestamp, rm.Seq, rm.Result())
	}
	for _, cb := range rd.Committed {
		exec := join(cb.Execute, ",", func(q ClientRequest) string { return string(q.Op) })
		x.printf("  committed s%d v%d %s batch %s execute %s cert %s\n", cb.Seq, cb.View, short(cb.Digest),
			x.requests(cb.Batch), exec, x.authors(cb.Cert))
	}
	if st := rd.StateTransfer; st != nil {
		x.printf("  state transfer: to s%d %s proof %s, applied s%d\n", st.Seq, short(st.Digest), x.authors(st.Proof), st.Applied)
	}
	for _, q := range rd.Quorums {
		x.printf("  quorum: %s v%d s%d\n", map[bool]string{false: "prepared", true: "committed"}[q.Committed], q.View, q.Seq)
	}
	if s := rd.SoftState; s != nil {
		x.printf("  soft state: %s\n", softLine(*s))
	}
}

func softLine(s SoftState) string {
	return fmt.Sprintf("view %d primary r%d %s executed s%d window (%d,%d]", s.View, s.Primary, s.Status, s.LastExecuted, s.Low, s.High)
}

// take removes the queued messages that match the command's filter (from=, to=, kind=, seq=; seq= matches
// only pre-prepares, prepares, commits and checkpoints) and returns them.
func (x *transcript) take() (taken []tmsg) {
	from, to, kinds, seqs := x.nums("from"), x.nums("to"), x.list("kind"), x.nums("seq")
	x.queue = slices.DeleteFunc(x.queue, func(m tmsg) bool {
		var p Prepare // a pre-prepare, prepare or commit: the three payloads have one shape
		err := wire.Unmarshal(m.env.Payload, &p)
		if c, cerr := DecodeCheckpoint(m.env.Payload); m.env.Kind == wire.KindCheckpoint {
			p.Seq, err = c.Seq, cerr
		}
		hasSeq := err == nil && m.env.Kind >= wire.KindPrePrepare && m.env.Kind <= wire.KindCheckpoint
		match := (from == nil || slices.Contains(from, m.from)) && (to == nil || slices.Contains(to, m.to)) &&
			(kinds == nil || slices.Contains(kinds, m.env.Kind.String())) && (seqs == nil || hasSeq && slices.Contains(seqs, int(p.Seq)))
		if match {
			taken = append(taken, m)
		}
		return match
	})
	return taken
}

// deliver steps messages into their recipients and returns those delivered (not to or from a cut
// replica). What the recipients send in response is queued once their Readys are handled.
func (x *transcript) deliver(ms []tmsg, show bool) (delivered []tmsg) {
	for _, m := range ms {
		if !x.cut[m.from] && !x.cut[m.to] {
			err := x.reps[m.to].Step(m.env)
			delivered = append(delivered, m)
			if show {
				x.printf("r%d->r%d %s: %s\n", m.from, m.to, x.describe(m.env), errText(err))
			}
		}
	}
	return delivered
}

// stabilize handles Readys and delivers messages until nothing is left to do.
func (x *transcript) stabilize() {
	var all []tmsg
	for round := 0; ; round++ {
		for i := range x.reps {
			x.handle(i, false)
		}
		if len(x.queue) == 0 {
			break
		} else if round > 10000 {
			x.d.Fatalf(x.t, "stabilize: no end in sight")
		}
		q := x.queue
		x.queue = nil
		all = append(all, x.deliver(q, false)...)
	}
	x.printf("delivered: %s\n", countLine(all))
	x.status(x.replicas())
}

// countLine prints the number of messages of each kind, in kind order.
func countLine(ms []tmsg) string {
	counts := map[wire.Kind]int{}
	for _, m := range ms {
		counts[m.env.Kind]++
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, fmt.Sprintf("%d %s", counts[k], k))
	}
	return cmp.Or(strings.Join(parts, ", "), "nothing")
}

func (x *transcript) status(replicas []int) {
	for _, i := range replicas {
		s := x.reps[i].Stats()
		x.printf("r%d: %s slots %d tail %d | view-changes %d new-views %d stable-checkpoints %d state-transfers %d snapshots %d cert-commits %d executed-requests %d\n",
			i, softLine(x.reps[i].Status()), s.Slots, s.Tail, s.ViewChanges, s.NewViews, s.StableCheckpoints,
			s.StateTransfers, s.SnapshotsInstalled, s.CertCommits, s.ExecutedRequests)
	}
}

// request returns the request named name: client "name" asks for op "name" at timestamp 1.
func (x *transcript) request(name string) *wire.Envelope {
	if x.reqs[name] == nil {
		k := wiretest.NewKey("client-" + name)
		x.reg.Add(k)
		x.names[string(k.PublicKey())] = name
		e, err := NewRequest(k, testChain, 1, []byte(name))
		x.must(err)
		x.reqs[name] = e
	}
	return x.reqs[name]
}

func short(d wire.Digest) string {
	if d == NullDigest {
		return "null"
	}
	return hex.EncodeToString(d[:4])
}

func errText(err error) string {
	var se *StepError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &se) && errors.Is(err, ErrInvalid):
		return "invalid (" + string(se.Reason) + ")"
	case se != nil:
		return "ignored (" + string(se.Reason) + ")"
	}
	return "error: " + err.Error()
}

func (x *transcript) name(pub []byte) string { return cmp.Or(x.names[string(pub)], "?") }

// join prints [f(xs[0])<sep>f(xs[1])...].
func join[T any](xs []T, sep string, f func(T) string) string {
	out := make([]string, len(xs))
	for i, v := range xs {
		out[i] = f(v)
	}
	return "[" + strings.Join(out, sep) + "]"
}

func (x *transcript) authors(es []*wire.Envelope) string {
	return join(es, ",", func(e *wire.Envelope) string { return x.name(e.Author) })
}

// requests prints the ops of request envelopes (the engine checked them: they decode).
func (x *transcript) requests(reqs []*wire.Envelope) string {
	return join(reqs, ",", func(e *wire.Envelope) string { q, _ := DecodeRequest(e.Payload); return string(q.Op) })
}

func (x *transcript) batch(body []byte) string {
	reqs, _ := DecodeBatch(body)
	return x.requests(reqs)
}

// describe prints a message: its kind and the payload fields a reader needs. The messages are the
// engine's own, so they decode (a panic here is a failure too).
func (x *transcript) describe(e *wire.Envelope) string {
	s := e.Kind.String()
	pp := func(e *wire.Envelope) (p Prepare) { // a pre-prepare, prepare or commit: one payload shape
		x.must(wire.Unmarshal(e.Payload, &p))
		return p
	}
	switch e.Kind {
	case wire.KindPrePrepare, wire.KindPrepare, wire.KindCommit:
		p := pp(e)
		s += fmt.Sprintf(" v%d s%d %s", p.View, p.Seq, short(p.Digest))
		if len(e.Body) > 0 {
			s += " batch " + x.batch(e.Body)
		}
	case wire.KindCheckpoint:
		c, _ := DecodeCheckpoint(e.Payload)
		s += fmt.Sprintf(" s%d %s", c.Seq, short(c.Digest))
	case wire.KindViewChange:
		vc, _ := DecodeViewChange(e.Payload)
		pcs := join(vc.Prepared, " ", func(pc PreparedCert) string {
			p := pp(pc.PrePrepare)
			return fmt.Sprintf("s%d@v%d:%s%s", p.Seq, p.View, short(p.Digest), x.authors(pc.Prepares))
		})
		s += fmt.Sprintf(" v%d stable s%d prepared %s", vc.View, vc.StableSeq, pcs)
	case wire.KindNewView:
		nv, _ := DecodeNewView(e.Payload)
		pps := join(nv.PrePrepares, " ", func(e *wire.Envelope) string { p := pp(e); return fmt.Sprintf("s%d:%s", p.Seq, short(p.Digest)) })
		s += fmt.Sprintf(" v%d view-changes %s pre-prepares %s", nv.View, x.authors(nv.ViewChanges), pps)
	case wire.KindFetch:
		f, _ := DecodeFetch(e.Payload)
		items := join(f.Items, " ", func(it FetchItem) string {
			return fmt.Sprintf("s%d%s", it.Seq, map[bool]string{true: "+body"}[it.NeedBody])
		})
		s += fmt.Sprintf(" v%d active=%t executed s%d items %s", f.View, f.Active, f.Executed, items)
	case wire.KindFetchReply:
		f, _ := DecodeFetchReply(e.Payload)
		slots := join(f.Slots, " ", func(sl FetchedSlot) string {
			return fmt.Sprintf("s%d:cert%s,msgs=%d,body=%t", sl.Seq, x.authors(sl.Cert), len(sl.Messages), len(sl.Batch) > 0)
		})
		s += fmt.Sprintf(" executed s%d proof %s slots %s", f.Executed, x.authors(f.Proof), slots)
	case wire.KindRequest:
		q, _ := DecodeRequest(e.Payload)
		s += fmt.Sprintf(" %s ts %d", x.name(e.Author), q.Timestamp)
	case wire.KindStatus:
		st, _ := DecodeStatusReport(e.Payload)
		s += fmt.Sprintf(" v%d active=%t executed s%d stable s%d", st.View, st.Active, st.Executed, st.Stable)
	}
	if e.Resend != 0 {
		s += " (resent)"
	}
	return s
}

// Arguments.

// list returns the comma-separated values of key (key=a,b or key=(a,b)); nums parses them as integers.
func (x *transcript) list(key string) (out []string) {
	arg, _ := x.d.Arg(key)
	for _, v := range arg.Vals {
		out = append(out, strings.Split(v, ",")...)
	}
	return out
}

func (x *transcript) nums(key string) (out []int) {
	for _, v := range x.list(key) {
		n, err := strconv.Atoi(v)
		x.must(err)
		out = append(out, n)
	}
	return out
}

func (x *transcript) num(key string, def int) int {
	if v := x.nums(key); len(v) > 0 {
		return v[0]
	}
	return def
}

// replicas returns the replicas the command names (replica=), or all of them.
func (x *transcript) replicas() []int {
	if v := x.nums("replica"); v != nil {
		return v
	}
	all := make([]int, x.n)
	for i := range all {
		all[i] = i
	}
	return all
}
