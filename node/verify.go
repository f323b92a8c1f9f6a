package node

import (
	"errors"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/p2pbft/p2pbft/wire"
)

// Signature verification is the node's main CPU cost (BENCHMARKS.md): every client request is
// verified by every replica that sees it. Three pieces make sure each signature is checked once per
// replica, off the event loop where possible, and in batches when there is a queue:
//
//   - Node.sigs, a wire.SigCache, remembers verified signatures (envelope ID and signature bytes), shared
//     by everything below and by the p2p host;
//   - verifyPool is the wire.Verifier the p2p host uses for every inbound envelope (and the node for
//     requests submitted through its API and batches it pre-verifies): a few workers that each take
//     whatever is queued, up to maxVerifyBatch, and check it with one batch verification. At low load a
//     worker finds one envelope and verifies it at once, so batching adds no latency. It is a
//     wire.CachedVerifier, so the host puts no cache of its own in front of it and marks the messages it
//     sends itself in the shared cache;
//   - the engine consults the same cache (pbft.Config.VerifiedCache) before it asks its verifier,
//     engineVerifier, which checks the rest inline and records them; so requests verified at ingress and
//     certificates whose votes arrived one by one cost nothing on the loop.

// maxVerifyBatch bounds one batch verification: past a few hundred, batching saves little more
// (identity's benchmarks: ~26 µs per signature at 64, ~22 at 256) and latency grows.
const maxVerifyBatch = 256

// verifyStats counts the pool's and the engine verifier's work, for metrics and tests.
type verifyStats struct {
	// The cache counts its own hits and misses (wire.SigCache.Hits, Misses).
	verified atomic.Uint64 // signatures checked with cryptography
	batches  atomic.Uint64 // batch verifications (of 2 or more signatures)
	batched  atomic.Uint64 // signatures checked in those batches
	failed   atomic.Uint64 // signatures that did not verify
}

// errVerifierClosed is returned by a pool that is shutting down.
var errVerifierClosed = errors.New("node: signature verifier stopped")

// verifyJob is one signature to check; done is closed once err is set. Callers asking for a signature that
// is already queued share its job.
type verifyJob struct {
	e    *wire.Envelope
	key  wire.SigKey
	err  error
	done chan struct{}
}

// verifyPool verifies envelopes on a few worker goroutines, batching whatever is queued. It implements
// wire.CachedVerifier: it consults and fills its cache.
type verifyPool struct {
	v      wire.Verifier
	pinned func(author []byte) bool // replica keys: verified inline
	cache  *wire.SigCache
	stats  *verifyStats
	jobs   chan *verifyJob
	quit   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once

	mu       sync.Mutex
	inflight map[wire.SigKey]*verifyJob
}

func newVerifyPool(v wire.Verifier, cache *wire.SigCache, stats *verifyStats, workers int) *verifyPool {
	p := &verifyPool{v: v, cache: cache, stats: stats, jobs: make(chan *verifyJob, 4*maxVerifyBatch),
		quit: make(chan struct{}), inflight: make(map[wire.SigKey]*verifyJob)}
	for range max(1, workers) {
		p.wg.Add(1)
		go p.work()
	}
	return p
}

var _ wire.CachedVerifier = (*verifyPool)(nil)

// Cache returns the pool's cache (wire.CachedVerifier): the p2p host uses it rather than one of its own.
func (p *verifyPool) Cache() *wire.SigCache { return p.cache }

// close stops the workers; waiting and later calls fail with errVerifierClosed.
func (p *verifyPool) close() {
	p.once.Do(func() {
		close(p.quit)
		p.wg.Wait()
	})
}

