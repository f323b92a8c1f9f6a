package node

import (
	"crypto/sha256"
	"encoding/binary"
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
//   - sigCache remembers verified signatures (envelope ID and signature bytes), shared by everything
//     below;
//   - verifyPool is the wire.Verifier the p2p host uses for every inbound envelope (and the node for
//     requests submitted through its API and batches it pre-verifies): a few workers that each take
//     whatever is queued, up to maxVerifyBatch, and check it with one batch verification. At low load a
//     worker finds one envelope and verifies it at once, so batching adds no latency;
//   - cachedVerifier is the engine's wire.Verifier (pbft.Config.Verifier): it consults the cache first and
//     verifies the rest inline, so requests verified at ingress and certificates whose votes arrived one by
//     one cost nothing on the loop.

// maxVerifyBatch bounds one batch verification: past a few hundred, batching saves little more
// (identity's benchmarks: ~26 µs per signature at 64, ~22 at 256) and latency grows.
const maxVerifyBatch = 256

// sigKey names a verified signature: the envelope's ID (its signed content) and the signature bytes, so an
// authentic statement with mangled signature bytes is never taken for verified.
type sigKey struct {
	id  wire.Digest
	sig [wire.SignatureSize]byte
}

func sigKeyOf(e *wire.Envelope) (sigKey, bool) {
	var k sigKey
	if e == nil || len(e.Sig) != wire.SignatureSize || len(e.ChainID) > wire.MaxChainIDLen || len(e.Author) != wire.PublicKeySize {
		return k, false
	}
	k.id = envelopeID(e)
	copy(k.sig[:], e.Sig)
	return k, true
}

// envelopeID is e.ID() without the allocation of its signing bytes (it runs several times per request:
// the pool, the engine's verifier, the pre-prepare check at ingress). The caller checks the field sizes.
func envelopeID(e *wire.Envelope) wire.Digest {
	pd := e.PayloadDigest()
	var buf [len(wire.DomainTag) + 2 + wire.MaxChainIDLen + 2 + 2 + wire.PublicKeySize + 32]byte
	b := append(buf[:0], wire.DomainTag...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(e.ChainID)))
	b = append(b, e.ChainID...)
	b = binary.BigEndian.AppendUint16(b, uint16(e.Kind))
	b = binary.BigEndian.AppendUint16(b, uint16(len(e.Author)))
	b = append(b, e.Author...)
	b = append(b, pd[:]...)
	return sha256.Sum256(b)
}

// sigCache is a bounded set of verified signatures: two generations of maps, the older dropped whole when
// the newer fills. Safe for concurrent use.
type sigCache struct {
	mu       sync.Mutex
	size     int
	cur, old map[sigKey]struct{}
}

func newSigCache(size int) *sigCache {
	return &sigCache{size: size, cur: make(map[sigKey]struct{})}
}

func (c *sigCache) has(k sigKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.cur[k]; ok {
		return true
	}
	_, ok := c.old[k]
	return ok
}

func (c *sigCache) add(k sigKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.cur) >= c.size {
		c.old, c.cur = c.cur, make(map[sigKey]struct{}, c.size/4)
	}
	c.cur[k] = struct{}{}
}

// verifyStats counts the pool's and the engine verifier's work, for metrics and tests.
type verifyStats struct {
	verified  atomic.Uint64 // signatures checked with cryptography
	cacheHits atomic.Uint64 // signatures found in the cache
	batches   atomic.Uint64 // batch verifications (of 2 or more signatures)
	batched   atomic.Uint64 // signatures checked in those batches
	failed    atomic.Uint64 // signatures that did not verify
}

// errVerifierClosed is returned by a pool that is shutting down.
var errVerifierClosed = errors.New("node: signature verifier stopped")

// verifyJob is one signature to check; done is closed once err is set. Callers asking for a signature that
// is already queued share its job.
type verifyJob struct {
	e    *wire.Envelope
	key  sigKey
	err  error
	done chan struct{}
}

