package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

func TestFakeRepliesOpen(t *testing.T) {
	k := seedKey(t, "open")
	client := seedKey(t, "open-client").PublicKey()
	e, err := makeReply(t, k, "c", 3, 9, 2, client, 77, []byte("res"), nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := pbft.OpenReply(e)
	if err != nil {
		t.Fatalf("the test's reply format diverged from pbft's: %v", err)
	}
	if r.View != 3 || r.Seq != 9 || r.Replica != 2 || r.Timestamp != 77 || string(r.Result) != "res" || !bytes.Equal(r.Client, client) {
		t.Fatalf("opened %+v", r)
	}
}

// The first round of a request goes to every replica, once; the primary orders it and every replica
// replies.
func TestFirstRoundGoesToEveryReplica(t *testing.T) {
	c := startCluster(t, "normal", 4)
	// A retry timeout far longer than the test: only the first round may happen, however loaded the
	// machine is.
	cl := c.client(t, "normal-client", func(cfg *Config) { cfg.RetryTimeout = time.Minute; cfg.MaxRetryTimeout = time.Minute })
	for i := range 20 {
		op := fmt.Sprintf("op-%d", i)
		before := c.replicas[0].count()
		// Replies wait until the request has reached all four replicas: a replica that already answered
		// is rightly skipped by the rest of the round, and the fake primary answers for everyone at once.
		hold := make(chan struct{})
		for _, r := range c.replicas {
			r.hold.Store(&hold)
		}
		type result struct {
			rep *Reply
			err error
		}
		done := make(chan result, 1)
		go func() {
			rep, err := cl.Do(ctxT(t, 30*time.Second), []byte(op))
			done <- result{rep, err}
		}()
		if !waitFor(30*time.Second, func() bool { return c.totalArrivals() == 4*(i+1) }) {
			close(hold)
			t.Fatalf("request %d reached %d replicas in all, want %d", i, c.totalArrivals(), 4*(i+1))
		}
		close(hold)
		res := <-done
		rep, err := res.rep, res.err
		if err != nil {
			t.Fatal(err)
		}
		if string(rep.Result) != "ok:"+op || len(rep.Replicas) < 2 || rep.Transmissions != 1 {
			t.Fatalf("reply %+v", rep)
		}
		if c.replicas[0].count() != before+1 {
			t.Fatalf("request %d did not go to the primary", i)
		}
	}
	st := cl.Stats()
	if st.Accepted != 20 || st.Broadcasts != 0 || st.BadReplies != 0 || st.Sent != 80 {
		t.Fatalf("stats %+v", st)
	}
}

// A silent backup (the primary healthy) costs the client nothing: every request completes in its first
// round with the other replicas' replies.
func TestSilentBackupCostsNothing(t *testing.T) {
	c := startCluster(t, "silent-backup", 4)
	c.replicas[2].setMode(silent)
	cl := c.client(t, "silent-backup-client", func(cfg *Config) { cfg.RetryTimeout = time.Minute; cfg.MaxRetryTimeout = time.Minute })
	for i := range 20 {
		rep, err := cl.Do(ctxT(t, 10*time.Second), []byte(fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		if rep.Transmissions != 1 || slices.Contains(rep.Replicas, 2) {
			t.Fatalf("reply %+v", rep)
		}
	}
	if st := cl.Stats(); st.Broadcasts != 0 {
		t.Fatalf("stats %+v: a silent backup made the client broadcast", st)
	}
}

// f Byzantine replicas that sign a wrong result must never make the client accept it.
func TestByzantineWrongResultNotAccepted(t *testing.T) {
	for _, tc := range []struct {
		n         int
		byzantine []int
	}{
		{4, []int{1}},    // a backup
		{4, []int{0}},    // the primary
		{7, []int{0, 3}}, // f = 2 colluding, the primary among them
		{7, []int{2, 5}}, // f = 2 colluding backups
	} {
		t.Run(fmt.Sprintf("n%d-%v", tc.n, tc.byzantine), func(t *testing.T) {
			c := startCluster(t, fmt.Sprintf("byz-%d-%d", tc.n, tc.byzantine[0]), tc.n)
			for _, b := range tc.byzantine {
				c.replicas[b].setMode(wrongResult)
			}
			cl := c.client(t, "byz-client", nil)
			for i := range 10 {
				op := fmt.Sprintf("op-%d", i)
				rep, err := cl.Do(ctxT(t, 20*time.Second), []byte(op))
				if err != nil {
					t.Fatal(err)
				}
				if string(rep.Result) != "ok:"+op {
					t.Fatalf("accepted %q from replicas %v", rep.Result, rep.Replicas)
				}
				for _, r := range rep.Replicas {
					for _, b := range tc.byzantine {
						if r == b {
							t.Fatalf("Byzantine replica %d counted among the agreeing %v", b, rep.Replicas)
						}
					}
				}
				if len(rep.Replicas) < pbft.QuorumsOf(c.g.N()).Weak() {
					t.Fatalf("accepted with %d replicas", len(rep.Replicas))
				}
			}
		})
	}
}

// Replies that are forged, carry a bad proof, name another replica or answer another timestamp are
// rejected; the client still completes with the correct replicas. Replica 3 is silent and replica 2 holds
// its reply back until the misbehaving primary's reply has been seen, so the quorum must wait for it and
// the client cannot count the primary in.
func TestInvalidRepliesRejected(t *testing.T) {
	for _, m := range []mode{forged, badProof, otherTS, otherReplica, refuse} {
		t.Run(fmt.Sprint(m), func(t *testing.T) {
			c := startCluster(t, fmt.Sprintf("invalid-%d", m), 4)
			c.replicas[0].setMode(m) // the primary misbehaves
			c.replicas[3].setMode(silent)
			hold := make(chan struct{})
			c.replicas[2].hold.Store(&hold)
			// The retry timeout is longer than the test: the only early retransmission is the one the
			// primary's refusal causes, however slow the machine.
			cl := c.client(t, "invalid-client", func(cfg *Config) { cfg.RetryTimeout = 30 * time.Second; cfg.MaxRetryTimeout = 30 * time.Second })
			type result struct {
				rep *Reply
				err error
			}
			done := make(chan result, 1)
			go func() {
				rep, err := cl.Do(ctxT(t, 20*time.Second), []byte("x"))
				done <- result{rep, err}
			}()
			switch m {
			case forged, badProof, otherReplica:
				waitUntil(t, 10*time.Second, func() bool { return cl.Stats().BadReplies > 0 })
			case refuse:
				waitUntil(t, 10*time.Second, func() bool { return cl.Stats().Broadcasts > 0 })
			}
			close(hold)
			res := <-done
			if res.err != nil {
				t.Fatal(res.err)
			}
			if string(res.rep.Result) != "ok:x" {
				t.Fatalf("accepted %q", res.rep.Result)
			}
			if slices.Contains(res.rep.Replicas, 0) {
				t.Fatalf("misbehaving replica counted: %v", res.rep.Replicas)
			}
			st := cl.Stats()
			if m == refuse && (st.Broadcasts != 1 || res.rep.Transmissions != 2) {
				t.Fatalf("stats %+v, reply %+v: want one broadcast at once after the primary refused", st, res.rep)
			}
		})
	}
}

// A silent primary: the client waits RetryTimeout, then sends the same request (same timestamp) to every
// replica and completes with the backups.
func TestSilentPrimaryBroadcastSameTimestamp(t *testing.T) {
	c := startCluster(t, "silent", 4)
	c.replicas[0].setMode(silent)
	cl := c.client(t, "silent-client", nil)
	start := time.Now()
	rep, err := cl.Do(ctxT(t, 20*time.Second), []byte("s"))
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < 200*time.Millisecond || rep.Transmissions < 2 {
		t.Fatalf("completed after %s in %d rounds: before the retry timeout?", time.Since(start), rep.Transmissions)
	}
	if string(rep.Result) != "ok:s" {
		t.Fatalf("result %q", rep.Result)
	}
	var ts uint64
	got := 0
	for i, r := range c.replicas {
		arr := r.arrivalsCopy()
		if len(arr) > 0 {
			got++
		} else if i == 0 || slices.Contains(rep.Replicas, i) {
			t.Fatalf("replica %d never got the request", i)
		}
		for _, a := range arr {
			if ts == 0 {
				ts = a.ts
			}
			if a.ts != ts {
				t.Fatalf("replica %d got timestamp %d, others %d: a retry must reuse the timestamp", i, a.ts, ts)
			}
		}
	}
	if got < 3 {
		t.Fatalf("%d replicas got the request: the primary and a quorum of backups at least", got)
	}
	if rep.Timestamp != ts {
		t.Fatalf("reply timestamp %d, sent %d", rep.Timestamp, ts)
	}
}

// A primary that is down (its link down): the client broadcasts without waiting.
func TestDeadPrimaryBroadcastsAtOnce(t *testing.T) {
	c := startCluster(t, "dead", 4)
	cl := c.client(t, "dead-client", func(cfg *Config) { cfg.RetryTimeout = 10 * time.Second; cfg.MaxRetryTimeout = 10 * time.Second })
	c.replicas[0].host.Close()
	waitUntil(t, 10*time.Second, func() bool { return !cl.links[0][0].Up() })
	rep, err := cl.Do(ctxT(t, 8*time.Second), []byte("d"))
	if err != nil {
		t.Fatalf("with the primary down and a 10s retry timeout: %v", err)
	}
	if string(rep.Result) != "ok:d" {
		t.Fatalf("result %q", rep.Result)
	}
}

// The client follows the view the replicas report: after they report view 1 it sends to replica 1 first.
func TestLearnsViewFromReplies(t *testing.T) {
	c := startCluster(t, "view", 4)
	for _, r := range c.replicas {
		r.view.Store(1)
	}
	// A retry timeout longer than any reply on a loaded machine: nothing here may depend on a retransmission.
	cl := c.client(t, "view-client", func(cfg *Config) { cfg.RetryTimeout = 8 * time.Second; cfg.MaxRetryTimeout = 8 * time.Second })
	if _, err := cl.Do(ctxT(t, 10*time.Second), []byte("a")); err != nil {
		t.Fatal(err)
	}
	if cl.View() != 1 || cl.primary() != 1 {
		t.Fatalf("view %d, primary %d after replies in view 1", cl.View(), cl.primary())
	}
	rep, err := cl.Do(ctxT(t, 10*time.Second), []byte("b"))
	if err != nil {
		t.Fatal(err)
	}
	// Only the fake primary of view 1 orders a first-round request: the reply proves it got it, and
	// its arrivals say it got it in one round.
	got := 0
	for _, a := range c.replicas[1].arrivalsCopy() {
		if a.ts == rep.Timestamp {
			got++
		}
	}
	if got != 1 || rep.Transmissions != 1 {
		t.Fatalf("the primary of view 1 got the second request %d times in %d rounds, want once in one round", got, rep.Transmissions)
	}
	// One replica claiming a huge view does not move the client: f+1 must reach it.
	c.replicas[2].view.Store(1000)
	for i := range 5 {
		if _, err := cl.Do(ctxT(t, 10*time.Second), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if cl.View() != 1 {
		t.Fatalf("one replica moved the client to view %d", cl.View())
	}
}

// Several goroutines share a client over several hosts: every request succeeds with its own result.
func TestConcurrentSessions(t *testing.T) {
	c := startCluster(t, "conc", 4)
	cl := c.client(t, "conc-client", func(cfg *Config) { cfg.Sessions = 12; cfg.SessionsPerHost = 5 })
	if len(cl.hosts) != 3 {
		t.Fatalf("%d hosts for 12 sessions at 5 per host", len(cl.hosts))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	sessions := sync.Map{}
	for g := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				op := fmt.Sprintf("g%d-%d", g, i)
				rep, err := cl.Do(ctxT(t, 20*time.Second), []byte(op))
				if err != nil {
					errs <- err
					return
				}
				if string(rep.Result) != "ok:"+op {
					errs <- fmt.Errorf("op %s got %q", op, rep.Result)
					return
				}
				sessions.Store(rep.Session, true)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	n := 0
	sessions.Range(func(_, _ any) bool { n++; return true })
	if n < 2 {
		t.Fatalf("only %d sessions used by 20 goroutines", n)
	}
	if got := cl.Stats().Accepted; got != 200 {
		t.Fatalf("accepted %d of 200", got)
	}
}

func TestContextEndIsUnknownOutcome(t *testing.T) {
	c := startCluster(t, "ctx", 4)
	for _, r := range c.replicas {
		r.setMode(silent)
	}
	cl := c.client(t, "ctx-client", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := cl.Do(ctx, []byte("lost"))
	if !errors.Is(err, ErrUnknownOutcome) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	// The session is free again; the client is closed cleanly while a request is outstanding.
	done := make(chan error, 1)
	go func() {
		_, err := cl.Do(context.Background(), []byte("outstanding"))
		done <- err
	}()
	waitUntil(t, 10*time.Second, func() bool { return c.replicas[0].count() >= 2 })
	cl.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("outstanding Do after Close: %v", err)
	}
	if _, err := cl.Do(context.Background(), []byte("after")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Do after Close: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	c := startCluster(t, "cfg", 4)
	replicaKey := seedKey(t, "cfg-replica-2")
	for name, cfg := range map[string]Config{
		"no key":      {Genesis: c.g},
		"no genesis":  {Key: seedKey(t, "k")},
		"replica key": {Key: replicaKey, Genesis: c.g},
		"bad retry":   {Key: seedKey(t, "k"), Genesis: c.g, RetryTimeout: 2 * time.Second, MaxRetryTimeout: time.Second},
		"bad boot":    {Key: seedKey(t, "k"), Genesis: c.g, Bootstrap: []string{"/ip4/1.2.3.4/tcp/1"}},
	} {
		if cl, err := New(cfg); err == nil {
			cl.Close()
			t.Errorf("%s: accepted", name)
		}
	}
}

func waitUntil(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The header cache (a wire.CachingVerifier) verifies each header once, and never takes a bad signature, or a
// good signature over other content, for a verified one.
func TestHeaderCache(t *testing.T) {
	k := seedKey(t, "hc")
	g, err := identity.NewGenesis("c", []identity.Replica{{Name: "a", PeerID: k.PeerID()}})
	if err != nil {
		t.Fatal(err)
	}
	v, err := g.NewVerifier()
	if err != nil {
		t.Fatal(err)
	}
	hc := wire.NewCachingVerifier(v, wire.NewSigCache(2))
	good, _ := wire.Seal(k, "c", wire.KindReply, []byte("header"))
	for range 2 {
		if err := hc.Verify(good); err != nil {
			t.Fatal(err)
		}
	}
	if n := hc.Cache().Len(); n != 1 || hc.Cache().Hits() != 1 {
		t.Fatalf("cache holds %d, %d hits", n, hc.Cache().Hits())
	}
	// Fresh envelopes, as decoded from the wire (a copied Envelope would share the cached digest).
	bad := &wire.Envelope{ChainID: "c", Kind: wire.KindReply, Author: good.Author, Payload: good.Payload, Sig: append([]byte(nil), good.Sig...)}
	bad.Sig[3] ^= 1
	if hc.Verify(bad) == nil {
		t.Fatal("bad signature accepted")
	}
	other := &wire.Envelope{ChainID: "c", Kind: wire.KindReply, Author: good.Author, Payload: []byte("other header"), Sig: good.Sig}
	if hc.Verify(other) == nil {
		t.Fatal("signature accepted for another payload")
	}
	// Past its size the cache drops its older generation, and verifies again.
	for i := range 5 {
		e, _ := wire.Seal(k, "c", wire.KindReply, []byte(fmt.Sprint("h", i)))
		if err := hc.Verify(e); err != nil {
			t.Fatal(err)
		}
	}
	if n := hc.Cache().Len(); n > 4 {
		t.Fatalf("cache holds %d for a size of 2", n)
	}
}

// A prepared request goes out as DoSigned's does; its deadline ends the wait like a context deadline,
// and a prepared request of another session is refused.
func TestDoPreparedDeadline(t *testing.T) {
	c := startCluster(t, "prepared", 4)
	cl := c.client(t, "prepared-client", func(cfg *Config) { cfg.Sessions = 2 })
	env, ts, err := cl.Session(1).NewRequest(c.g.ChainID(), []byte("p"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Prepare(0, env, ts); err == nil {
		t.Fatal("session 1's request prepared for session 0")
	}
	p, err := cl.Prepare(1, env, ts)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := cl.DoPrepared(ctxT(t, 10*time.Second), p, time.Now().Add(10*time.Second))
	if err != nil || string(rep.Result) != "ok:p" || rep.Session != 1 {
		t.Fatalf("reply %+v, err %v", rep, err)
	}
	for _, r := range c.replicas {
		r.setMode(silent)
	}
	env, ts, _ = cl.Session(1).NewRequest(c.g.ChainID(), []byte("q"))
	p, _ = cl.Prepare(1, env, ts)
	start := time.Now()
	_, err = cl.DoPrepared(context.Background(), p, time.Now().Add(300*time.Millisecond))
	if !errors.Is(err, ErrUnknownOutcome) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("gave up after %s, before its deadline", d)
	}
}

// A request larger than the replicas accept fails at once, unsent.
func TestOversizedRequestRefusedAtOnce(t *testing.T) {
	c := startCluster(t, "oversized", 4)
	cl := c.client(t, "oversized-client", func(cfg *Config) { cfg.MaxRequestBytes = 1024 })
	_, err := cl.Do(ctxT(t, 10*time.Second), make([]byte, 2000))
	if !errors.Is(err, ErrRefused) || cl.Stats().Sent != 0 {
		t.Fatalf("err %v, stats %+v", err, cl.Stats())
	}
}

// The same final refusal from f+1 replicas ends the request at once (one of them is correct, and every
// correct replica refuses it alike); refusals that are not final, or from f replicas only, do not.
func TestFinalRefusalsEndTheRequest(t *testing.T) {
	c := startCluster(t, "final", 4)
	for _, i := range []int{0, 1} {
		c.replicas[i].finalRefusal = true
		c.replicas[i].setMode(refuse)
	}
	cl := c.client(t, "final-client", func(cfg *Config) { cfg.RetryTimeout = time.Minute; cfg.MaxRetryTimeout = time.Minute })
	_, err := cl.Do(ctxT(t, 20*time.Second), []byte("x"))
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "by 2 replicas") {
		t.Fatalf("err = %v", err)
	}
	// One final refusal (f = 1) is not enough: the request completes with the others.
	c.replicas[1].setMode(honest)
	c.replicas[0].view.Store(1) // replica 1 orders now
	for _, r := range c.replicas {
		r.view.Store(1)
	}
	rep, err := cl.Do(ctxT(t, 20*time.Second), []byte("y"))
	if err != nil || string(rep.Result) != "ok:y" {
		t.Fatalf("reply %+v, err %v", rep, err)
	}
}

// With no replica reachable, a request fails after ConnectTimeout, unsent, saying so.
func TestNoReplicaReachable(t *testing.T) {
	c := startCluster(t, "unreachable", 4)
	cl := c.client(t, "unreachable-client", func(cfg *Config) { cfg.ConnectTimeout = 500 * time.Millisecond })
	for _, r := range c.replicas {
		r.host.Close()
	}
	// Every link of every session must be down: a link that has not yet noticed its peer is gone
	// still takes frames, and the request would count as sent.
	waitUntil(t, 30*time.Second, func() bool {
		if cl.connectedReplicas() != 0 {
			return false
		}
		for _, links := range cl.links {
			for _, l := range links {
				if l.Up() {
					return false
				}
			}
		}
		return true
	})
	start := time.Now()
	_, err := cl.Do(ctxT(t, 60*time.Second), []byte("z"))
	if err == nil || !strings.Contains(err.Error(), "no replica reachable") {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("failed after %s, not after its connect timeout", d)
	}
}

// waitFor reports whether cond came true within d.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}
