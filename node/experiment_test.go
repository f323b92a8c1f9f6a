package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/node/config"
	"github.com/p2pbft/p2pbft/p2p"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// A Byzantine mode never starts by accident: without the explicit opt-in New refuses it, and a mode
// that is only in the configuration file is ignored (and logged).
func TestExperimentNeedsOptIn(t *testing.T) {
	c := newCluster(t, 4, nil)
	cfg := c.cfgs[0]
	cases := []struct {
		x    *Experiment
		want string
	}{
		{&Experiment{Mode: ByzantineSilent}, "opt-in"},
		{&Experiment{Mode: ByzantineGarbage, AllowByzantine: false, Seed: 1}, "opt-in"},
		{&Experiment{Mode: "evil", AllowByzantine: true}, "unknown Byzantine mode"},
		{&Experiment{Mode: ByzantineDelay, AllowByzantine: true}, "positive delay"},
		{&Experiment{Mode: ByzantineDrop, AllowByzantine: true, DropRate: 1.5}, "drop rate"},
	}
	for _, tc := range cases {
		n, err := New(cfg, Options{Logger: testLogger(t), Experiment: tc.x})
		if err == nil {
			n.Close()
			t.Fatalf("%+v: New succeeded", tc.x)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%+v: %v, want it to say %q", tc.x, err, tc.want)
		}
	}
	if _, err := New(cfg, Options{Experiment: &Experiment{Mode: ByzantineSilent}}); !errors.Is(err, ErrByzantineNotAllowed) {
		t.Fatalf("err = %v, want ErrByzantineNotAllowed", err)
	}
	// Only in the configuration: a correct replica.
	cfg.Experiment.ByzantineMode = "garbage"
	n, err := New(cfg, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if n.byz != nil || n.Status().Byzantine != "" {
		t.Fatal("a mode from the configuration alone took effect")
	}
	n.Close()
	if x := ExperimentFromConfig(cfg.Experiment, false); x == nil || x.Mode != ByzantineGarbage || x.AllowByzantine {
		t.Fatalf("ExperimentFromConfig: %+v", x)
	}
	if x := ExperimentFromConfig(config.Experiment{}, true); x != nil {
		t.Fatalf("no mode: %+v, want nil", x)
	}
}

// checkChainsAgree checks that the given replicas hold identical blocks at every height they all hold
// (no two of them committed different batches at one sequence number).
func (c *cluster) checkChainsAgree(replicas []int) {
	c.t.Helper()
	var low uint64 = 1<<63 - 1
	for _, i := range replicas {
		low = min(low, c.nodes[i].Head())
	}
	for h := uint64(1); h <= low; h++ {
		var ref wire.Digest
		refFrom := -1
		for _, i := range replicas {
			b, err := c.nodes[i].Block(h)
			if err != nil {
				continue // below a state-transfer jump
			}
			if refFrom < 0 {
				ref, refFrom = b.Hash(), i
				continue
			}
			if b.Hash() != ref {
				c.t.Fatalf("replicas %d and %d hold different blocks at height %d", refFrom, i, h)
			}
		}
	}
	for _, i := range replicas {
		if a := c.nodes[i].state.Load().stats.SafetyAlarms; a > 0 {
			c.t.Fatalf("replica %d raised %d safety alarms", i, a)
		}
	}
}

// rejectedByCorrect counts the messages from replica byz that the correct replicas' hosts refused, and the
// messages their engines rejected as invalid.
func (c *cluster) rejectedByCorrect(correct []int, byz int) (host, engine uint64) {
	for _, i := range correct {
		n := c.nodes[i]
		host += n.host.Stats().ForPeer(n.genesis.PeerID(byz), p2p.Rejected)
		for _, r := range n.state.Load().stats.Rejected { // as the loop last published them
			engine += r
		}
	}
	return host, engine
}

// One Byzantine replica (f = 1 of 4) in each mode: the correct replicas keep agreeing and committing. The
// Byzantine replica is the primary of view 0, the hardest place for it: a silent, garbage or
// equivocating primary must be replaced by a view change; a delaying or dropping one slows the others
// down. Clients send to all four and need f+1 matching replies, so the Byzantine replica's replies
// (none, late, lost or wrong) never decide a result.
func TestByzantinePrimary(t *testing.T) {
	modes := []struct {
		x          Experiment
		viewChange bool // must happen
	}{
		{Experiment{Mode: ByzantineSilent}, true},
		{Experiment{Mode: ByzantineEquivocate}, true},
		{Experiment{Mode: ByzantineGarbage, Seed: 7}, true},
		{Experiment{Mode: ByzantineDelay, Delay: 40 * time.Millisecond}, false},
		{Experiment{Mode: ByzantineDrop, DropRate: 0.3, Seed: 11}, false},
	}
	for _, m := range modes {
		t.Run(string(m.x.Mode), func(t *testing.T) {
			c := newCluster(t, 4, nil)
			x := m.x
			x.AllowByzantine = true
			c.experiments = []*Experiment{&x, nil, nil, nil}
			c.startAll()
			if got := c.nodes[0].Status().Byzantine; got != string(x.Mode) {
				t.Fatalf("status says byzantine %q", got)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			if err := c.load(ctx, "a", 3, 6); err != nil {
				t.Fatal(err)
			}
			correct := []int{1, 2, 3}
			h := uint64(0)
			for _, i := range correct {
				h = max(h, c.nodes[i].Status().Height)
			}
			c.waitHeightOf(correct, h, 60*time.Second)
			view := c.nodes[1].Status().View
			if m.viewChange && view == 0 {
				t.Fatalf("still in view 0 under a %s primary", x.Mode)
			}
			// More load in whatever view the correct replicas settled in.
			if err := c.load(ctx, "b", 3, 4); err != nil {
				t.Fatal(err)
			}
			for _, i := range correct {
				h = max(h, c.nodes[i].Status().Height)
			}
			c.waitHeightOf(correct, h, 60*time.Second)
			c.checkChainsAgree(correct)
			b := c.nodes[0].byz
			t.Logf("%s: view %d, height %d; Byzantine replica forged %d, dropped %d, sent %d", x.Mode,
				c.nodes[1].Status().View, h, b.forged.Load(), b.dropped.Load(), b.sent.Load())
			switch x.Mode {
			case ByzantineSilent, ByzantineDrop:
				if b.dropped.Load() == 0 {
					t.Fatal("the Byzantine replica dropped nothing")
				}
			case ByzantineEquivocate, ByzantineGarbage:
				if b.forged.Load() == 0 {
					t.Fatal("the Byzantine replica forged nothing")
				}
			}
			if x.Mode == ByzantineGarbage {
				if host, _ := c.rejectedByCorrect(correct, 0); host == 0 {
					t.Fatal("the correct replicas rejected none of the garbage")
				}
			}
		})
	}
}

// A Byzantine backup in the garbage mode: its malformed, wrongly signed and bogus messages are rejected
// and counted by the correct replicas, which commit without it (no view change is needed), and its
// wrong replies never make a client accept a wrong result.
func TestByzantineGarbageBackup(t *testing.T) {
	c := newCluster(t, 4, nil)
	c.experiments = []*Experiment{nil, nil, nil, {AllowByzantine: true, Mode: ByzantineGarbage, Seed: 3}}
	c.startAll()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if err := c.load(ctx, "a", 3, 8); err != nil { // the test client checks every result (f+1 matching)
		t.Fatal(err)
	}
	correct := []int{0, 1, 2}
	h := c.nodes[0].Status().Height
	c.waitHeightOf(correct, h, 60*time.Second)
	c.checkChainsAgree(correct)
	if v := c.nodes[0].Status().View; v != 0 {
		t.Fatalf("view %d: a Byzantine backup caused a view change", v)
	}
	if c.nodes[3].byz.forged.Load() == 0 {
		t.Fatal("nothing forged")
	}
	var sigRejects, filtered uint64
	for _, i := range correct {
		st := c.nodes[i].host.Stats()
		sigRejects += st.Total(p2p.Rejected, p2p.ReasonSignature)
		filtered += st.Total(p2p.Rejected, p2p.ReasonFilter)
	}
	if sigRejects == 0 || filtered == 0 {
		t.Fatalf("host rejections: %d bad signatures, %d malformed payloads; want both", sigRejects, filtered)
	}
}

// The garbage mode's wrong replies are well-formed, correctly signed replies that a client opens (built
// with pbft.ReplyLeafHash) and whose result differs from the real one.
func TestWrongReplyOpens(t *testing.T) {
	c := newCluster(t, 4, nil)
	c.experiments = []*Experiment{nil, nil, nil, {AllowByzantine: true, Mode: ByzantineGarbage}}
	c.startAll()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := c.client("w")
	req := cl.request(putOp(t, "k", "v"))
	// The primary answers honestly; replica 3 (garbage), asked for the same request once it executed it
	// (it answers from its client table), answers wrongly.
	right, err := c.nodes[0].Submit(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	c.waitHeightOf([]int{3}, c.nodes[0].Status().Height, 30*time.Second)
	wrong, err := c.nodes[3].Submit(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	r1, err := pbft.OpenReply(right)
	if err != nil {
		t.Fatal(err)
	}
	r0, err := pbft.OpenReply(wrong)
	if err != nil {
		t.Fatalf("the wrong reply does not open: %v", err)
	}
	if r0.Replica != 3 || r0.Timestamp != r1.Timestamp || string(r0.Result) == string(r1.Result) {
		t.Fatalf("wrong reply %+v against %+v", r0, r1)
	}
}

// waitHeightOf waits until the given replicas executed at least h.
func (c *cluster) waitHeightOf(replicas []int, h uint64, d time.Duration) {
	c.t.Helper()
	waitFor(c.t, d, fmt.Sprintf("height %d at replicas %v", h, replicas), func() bool {
		for _, i := range replicas {
			if c.nodes[i].Status().Height < h {
				return false
			}
		}
		return true
	})
}