// verifyPool verifies envelopes on a few worker goroutines, batching whatever is queued. It implements
// wire.Verifier.
type verifyPool struct {
	v      wire.Verifier
	pinned func(author []byte) bool // replica keys: verified inline
	cache  *sigCache
	stats  *verifyStats
	jobs   chan *verifyJob
	quit   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once

	mu       sync.Mutex
	inflight map[sigKey]*verifyJob
}

func newVerifyPool(v wire.Verifier, cache *sigCache, stats *verifyStats, workers int) *verifyPool {
	p := &verifyPool{v: v, cache: cache, stats: stats, jobs: make(chan *verifyJob, 4*maxVerifyBatch),
		quit: make(chan struct{}), inflight: make(map[sigKey]*verifyJob)}
	for range max(1, workers) {
		p.wg.Add(1)
		go p.work()
	}
	return p
}

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
				p.cache.add(j.key)
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
	k, ok := sigKeyOf(e)
	if !ok {
		return nil, wire.ErrBadSignature
	}
	if p.cache.has(k) {
		p.stats.cacheHits.Add(1)
		return nil, nil
	}
	p.mu.Lock()
	if j := p.inflight[k]; j != nil {
		p.mu.Unlock()
		p.stats.cacheHits.Add(1)
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
		k, ok := sigKeyOf(e)
		if !ok {
			return wire.ErrBadSignature
		}
		if p.cache.has(k) {
			p.stats.cacheHits.Add(1)
			return nil
		}
		p.stats.verified.Add(1)
		if err := p.v.Verify(e); err != nil {
			p.stats.failed.Add(1)
			return err
		}
		p.cache.add(k)
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
	keys := make([]sigKey, len(es))
	var failed, todo []int
	for i, e := range es {
		k, ok := sigKeyOf(e)
		if !ok {
			failed = append(failed, i)
			continue
		}
		keys[i] = k
		if p.cache.has(k) {
			p.stats.cacheHits.Add(1)
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
				p.cache.add(keys[i])
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

// allCached reports whether every envelope's signature is known to be valid.
func (p *verifyPool) allCached(es []*wire.Envelope) bool {
	for _, e := range es {
		k, ok := sigKeyOf(e)
		if !ok || !p.cache.has(k) {
			return false
		}
	}
	return true
}

// cachedVerifier is the engine's verifier: cache first, then inline verification (the engine calls it
// from the event loop, for what was not verified at ingress).
type cachedVerifier struct {
	v     wire.Verifier
	cache *sigCache
	stats *verifyStats
}

func (c *cachedVerifier) Verify(e *wire.Envelope) error {
	k, ok := sigKeyOf(e)
	if !ok {
		return wire.ErrBadSignature
	}
	if c.cache.has(k) {
		c.stats.cacheHits.Add(1)
		return nil
	}
	c.stats.verified.Add(1)
	if err := c.v.Verify(e); err != nil {
		c.stats.failed.Add(1)
		return err
	}
	c.cache.add(k)
	return nil
}

func (c *cachedVerifier) VerifyBatch(es []*wire.Envelope) error {
	var todo []*wire.Envelope
	var idx []int
	var keys []sigKey
	var failed []int
	for i, e := range es {
		k, ok := sigKeyOf(e)
		if !ok {
			failed = append(failed, i)
			continue
		}
		if c.cache.has(k) {
			c.stats.cacheHits.Add(1)
			continue
		}
		todo, idx, keys = append(todo, e), append(idx, i), append(keys, k)
	}
	bad := map[int]bool{}
	if len(todo) > 0 {
		c.stats.verified.Add(uint64(len(todo)))
		if len(todo) > 1 {
			c.stats.batches.Add(1)
			c.stats.batched.Add(uint64(len(todo)))
		}
		if err := c.v.VerifyBatch(todo); err != nil {
			var be *wire.BatchError
			if !errors.As(err, &be) {
				return err
			}
			for _, f := range be.Failed {
				bad[f] = true
			}
		}
		for j, i := range idx {
			if bad[j] {
				failed = append(failed, i)
				continue
			}
			c.cache.add(keys[j])
		}
	}
	if len(failed) == 0 {
		return nil
	}
	c.stats.failed.Add(uint64(len(failed)))
	slices.Sort(failed)
	return &wire.BatchError{Failed: failed}
}