func (p *verifyPool) work() {
	defer p.wg.Done()
	batch := make([]*verifyJob, 0, maxVerifyBatch)
	envs := make([]*wire.Envelope, 0, maxVerifyBatch)
	for {
		batch, envs = batch[:0], envs[:0]
		select {
		case j := <-p.jobs:
			batch = append(batch, j)
		case <-p.quit:
			return
		}
		p.drain(&batch)
		if len(batch) < minUsefulBatch {
			// Requests come in bursts (the clients a block answered send their next ones together), and
			// the goroutines queueing them may be runnable but not yet running: let them run once
			// before deciding. An idle system has nobody else to run, so this costs nothing there.
			runtime.Gosched()
			p.drain(&batch)
		}
		for _, j := range batch {
			envs = append(envs, j.e)
		}
		var failed []int
		if len(envs) == 1 {
			if p.v.Verify(envs[0]) != nil {
				failed = []int{0}
			}
		} else {
			p.stats.batches.Add(1)
			p.stats.batched.Add(uint64(len(envs)))
			if err := p.v.VerifyBatch(envs); err != nil {
				var be *wire.BatchError
				if errors.As(err, &be) {
					failed = be.Failed
				} else {
					failed = make([]int, len(envs))
					for i := range failed {
						failed[i] = i
					}
				}
			}
		}
		p.stats.verified.Add(uint64(len(envs)))
		p.stats.failed.Add(uint64(len(failed)))
		fi := 0
		p.mu.Lock()
		for i, j := range batch {
			if fi < len(failed) && failed[fi] == i {
				fi++
				j.err = wire.ErrBadSignature
			} else {
				p.cache.Add(j.key)
			}
			delete(p.inflight, j.key)
			close(j.done)
		}
		p.mu.Unlock()
	}
}

// minUsefulBatch is the smallest batch worth verifying together (identity.Verifier checks fewer one by
// one: below four, batch verification costs more per signature than single checks).
const minUsefulBatch = 4

// drain adds to *batch whatever is queued, up to maxVerifyBatch.
func (p *verifyPool) drain(batch *[]*verifyJob) {
	for len(*batch) < maxVerifyBatch {
		select {
		case j := <-p.jobs:
			*batch = append(*batch, j)
		default:
			return
		}
	}
}

// submit queues e unless its signature is cached (it returns nil then) or already queued (it returns the
// queued job).
func (p *verifyPool) submit(e *wire.Envelope) (*verifyJob, error) {
	k, ok := wire.SigKeyOf(e)
	if !ok {
		return nil, wire.ErrBadSignature
	}
	if p.cache.Has(k) {
		return nil, nil
	}
	p.mu.Lock()
	if j := p.inflight[k]; j != nil {
		p.mu.Unlock()
		return j, nil
	}
	j := &verifyJob{e: e, key: k, done: make(chan struct{})}
	p.inflight[k] = j
	p.mu.Unlock()
	select {
	case p.jobs <- j:
		return j, nil
	case <-p.quit:
		p.mu.Lock()
		delete(p.inflight, k)
		p.mu.Unlock()
		return nil, errVerifierClosed
	}
}

func (p *verifyPool) wait(j *verifyJob) error {
	select {
	case <-j.done:
		return j.err
	case <-p.quit:
		select {
		case <-j.done: // answered just before quitting
			return j.err
		default:
			return errVerifierClosed
		}
	}
}

// Verify implements wire.Verifier. Replica messages are verified at once by the caller (they are few, one
// per consensus step, and on the critical path); client requests are queued for batch verification.
func (p *verifyPool) Verify(e *wire.Envelope) error {
	if p.pinned != nil && p.pinned(e.Author) {
		k, ok := wire.SigKeyOf(e)
		if !ok {
			return wire.ErrBadSignature
		}
		if p.cache.Has(k) {
			return nil
		}
		p.stats.verified.Add(1)
		if err := p.v.Verify(e); err != nil {
			p.stats.failed.Add(1)
			return err
		}
		p.cache.Add(k)
		return nil
	}
	j, err := p.submit(e)
	if err != nil || j == nil {
		return err
	}
	return p.wait(j)
}

