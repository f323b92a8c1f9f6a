package sim

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// observer records what correct replicas and clients did and checks the invariants:
//
//  1. agreement: no two correct replicas commit different batches at one sequence number (so committed
//     chains are prefixes of each other), and each replica's chain is dense;
//  2. checkpoints: stable checkpoints (and the states replicas hold for them) agree across correct replicas;
//  3. exactly-once: replaying the agreed chain with a reference client table and application, every request
//     executes at most once, every replica filtered the same requests, and every result a client accepted
//     is the one the agreed order produces, computed by a correct replica when the client accepted it and
//     by f+1 correct replicas at the end (Byzantine replicas send wrong results);
//  4. non-equivocation: no correct replica signs two different PRE-PREPAREs, PREPAREs or COMMITs for one
//     view and sequence number, or two different VIEW-CHANGEs for one view, in any of its lives (signed.go);
//  5. liveness: after the fault period every client request completes and every correct replica reaches the
//     same point, within LivenessTicks;
//
// plus the bounds the core promises (slots inside the window, bounded buffers) and that nothing outside
// (h, H] is ever accepted into the log.
type observer struct {
	c          *Cluster
	violations []string
	commits    map[uint64]*commitRec
	stable     map[uint64]wire.Digest
	held       map[uint64]wire.Digest
	next       map[*node]uint64 // next sequence number each node must deliver
	issued     map[clientTS][]byte
	accepted   map[clientTS]*pbft.Reply
	drops      map[string]int
	stats      pbft.Stats
	maxSeq     uint64
	finished   bool
	lastIssue  int64
	transfers  int
	signed     map[signedKey]wire.Digest // what correct replicas signed, across all their lives (signed.go)
	// produced holds, per request, the results correct replicas computed executing it (by replica index,
	// across lives); forgedReplies counts replies Byzantine replicas sent with a wrong result.
	produced      map[clientTS]map[string]map[int]bool
	forgedReplies int
	// olderSnapshots counts snapshots installed at a certified checkpoint below the one the transfer asked
	// for (a copy that outlasted a checkpoint interval).
	olderSnapshots int
}

type clientTS struct {
	client string
	ts     uint64
}

type commitRec struct {
	node    string
	digest  wire.Digest
	batch   []*wire.Envelope
	execute []clientTS
}

func newObserver(c *Cluster) *observer {
	return &observer{c: c, commits: map[uint64]*commitRec{}, stable: map[uint64]wire.Digest{}, held: map[uint64]wire.Digest{},
		next: map[*node]uint64{}, issued: map[clientTS][]byte{}, accepted: map[clientTS]*pbft.Reply{}, drops: map[string]int{},
		signed: map[signedKey]wire.Digest{}, produced: map[clientTS]map[string]map[int]bool{},
		stats: pbft.Stats{Rejected: map[pbft.Reason]uint64{}}}
}

func (o *observer) violation(format string, args ...any) {
	if len(o.violations) < 20 {
		o.violations = append(o.violations, fmt.Sprintf("t=%d: ", o.c.now)+fmt.Sprintf(format, args...))
	}
	o.c.tracef("VIOLATION "+format, args...)
	o.c.stopped = true
}

func (o *observer) dropped(why string) { o.drops[why]++ }

func (o *observer) onIssued(cl *client, ts uint64, op []byte) {
	o.issued[clientTS{string(cl.pub), ts}] = op
	o.lastIssue = o.c.now
	o.c.slow.onIssued(clientTS{string(cl.pub), ts})
}

func (o *observer) onAccepted(cl *client, r *pbft.Reply) {
	k := clientTS{string(cl.pub), r.Timestamp}
	if _, dup := o.accepted[k]; dup {
		o.violation("client %d accepted request %d twice", cl.id, r.Timestamp)
	}
	// f+1 matching replies include a correct replica's, so the result must be one a correct replica
	// computed by now (finish checks that f+1 of them did by the end).
	if len(o.produced[k][string(r.Result)]) == 0 {
		o.violation("replies: client %d accepted %q for request %d, which no correct replica produced", cl.id, r.Result, r.Timestamp)
	}
	o.accepted[k] = r
}

func (o *observer) onInstalled(n *node, seq uint64) {
	o.transfers++
	o.next[n] = seq + 1
}

