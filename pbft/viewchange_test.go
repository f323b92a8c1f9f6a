package pbft

import (
	"errors"
	"testing"

	"github.com/p2pbft/p2pbft/wire"
)

// silence drops every message to or from the given replicas.
func silence(ids ...int) func(m tmsg) bool {
	return func(m tmsg) bool {
		for _, i := range ids {
			if m.from == i || m.to == i {
				return false
			}
		}
		return true
	}
}

// Row 12 and pitfall 10: a silent primary is replaced once a request waits RequestTimeout ticks; the new
// primary sends exactly one NEW-VIEW; everyone leaves the view-change status; the request executes once.
func TestViewChangeReplacesSilentPrimary(t *testing.T) {
	tn := newNet(t, 4, nil)
	tn.filter = silence(0)
	req := tn.request(1, 1, "abc")
	for i := 1; i < 4; i++ {
		_ = tn.propose(i, req) // the client timed out and sent to all
	}
	nvs := map[wire.Digest]bool{}
	tn.filter = func(m tmsg) bool {
		if m.env.Kind == wire.KindNewView {
			nvs[m.env.ID()] = true
		}
		return m.from != 0 && m.to != 0
	}
	tn.tick(19)
	if tn.reps[1].view != 0 {
		t.Fatal("view change before the request timeout")
	}
	tn.tick(10)
	for i := 1; i < 4; i++ {
		st := tn.reps[i].Status()
		if st.View != 1 || st.Status != StatusNormal || tn.executed(i) != 1 {
			t.Fatalf("replica %d: %+v executed %d", i, st, tn.executed(i))
		}
	}
	if len(nvs) != 1 {
		t.Fatalf("%d distinct NEW-VIEWs for one view", len(nvs))
	}
	// More VIEW-CHANGEs for view 1 arriving later do not make the primary build another NEW-VIEW.
	vc := tn.reps[2].ownVC
	if vc != nil {
		t.Fatal("stale view-change state kept after the NEW-VIEW")
	}
	if got := tn.accepted(1, 1); string(got) != "cba" {
		t.Fatalf("accepted %q", got)
	}
	tn.checkAgreement()
}

// Rows 14-16 and pitfall 3: a batch that prepared in view 0 keeps its sequence number through the view change;
// replicas that executed it do not execute it again; one that lacked its body fetches it.
func TestViewChangeKeepsPreparedBatch(t *testing.T) {
	tn := newNet(t, 4, nil)
	var commitsHeld []tmsg
	tn.filter = func(m tmsg) bool {
		if m.env.Kind == wire.KindPrePrepare && m.to == 3 {
			return false // replica 3 never sees the batch
		}
		if m.env.Kind == wire.KindCommit && m.to != 1 {
			commitsHeld = append(commitsHeld, m)
			return false // only replica 1 commits in view 0
		}
		return true
	}
	req := tn.request(1, 1, "abc")
	_ = tn.propose(0, req)
	tn.run()
	if tn.executed(1) != 1 || tn.executed(2) != 0 || tn.executed(3) != 0 {
		t.Fatalf("executed %d %d %d", tn.executed(1), tn.executed(2), tn.executed(3))
	}
	d := tn.reps[1].slots[1].digest
	// The primary dies; the others time out (the client sent to all). Repair traffic is held until the view
	// changed, so that the batch has to survive the view change.
	inView1 := func() bool {
		for i := 1; i < 4; i++ {
			if tn.reps[i].view != 1 || !tn.reps[i].active {
				return false
			}
		}
		return true
	}
	tn.filter = func(m tmsg) bool {
		if m.from == 0 || m.to == 0 {
			return false
		}
		return inView1() || (m.env.Kind != wire.KindFetch && m.env.Kind != wire.KindFetchReply)
	}
	for i := 1; i < 4; i++ {
		_ = tn.propose(i, req)
	}
	tn.tick(60)
	for i := 1; i < 4; i++ {
		if tn.reps[i].view != 1 || !tn.reps[i].active {
			t.Fatalf("replica %d in view %d active %v", i, tn.reps[i].view, tn.reps[i].active)
		}
		if tn.executed(i) != 1 {
			t.Fatalf("replica %d executed %d", i, tn.executed(i))
		}
		got := tn.committedDigests(i)
		if got[1] != d {
			t.Fatalf("replica %d committed %s at 1, want %s", i, got[1], d)
		}
	}
	if n := len(tn.commits[1]); n != 1 {
		t.Fatalf("replica 1 executed batch 1 %d times", n)
	}
	if tn.reps[3].stats.Fetches == 0 {
		t.Fatal("replica 3 did not fetch the batch it missed")
	}
}

