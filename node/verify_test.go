package node

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

func signedRequests(t testing.TB, n int) []*wire.Envelope {
	t.Helper()
	out := make([]*wire.Envelope, n)
	for i := range out {
		k := testKey(t, fmt.Sprintf("verify-client-%d", i%7))
		e, err := pbft.NewRequest(k, testChain, uint64(i+1), []byte("op"))
		if err != nil {
			t.Fatal(err)
		}
		out[i] = e
	}
	return out
}

// The pool verifies concurrent callers in batches, reports exactly the bad signatures, and never verifies a
// signature twice; the engine finds in the shared cache what the pool verified, and its verifier records what
// it verifies there.
func TestVerifyPool(t *testing.T) {
	idv, err := identity.NewVerifier(nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	cache, stats := wire.NewSigCache(1024), new(verifyStats)
	pool := newVerifyPool(idv, cache, stats, 2)
	defer pool.close()
	reqs := signedRequests(t, 300)
	bad := map[int]bool{3: true, 150: true, 299: true}
	for i := range bad {
		c := *reqs[i]
		c.Sig = append([]byte(nil), c.Sig...)
		c.Sig[0] ^= 0x40
		reqs[i] = &c
	}
	// Concurrent single verifications from many goroutines (as the p2p host makes them).
	var wg sync.WaitGroup
	results := make([]error, len(reqs))
	for i, e := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = pool.Verify(e)
		}()
	}
	wg.Wait()
	for i, err := range results {
		if bad[i] != (err != nil) {
			t.Fatalf("request %d: bad=%v, err=%v", i, bad[i], err)
		}
	}
	if stats.batches.Load() == 0 {
		t.Log("no batch formed (the machine kept up with single verifications)")
	}
	verified := stats.verified.Load()
	// A second pass, batched, hits the cache for every good signature.
	err = pool.VerifyBatch(reqs)
	var be *wire.BatchError
	if !errors.As(err, &be) || fmt.Sprint(be.Failed) != "[3 150 299]" {
		t.Fatalf("VerifyBatch: %v", err)
	}
	if got := stats.verified.Load() - verified; got != uint64(len(bad)) {
		t.Fatalf("the second pass verified %d signatures, want only the %d bad ones again", got, len(bad))
	}
	if pool.Cache() != cache {
		t.Fatal("the pool does not expose its cache")
	}
	for _, e := range reqs[4:100] {
		if !cache.HasEnvelope(e) {
			t.Fatal("a signature the pool verified is not in the shared cache")
		}
	}
	engine := &engineVerifier{v: idv, cache: cache, stats: stats}
	fresh := make([]*wire.Envelope, 3) // signatures nobody verified yet
	for i := range fresh {
		if fresh[i], err = pbft.NewRequest(testKey(t, "verify-fresh"), testChain, uint64(i+1), []byte("op")); err != nil {
			t.Fatal(err)
		}
	}
	verified = stats.verified.Load()
	if err := engine.VerifyBatch([]*wire.Envelope{fresh[0], reqs[150], fresh[1]}); !errors.As(err, &be) || fmt.Sprint(be.Failed) != "[1]" {
		t.Fatalf("engine VerifyBatch: %v", err)
	}
	if err := engine.Verify(fresh[2]); err != nil {
		t.Fatal(err)
	}
	if got := stats.verified.Load() - verified; got != 4 {
		t.Fatalf("the engine's verifier counted %d verifications, want 4", got)
	}
	for _, e := range fresh {
		if !cache.HasEnvelope(e) {
			t.Fatal("a signature the engine verified is not in the shared cache")
		}
	}
	if cache.HasEnvelope(reqs[150]) {
		t.Fatal("a bad signature is in the cache")
	}
	pool.close()
	if err := pool.Verify(signedRequests(t, 1)[0]); err != nil && !errors.Is(err, errVerifierClosed) {
		t.Fatalf("after close: %v", err)
	}
}

func BenchmarkVerifyPool(b *testing.B) {
	idv, _ := identity.NewVerifier(nil, 0)
	for _, workers := range []int{1, 2} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			reqs := signedRequests(b, b.N)
			stats := new(verifyStats)
			pool := newVerifyPool(idv, wire.NewSigCache(b.N+1), stats, workers)
			defer pool.close()
			b.ResetTimer()
			var wg sync.WaitGroup
			ch := make(chan *wire.Envelope)
			for range 64 { // 64 concurrent callers, like many client streams
				wg.Add(1)
				go func() {
					defer wg.Done()
					for e := range ch {
						if err := pool.Verify(e); err != nil {
							b.Error(err)
						}
					}
				}()
			}
			for _, e := range reqs {
				ch <- e
			}
			close(ch)
			wg.Wait()
			if n := stats.batches.Load(); n > 0 {
				b.ReportMetric(float64(b.N)/float64(n), "sigs/batch")
			}
		})
	}
}