// onCommitted checks agreement for one delivered batch.
func (o *observer) onCommitted(n *node, cb *pbft.CommittedBatch) {
	if !n.correct() {
		return
	}
	if want, ok := o.next[n]; ok && cb.Seq != want && !cb.AlreadyApplied {
		o.violation("%s delivered %d, expected %d (not dense)", n.name, cb.Seq, want)
	}
	o.next[n] = cb.Seq + 1
	ids := make([]wire.Digest, len(cb.Batch))
	for i, e := range cb.Batch {
		ids[i] = e.ID()
	}
	if pbft.BatchDigest(ids) != cb.Digest {
		o.violation("%s delivered %d whose batch does not match its digest", n.name, cb.Seq)
	}
	o.checkCert(n, cb)
	exec := make([]clientTS, len(cb.Execute))
	for i, q := range cb.Execute {
		exec[i] = clientTS{string(q.Client), q.Timestamp}
	}
	rec := o.commits[cb.Seq]
	if rec == nil {
		o.commits[cb.Seq] = &commitRec{node: n.name, digest: cb.Digest, batch: cb.Batch, execute: exec}
		o.maxSeq = max(o.maxSeq, cb.Seq)
		return
	}
	if rec.digest != cb.Digest {
		o.violation("agreement: seq %d committed as %s by %s and as %s by %s", cb.Seq, rec.digest, rec.node, cb.Digest, n.name)
		return
	}
	if !slices.Equal(rec.execute, exec) {
		o.violation("exactly-once: seq %d: %s and %s filtered the batch differently", cb.Seq, rec.node, n.name)
	}
}

func (o *observer) checkCert(n *node, cb *pbft.CommittedBatch) {
	q := pbft.Quorum(o.c.opt.N)
	seen := map[string]bool{}
	for _, e := range cb.Cert {
		c, err := pbft.DecodeCommit(e.Payload)
		if err != nil || e.Kind != wire.KindCommit || c.Seq != cb.Seq || c.Digest != cb.Digest || c.View != cb.View ||
			o.c.reg.Verify(e) != nil {
			o.violation("%s: commit certificate of %d (view %d, %s) has an invalid commit: %v %+v %v", n.name, cb.Seq, cb.View, cb.Digest, err, c, o.c.reg.Verify(e))
			return
		}
		seen[string(e.Author)] = true
	}
	if len(seen) < q {
		o.violation("%s: commit certificate of %d has %d distinct commits, want %d", n.name, cb.Seq, len(seen), q)
	}
}

// onExecuted records the results a correct replica computed.
func (o *observer) onExecuted(n *node, cb *pbft.CommittedBatch, results [][]byte) {
	if !n.correct() || len(results) != len(cb.Execute) {
		return
	}
	for i, q := range cb.Execute {
		k := clientTS{string(q.Client), q.Timestamp}
		byResult := o.produced[k]
		if byResult == nil {
			o.c.slow.onFresh(o.c, k)
			byResult = map[string]map[int]bool{}
			o.produced[k] = byResult
		}
		if byResult[string(results[i])] == nil {
			byResult[string(results[i])] = map[int]bool{}
		}
		byResult[string(results[i])][n.idx] = true
	}
}

// onHardState checks checkpoint agreement and that a replica holds the certified state.
func (o *observer) onHardState(n *node, hs *pbft.HardState) {
	if !n.correct() {
		return
	}
	if hs.StableSeq > 0 {
		if d, ok := o.stable[hs.StableSeq]; ok && d != hs.StableDigest {
			o.violation("checkpoints: stable %d is %s at %s, %s elsewhere", hs.StableSeq, hs.StableDigest, n.name, d)
		}
		o.stable[hs.StableSeq] = hs.StableDigest
	}
	if s := hs.Snapshot; s != nil && s.Seq > 0 {
		d := s.Digest()
		if sd, ok := o.stable[s.Seq]; ok && sd != d {
			o.violation("checkpoints: %s holds state %s at %d, certified %s", n.name, d, s.Seq, sd)
		}
		if hd, ok := o.held[s.Seq]; ok && hd != d {
			o.violation("checkpoints: %s holds state %s at %d, another replica %s", n.name, d, s.Seq, hd)
		}
		o.held[s.Seq] = d
	}
}