// Pitfall 3: the NEW-VIEW takes, for each sequence number, the batch prepared in the highest view, and a null
// batch for a gap.
func TestPlanNewViewTakesHighestView(t *testing.T) {
	tn := newNet(t, 4, nil)
	r := tn.reps[0]
	infos := [][]pcertInfo{
		{{view: 2, seq: 5, digest: wire.Digest{2}}, {view: 0, seq: 7, digest: wire.Digest{7}}},
		{{view: 3, seq: 5, digest: wire.Digest{3}}},
		{{view: 1, seq: 5, digest: wire.Digest{1}}},
	}
	vcs := []*ViewChange{{View: 4, StableSeq: 4}, {View: 4, StableSeq: 4}, {View: 4}}
	p := r.planNewView(vcs, infos)
	if p.stable.seq != 4 || len(p.seqs) != 3 || p.seqs[0] != 5 || p.seqs[2] != 7 {
		t.Fatalf("plan %+v", p)
	}
	if p.digest[0] != (wire.Digest{3}) || p.digest[1] != NullDigest || p.digest[2] != (wire.Digest{7}) {
		t.Fatalf("digests %v", p.digest)
	}
}

// Row 15: backups recompute the NEW-VIEW and reject one that differs, or that is built from invalid or
// duplicated VIEW-CHANGEs.
func TestNewViewValidation(t *testing.T) {
	tn := newNet(t, 4, nil)
	_ = tn.propose(0, tn.request(1, 1, "abc"))
	tn.run()
	// Every replica moves to view 1 (built by hand below), replica 2 is the one checking.
	var vcs []*wire.Envelope
	for i := 0; i < 4; i++ {
		vcs = append(vcs, tn.sign(i, wire.KindViewChange, tn.reps[i].buildViewChange(1)))
	}
	tn.reps[2].startViewChange(1)
	tn.drain(2)
	tn.queue = nil
	d := tn.reps[2].slots[1].digest
	pp := func(seq uint64, d wire.Digest) *wire.Envelope {
		return tn.sign(1, wire.KindPrePrepare, &PrePrepare{View: 1, Seq: seq, Digest: d})
	}
	nv := func(vcs []*wire.Envelope, pps ...*wire.Envelope) *wire.Envelope {
		return tn.sign(1, wire.KindNewView, &NewView{View: 1, ViewChanges: vcs, PrePrepares: pps})
	}
	forgedVC := *vcs[3]
	forgedVC.Sig = append([]byte(nil), vcs[3].Sig...)
	forgedVC.Sig[5] ^= 1
	bad := map[string]*wire.Envelope{
		"wrong digest":        nv(vcs[:3], pp(1, wire.Digest{9})),
		"missing pre-prepare": nv(vcs[:3]),
		"extra pre-prepare":   nv(vcs[:3], pp(1, d), pp(2, NullDigest)),
		"duplicate author":    nv([]*wire.Envelope{vcs[0], vcs[0], vcs[1]}, pp(1, d)),
		"too few":             nv(vcs[:2], pp(1, d)),
		"forged view change":  nv([]*wire.Envelope{vcs[0], vcs[1], &forgedVC}, pp(1, d)),
	}
	for name, e := range bad {
		err := tn.step(2, e)
		var se *StepError
		if !errors.As(err, &se) || !se.Reason.Invalid() {
			t.Errorf("%s: %v", name, err)
		}
		if tn.reps[2].active {
			t.Fatalf("%s: entered the view", name)
		}
	}
	if err := tn.step(2, tn.sign(3, wire.KindNewView, &NewView{View: 1, ViewChanges: vcs[:3], PrePrepares: []*wire.Envelope{pp(1, d)}})); !errors.Is(err, ErrInvalid) {
		t.Fatalf("NEW-VIEW from a non-primary: %v", err)
	}
	if err := tn.step(2, nv(vcs[:3], pp(1, d))); err != nil {
		t.Fatalf("valid NEW-VIEW: %v", err)
	}
	if !tn.reps[2].active || tn.reps[2].view != 1 {
		t.Fatal("valid NEW-VIEW not entered")
	}
}