// directBatch is the size from which VerifyBatch verifies on the caller's goroutine, in one batch, instead
// of queueing jobs for the workers: a batch that large gains nothing from merging with others (per-signature
// cost flattens past a few hundred), and skipping the queue saves a job, a channel operation and a wake-up
// per signature. The callers that bring such batches (the ingress pre-verifying a pre-prepare, a client
// link's read batch) run on goroutines of their own, several at once, so the cores still share the work.
const directBatch = 32

// VerifyBatch implements wire.Verifier: the envelopes are queued together, so the workers verify them in
// batches (in parallel when there are several workers); a batch of directBatch or more uncached
// signatures is verified at once on the caller's goroutine.
func (p *verifyPool) VerifyBatch(es []*wire.Envelope) error {
	keys := make([]wire.SigKey, len(es))
	var failed, todo []int
	for i, e := range es {
		k, ok := wire.SigKeyOf(e)
		if !ok {
			failed = append(failed, i)
			continue
		}
		keys[i] = k
		if p.cache.Has(k) {
			continue
		}
		todo = append(todo, i)
	}
	if len(todo) >= directBatch {
		envs := make([]*wire.Envelope, len(todo))
		for j, i := range todo {
			envs[j] = es[i]
		}
		p.stats.verified.Add(uint64(len(envs)))
		p.stats.batches.Add(1)
		p.stats.batched.Add(uint64(len(envs)))
		bad := map[int]bool{}
		if err := p.v.VerifyBatch(envs); err != nil {
			var be *wire.BatchError
			if !errors.As(err, &be) {
				return err
			}
			for _, j := range be.Failed {
				bad[j] = true
			}
		}
		for j, i := range todo {
			if bad[j] {
				failed = append(failed, i)
			} else {
				p.cache.Add(keys[i])
			}
		}
		p.stats.failed.Add(uint64(len(bad)))
	} else {
		jobs := make([]*verifyJob, len(todo))
		for j, i := range todo {
			job, err := p.submit(es[i])
			if errors.Is(err, errVerifierClosed) {
				return err
			}
			if err != nil {
				failed = append(failed, i)
			}
			jobs[j] = job
		}
		for j, job := range jobs {
			if job == nil {
				continue
			}
			if err := p.wait(job); err != nil {
				if errors.Is(err, errVerifierClosed) {
					return err
				}
				failed = append(failed, todo[j])
			}
		}
	}
	if len(failed) == 0 {
		return nil
	}
	slices.Sort(failed)
	return &wire.BatchError{Failed: failed}
}

// engineVerifier is the engine's verifier (pbft.Config.Verifier). The engine looks signatures up in the
// shared cache itself (pbft.Config.VerifiedCache) and asks only for the rest, from the event loop: they are
// verified inline, counted, and recorded in the cache.
type engineVerifier struct {
	v     wire.Verifier
	cache *wire.SigCache
	stats *verifyStats
}

func (c *engineVerifier) Verify(e *wire.Envelope) error {
	c.stats.verified.Add(1)
	if err := c.v.Verify(e); err != nil {
		c.stats.failed.Add(1)
		return err
	}
	c.cache.AddEnvelope(e)
	return nil
}

func (c *engineVerifier) VerifyBatch(es []*wire.Envelope) error {
	c.stats.verified.Add(uint64(len(es)))
	if len(es) > 1 {
		c.stats.batches.Add(1)
		c.stats.batched.Add(uint64(len(es)))
	}
	err := c.v.VerifyBatch(es)
	bad := map[int]bool{}
	if err != nil {
		var be *wire.BatchError
		if !errors.As(err, &be) {
			return err
		}
		for _, i := range be.Failed {
			bad[i] = true
		}
		c.stats.failed.Add(uint64(len(be.Failed)))
	}
	for i, e := range es {
		if !bad[i] {
			c.cache.AddEnvelope(e)
		}
	}
	return err
}
