package pbft

import (
	"fmt"
	"maps"
	"reflect"
	"testing"

	"github.com/p2pbft/p2pbft/wire"
)

// cacheRun is what a cluster decided and sent in one run of cacheScenario.
type cacheRun struct {
	commits  []map[uint64]wire.Digest
	rejected []map[Reason]uint64
	sent     []wire.Digest // IDs of every message sent, in order
	verified uint64
	cacheLen int    // replica 0's Stats().VerifiedCache
	view     uint64 // replica 1's view at the end
}

// cacheScenario runs requests through a cluster whose primary falls silent (so view changes, certificates
// and NEW-VIEW are checked), with the verified-signature caches mod gives the replicas.
func cacheScenario(t *testing.T, mod func(cfg *Config)) cacheRun {
	t.Helper()
	tn := newNet(t, 4, mod)
	var run cacheRun
	tn.filter = func(m tmsg) bool {
		run.sent = append(run.sent, m.env.ID())
		return true
	}
	for ts := uint64(1); ts <= 12; ts++ {
		if err := tn.propose(0, tn.request(int(ts%3), ts, fmt.Sprint("op", ts))); err != nil {
			t.Fatal(err)
		}
		tn.run()
	}
	tn.filter = func(m tmsg) bool {
		run.sent = append(run.sent, m.env.ID())
		return m.from != 0 && m.to != 0
	}
	for ts := uint64(13); ts <= 16; ts++ {
		req := tn.request(1, ts, fmt.Sprint("op", ts))
		for i := 1; i < 4; i++ {
			_ = tn.propose(i, req)
		}
	}
	tn.tick(40)
	tn.run()
	tn.checkAgreement()
	for i, r := range tn.reps {
		run.commits = append(run.commits, tn.committedDigests(i))
		st := r.Stats()
		run.rejected = append(run.rejected, maps.Clone(st.Rejected))
		run.verified += st.Verified
	}
	run.cacheLen = tn.reps[0].Stats().VerifiedCache
	run.view = tn.reps[1].Status().View
	return run
}

// The verified-signature cache only skips verifications that would succeed: with private caches (the
// default), with one cache all replicas share (as if a driver had verified everything at ingress), and with
// a tiny one that keeps dropping its entries, the replicas commit, reject and send exactly the same.
func TestVerifiedCacheDoesNotChangeDecisions(t *testing.T) {
	private := cacheScenario(t, func(*Config) {})
	if len(private.commits[1]) < 13 || private.verified == 0 || private.view == 0 {
		t.Fatalf("scenario too small: %d commits, %d verifications, view %d", len(private.commits[1]), private.verified, private.view)
	}
	shared := wire.NewSigCache(1 << 12)
	sharedRun := cacheScenario(t, func(cfg *Config) { cfg.VerifiedCache = shared })
	again := cacheScenario(t, func(*Config) {})
	tiny := cacheScenario(t, func(cfg *Config) { cfg.VerifiedCacheSize = 1 })
	for name, run := range map[string]cacheRun{"shared": sharedRun, "again": again, "size 1": tiny} {
		if !reflect.DeepEqual(run.commits, private.commits) {
			t.Errorf("%s: commits differ", name)
		}
		if !reflect.DeepEqual(run.rejected, private.rejected) {
			t.Errorf("%s: rejections differ:\n%v\n%v", name, run.rejected, private.rejected)
		}
		if !reflect.DeepEqual(run.sent, private.sent) {
			t.Errorf("%s: messages sent differ (%d vs %d)", name, len(run.sent), len(private.sent))
		}
	}
	if sharedRun.verified >= private.verified || tiny.verified <= private.verified {
		t.Errorf("verifications: shared %d, private %d, size 1 %d", sharedRun.verified, private.verified, tiny.verified)
	}
	if shared.Hits() == 0 || sharedRun.cacheLen != shared.Len() || tiny.cacheLen > 2 {
		t.Errorf("shared cache: %d hits, %d entries, Stats says %d; size 1: %d entries", shared.Hits(), shared.Len(),
			sharedRun.cacheLen, tiny.cacheLen)
	}
}