// Row 14 and row 17: a VIEW-CHANGE whose prepared certificate has a forged prepare, too few prepares, or a
// prepare from the primary, is rejected as a whole.
func TestViewChangeCertificateChecks(t *testing.T) {
	tn := newNet(t, 4, nil)
	_ = tn.propose(0, tn.request(1, 1, "abc"))
	tn.run()
	good := tn.reps[1].buildViewChange(1)
	if len(good.Prepared) != 1 || len(good.Prepared[0].Prepares) != 2 {
		t.Fatalf("view change carries %d certificates", len(good.Prepared))
	}
	if err := tn.step(2, tn.sign(1, wire.KindViewChange, good)); err != nil {
		t.Fatalf("valid view change: %v", err)
	}
	mutate := map[string]func(vc *ViewChange){
		"forged prepare": func(vc *ViewChange) {
			e := *vc.Prepared[0].Prepares[0]
			e.Sig = append([]byte(nil), e.Sig...)
			e.Sig[0] ^= 1
			vc.Prepared[0].Prepares = []*wire.Envelope{&e, vc.Prepared[0].Prepares[1]}
		},
		"too few prepares": func(vc *ViewChange) { vc.Prepared[0].Prepares = vc.Prepared[0].Prepares[:1] },
		"prepare counted twice": func(vc *ViewChange) {
			vc.Prepared[0].Prepares = []*wire.Envelope{vc.Prepared[0].Prepares[0], vc.Prepared[0].Prepares[0]}
		},
		"pre-prepare not from the primary": func(vc *ViewChange) {
			vc.Prepared[0].PrePrepare = tn.sign(2, wire.KindPrePrepare, &PrePrepare{View: 0, Seq: 1, Digest: wire.Digest{1}})
		},
		"outside the window": func(vc *ViewChange) {
			vc.Prepared[0].PrePrepare = tn.sign(0, wire.KindPrePrepare, &PrePrepare{View: 0, Seq: 100, Digest: wire.Digest{1}})
		},
		"bad checkpoint proof": func(vc *ViewChange) { vc.StableSeq = 4 },
	}
	for name, m := range mutate {
		vc := tn.reps[3].buildViewChange(1)
		vc.Prepared = append([]PreparedCert(nil), vc.Prepared...)
		m(vc)
		err := tn.step(2, tn.sign(3, wire.KindViewChange, vc))
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if tn.reps[2].latestVC[3] != nil {
		t.Fatal("an invalid view change was kept")
	}
}

// Row 13: f+1 valid VIEW-CHANGEs for higher views make a replica join the smallest of them before its own
// timer fires; f of them do not.
func TestJoinRule(t *testing.T) {
	tn := newNet(t, 7, nil) // f = 2
	r := tn.reps[6]
	vcFor := func(from int, view uint64) *wire.Envelope {
		return tn.sign(from, wire.KindViewChange, &ViewChange{View: view})
	}
	_ = tn.step(6, vcFor(1, 5))
	_ = tn.step(6, vcFor(2, 3))
	if r.view != 0 || !r.active {
		t.Fatal("joined with f view changes")
	}
	_ = tn.step(6, vcFor(3, 9))
	if r.view != 3 || r.active {
		t.Fatalf("after f+1 view changes: view %d active %v, want to join view 3", r.view, r.active)
	}
}

// Row 12 and pitfall 6: the request timer watches the oldest waiting request and is not reset by other
// traffic: a primary that keeps executing other requests but never orders one still gets replaced.
func TestTimerNotResetByOtherProgress(t *testing.T) {
	tn := newNet(t, 4, nil)
	censored := tn.request(9, 1, "censored")
	tn.filter = func(m tmsg) bool { return !(m.to == 0 && m.env.Kind == wire.KindRequest) }
	for i := 1; i < 4; i++ {
		_ = tn.propose(i, censored)
	}
	for k := 0; k < 30 && tn.reps[1].view == 0; k++ {
		_ = tn.propose(0, tn.request(1, uint64(k+1), "other"))
		tn.tick(1)
	}
	if tn.reps[1].view == 0 {
		t.Fatal("the censoring primary stayed in office")
	}
	tn.tick(40)
	for i := 1; i < 4; i++ {
		if tn.clientExecuted(i, 9, 1) != 1 {
			t.Fatalf("replica %d did not execute the censored request", i)
		}
	}
}

func (tn *tnet) clientExecuted(i, c int, ts uint64) int {
	n := 0
	for _, cb := range tn.commits[i] {
		for _, q := range cb.Execute {
			if string(q.Client) == string(tn.client(c).PublicKey()) && q.Timestamp == ts {
				n++
			}
		}
	}
	return n
}

// Row 12: exponential backoff: when the NEW-VIEW does not come, the replica moves to the next view after
// NewViewTimeout, then after twice that, and returns to the base timeout after real progress.
func TestViewChangeBackoff(t *testing.T) {
	tn := newNet(t, 7, func(c *Config) { c.NewViewTimeout = 10 })
	tn.filter = silence(0, 1, 2) // primaries of views 0, 1 and 2 are silent; 3 can lead... but 3 of 7 are down
	tn.filter = silence(0, 1)
	req := tn.request(1, 1, "x")
	for i := 2; i < 7; i++ {
		_ = tn.propose(i, req)
	}
	var enteredV1, enteredV2 int
	for k := 1; k <= 200; k++ {
		tn.tick(1)
		if enteredV1 == 0 && tn.reps[4].view == 1 {
			enteredV1 = k
		}
		if enteredV2 == 0 && tn.reps[4].view == 2 {
			enteredV2 = k
		}
		if tn.reps[4].active && tn.reps[4].view == 2 {
			break
		}
	}
	if enteredV1 == 0 || enteredV2 == 0 {
		t.Fatalf("views %d (v1 at %d, v2 at %d)", tn.reps[4].view, enteredV1, enteredV2)
	}
	if gap := enteredV2 - enteredV1; gap < 10 || gap > 12 {
		t.Fatalf("moved from view 1 to 2 after %d ticks, want the NewViewTimeout of 10", gap)
	}
	if tn.reps[4].backoff != 0 || tn.executed(4) != 1 {
		t.Fatalf("after progress: backoff %d executed %d", tn.reps[4].backoff, tn.executed(4))
	}
	// Doubling: two failed views in a row.
	r := tn.reps[4]
	r.backoff = 2
	if r.timeout(10) != 40 {
		t.Fatalf("timeout with backoff 2: %d", r.timeout(10))
	}
	r.backoff = 100
	if r.timeout(10) != 10<<r.cfg.MaxBackoff {
		t.Fatal("backoff not capped")
	}
}

// Row 11 (NEW-VIEW above the replica) and row 16: a replica that slept through many checkpoints and a view
// change enters the new view from a NEW-VIEW whose stable checkpoint is above everything it executed, and
// asks for a state transfer.
func TestNewViewAboveReplica(t *testing.T) {
	tn := newNet(t, 4, func(c *Config) { c.MaxBatchRequests = 1 })
	runLoad(tn, 3, 20)
	// Everyone but 3 moves to view 1.
	for i := 0; i < 3; i++ {
		tn.reps[i].startViewChange(1)
		tn.drain(i)
	}
	tn.filter = silence(3)
	tn.run()
	nv := tn.reps[1].newViewEnv
	if nv == nil || !tn.reps[2].active {
		t.Fatal("view 1 not entered by the others")
	}
	tn.filter = nil
	if err := tn.step(3, nv); err != nil {
		t.Fatalf("NEW-VIEW: %v", err)
	}
	r := tn.reps[3]
	if r.view != 1 || !r.active || r.stable.seq < 16 || tn.xfers[3] == nil || r.Status().Status != StatusSyncing {
		t.Fatalf("after NEW-VIEW: %+v, transfer %+v", r.Status(), tn.xfers[3])
	}
}

// A replica that missed the NEW-VIEW gets it again when it retransmits its VIEW-CHANGE.
func TestMissedNewViewIsServed(t *testing.T) {
	tn := newNet(t, 4, nil)
	for i := 0; i < 4; i++ {
		tn.reps[i].startViewChange(1)
		tn.drain(i)
	}
	tn.filter = func(m tmsg) bool { return !(m.env.Kind == wire.KindNewView && m.to == 3) }
	tn.run()
	if tn.reps[3].active || !tn.reps[2].active {
		t.Fatal("setup: replica 3 should have missed the NEW-VIEW")
	}
	tn.filter = nil
	tn.tick(tn.reps[3].cfg.RetransmitTimeout + 1)
	if !tn.reps[3].active || tn.reps[3].view != 1 {
		t.Fatalf("replica 3 still waiting: %+v", tn.reps[3].Status())
	}
}

// Row 12: the request timer must not outlive the request it watches. A client's next request can reach a
// backup before the backup executed the previous one (clients that send to several replicas cause this all
// the time); the newer request replaces the older in the pending set, so executing the older one does not
// stop the timer through the usual path. The timer must still not expire for a request that executed.
func TestTimerFollowsReplacedRequest(t *testing.T) {
	tn := newNet(t, 4, nil)
	first := tn.request(1, 1, "first")
	second := tn.request(1, 2, "second")
	for i := 0; i < 4; i++ {
		_ = tn.propose(i, first)
	}
	// Backup 1 learns of the second request before anything was delivered, so it replaces the first.
	_ = tn.propose(1, second)
	tn.run()
	for i := 0; i < 4; i++ {
		_ = tn.propose(i, second)
	}
	tn.run()
	tn.tick(3 * 20) // three request timeouts with nothing pending
	for i := 0; i < 4; i++ {
		if tn.clientExecuted(i, 1, 1) != 1 || tn.clientExecuted(i, 1, 2) != 1 {
			t.Fatalf("replica %d did not execute both requests once", i)
		}
		if v := tn.reps[i].view; v != 0 {
			t.Fatalf("replica %d moved to view %d with nothing pending", i, v)
		}
	}
}