// checkBounds checks the memory bounds and that nothing outside (h, H] entered the log.
func (o *observer) checkBounds(n *node) {
	st := n.rep.Stats()
	if st.SafetyAlarms > 0 && n.correct() {
		o.violation("agreement: %s saw a NEW-VIEW or certificate contradicting a batch it committed", n.name)
	}
	if st.Divergences > 0 && n.correct() {
		o.violation("checkpoints: %s's state diverged from a certified checkpoint", n.name)
	}
	cfg := o.c.config(n.idx)
	L := int(cfg.Window)
	switch {
	case st.Slots > 3*L:
		o.violation("bounds: %s holds %d slots (window %d, %+v)", n.name, st.Slots, L, n.rep.Status())
	case st.Tail > 3*L:
		o.violation("bounds: %s keeps %d committed batches below its window", n.name, st.Tail)
	case st.Pending > cfg.MaxPendingRequests:
		o.violation("bounds: %s holds %d pending requests", n.name, st.Pending)
	case st.Future > o.c.opt.N*cfg.MaxFutureMessages:
		o.violation("bounds: %s buffers %d future messages", n.name, st.Future)
	case st.CheckpointVotes > o.c.opt.N*(L/int(cfg.CheckpointInterval)+2):
		o.violation("bounds: %s holds %d checkpoint votes", n.name, st.CheckpointVotes)
	case st.VerifiedCache > 2*cfg.VerifiedCacheSize:
		o.violation("bounds: %s verified cache holds %d", n.name, st.VerifiedCache)
	}
}

// checkEntries checks that every logged pre-prepare, prepare and commit is inside the window.
func (o *observer) checkEntries(n *node, rd *pbft.Ready, low, high uint64) {
	for _, e := range rd.Entries {
		if len(e.Cert) > 0 && n.correct() {
			o.checkCertifiedEntry(n, &e) // tamper.go
		}
		if e.Env == nil {
			continue
		}
		switch e.Env.Kind {
		case wire.KindPrePrepare, wire.KindPrepare, wire.KindCommit:
			if e.Seq <= low || e.Seq > high {
				o.violation("watermarks: %s logged a %s for %d outside (%d, %d]", n.name, e.Env.Kind, e.Seq, low, high)
			}
		}
	}
}

func (o *observer) addStats(s pbft.Stats) {
	for k, v := range s.Rejected {
		o.stats.Rejected[k] += v
	}
	o.stats.ViewChanges += s.ViewChanges
	o.stats.NewViews += s.NewViews
	o.stats.StableCheckpoints += s.StableCheckpoints
	o.stats.StateTransfers += s.StateTransfers
	o.stats.SnapshotsInstalled += s.SnapshotsInstalled
	o.stats.CertCommits += s.CertCommits
	o.stats.CommittedBatches += s.CommittedBatches
	o.stats.Fetches += s.Fetches
	o.stats.Divergences += s.Divergences
}

// done reports whether the run can stop: every request completed and every correct, running replica
// executed up to the same point.
func (o *observer) done() bool {
	for _, cl := range o.c.clients {
		if !cl.finished() {
			return false
		}
	}
	var top uint64
	for _, n := range o.c.nodes {
		if n.correct() && n.up {
			top = max(top, n.rep.Status().LastExecuted)
		}
	}
	for _, n := range o.c.nodes {
		if n.correct() && (!n.up || n.rep.Status().LastExecuted != top) {
			return false
		}
	}
	return true
}

// finish runs the end-of-run checks.
func (o *observer) finish() {
	o.finished = true
	for _, n := range o.c.nodes {
		n.obsStats()
	}
	if len(o.violations) > 0 {
		return
	}
	if !o.done() {
		var pend []string
		for _, cl := range o.c.clients {
			if !cl.finished() {
				pend = append(pend, fmt.Sprintf("client %d at %d/%d (ts %d waiting since t=%d)", cl.id, cl.done, o.c.opt.RequestsPerClient, cl.ts, cl.sentAt))
			}
		}
		var reps []string
		for _, n := range o.c.nodes {
			if n.up {
				reps = append(reps, fmt.Sprintf("%s %+v", n.name, n.rep.Status()))
			} else {
				reps = append(reps, n.name+" down")
			}
		}
		o.violation("liveness: not done %d ticks after the faults healed: %v; replicas: %v", o.c.opt.LivenessTicks, pend, reps)
		return
	}
	o.replay()
}

// replay executes the agreed chain with a reference client table and application.
func (o *observer) replay() {
	lastTS := map[string]uint64{}
	counters := map[string]uint64{}
	results := map[clientTS][]byte{}
	for seq := uint64(1); seq <= o.maxSeq; seq++ {
		rec := o.commits[seq]
		if rec == nil {
			o.violation("no correct replica delivered %d (chain ends at %d)", seq, o.maxSeq)
			return
		}
		var exec []clientTS
		for _, e := range rec.batch {
			p, err := pbft.DecodeRequest(e.Payload)
			if err != nil {
				o.violation("seq %d: undecodable request in a committed batch", seq)
				return
			}
			k := clientTS{string(e.Author), p.Timestamp}
			if p.Timestamp <= lastTS[k.client] {
				continue
			}
			lastTS[k.client] = p.Timestamp
			if _, twice := results[k]; twice {
				o.violation("exactly-once: request %x/%d executed twice", k.client[:4], k.ts)
			}
			counters[string(p.Op)]++
			results[k] = binary.BigEndian.AppendUint64([]byte(string(p.Op)+"="), counters[string(p.Op)])
			exec = append(exec, k)
		}
		if !slices.Equal(exec, rec.execute) {
			o.violation("exactly-once: seq %d: replicas executed %d requests, the reference %d", seq, len(rec.execute), len(exec))
			return
		}
	}
	for k, r := range o.accepted {
		want, ok := results[k]
		if !ok {
			o.violation("client accepted request %x/%d that never executed", k.client[:4], k.ts)
			continue
		}
		if !bytes.Equal(want, r.Result) {
			o.violation("client accepted %q for %x/%d, the committed order gives %q", r.Result, k.client[:4], k.ts, want)
		}
		// Every correct replica either executed the request or installed a certified checkpoint at or
		// above it, and the first such checkpoint has at least f+1 correct replicas that executed it.
		if got, w := len(o.produced[k][string(r.Result)]), pbft.QuorumsOf(o.c.opt.N).Weak(); got < w {
			o.violation("replies: client accepted %q for %x/%d, produced by %d correct replicas, want f+1 = %d", r.Result, k.client[:4], k.ts, got, w)
		}
	}
}

// Result is the outcome of one run.
type Result struct {
	Options    Options
	Violations []string
	Ticks      int64
	Stats      pbft.Stats
	Requests   int
	MaxSeq     uint64
	Dropped    map[string]int
	// OlderSnapshots counts snapshots installed at a recent certified checkpoint below the one asked for.
	OlderSnapshots int
	// Wipes counts restarts from an empty disk; ForgedReplies the replies with a wrong result Byzantine
	// replicas sent.
	Wipes         int
	ForgedReplies int
	// Split is what the certsplit schedule did and how many NEW-VIEWs held prepared certificates for one
	// sequence number from different views (certsplit.go).
	Split SplitStats
	// Adversary counts the slow network's progress and the tampered catch-up answers (slow.go, tamper.go).
	Adversary AdversaryCounts
	// LostRounds counts the rounds (Readys) crashes lost before they were durable under FaultAsyncPersist,
	// and LostMessages those of them that had messages to send (persist.go).
	LostRounds, LostMessages int
}

func (o *observer) result() *Result {
	wipes, lost, lostMsgs := 0, 0, 0
	for _, n := range o.c.nodes {
		wipes += n.wipes
		lost += n.as.lost
		lostMsgs += n.as.lostMsgs
	}
	return &Result{Options: o.c.opt, Violations: o.violations, Ticks: o.c.now / tickEvery, Stats: o.stats,
		Requests: len(o.accepted), MaxSeq: o.maxSeq, Dropped: o.drops, OlderSnapshots: o.olderSnapshots, Wipes: wipes,
		ForgedReplies: o.forgedReplies, Split: o.c.split.stats(), Adversary: o.c.adversaryCounts(),
		LostRounds: lost, LostMessages: lostMsgs}
}
