package pbft

import (
	"encoding/binary"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/wire"
	"github.com/p2pbft/p2pbft/wire/wiretest"
)

// The core's throughput: n replicas in one process, messages handed over in memory (each recipient gets its
// own envelope value, so no cached digest is shared), fake signatures (wiretest), a trivial application.
// Requests are signed before the timer starts (that is the clients' work). The figure is committed requests
// per second: every request is ordered, executed and replied to (one signed reply header per batch) on all
// n replicas, which share the benchmark's CPUs.
//
//	go test ./pbft -run XXX -bench Core -benchtime 200000x
//
// Variants: "primary" hands requests only to the primary (backups verify the request signatures in each
// pre-prepare with one VerifyBatch call); "gossip" also hands every request to every backup first, as the
// gossip layer does after verifying it, so backups find it in their verified cache.

func BenchmarkCore(b *testing.B) {
	for _, n := range []int{4} {
		for _, gossip := range []bool{false, true} {
			name := fmt.Sprintf("n=%d/batch=1000/primary", n)
			if gossip {
				name = fmt.Sprintf("n=%d/batch=1000/gossip", n)
			}
			b.Run(name, func(b *testing.B) { benchCore(b, n, 1000, gossip) })
		}
	}
}

type benchNet struct {
	reps    []*Replica
	queue   []tmsg
	applied []uint64
	replies int
}

func (bn *benchNet) drain(i int) {
	r := bn.reps[i]
	for r.HasReady() {
		rd := r.Ready()
		for _, m := range rd.Messages {
			if m.To == Broadcast {
				for j := range bn.reps {
					if j != i {
						bn.queue = append(bn.queue, tmsg{from: i, to: j, env: m.Env})
					}
				}
			} else {
				bn.queue = append(bn.queue, tmsg{from: i, to: m.To, env: m.Env})
			}
		}
		bn.replies += len(rd.Replies)
		for _, cb := range rd.Committed {
			res := make([][]byte, len(cb.Execute))
			for k := range res {
				res[k] = []byte("ok")
			}
			var d wire.Digest
			binary.BigEndian.PutUint64(d[:], cb.Seq)
			if err := r.Executed(cb.Seq, res, d); err != nil {
				panic(err)
			}
			bn.applied[i] = cb.Seq
		}
		r.Advance()
	}
}

func (bn *benchNet) run() {
	for len(bn.queue) > 0 {
		m := bn.queue[0]
		bn.queue = bn.queue[1:]
		e := &wire.Envelope{ChainID: m.env.ChainID, Kind: m.env.Kind, Author: m.env.Author, Payload: m.env.Payload,
			Sig: m.env.Sig, Body: m.env.Body}
		if err := bn.reps[m.to].Step(e); err != nil {
			var se *StepError
			if asStepError(err, &se) && se.Reason.Invalid() {
				panic(err)
			}
		}
		bn.drain(m.to)
	}
}

func benchCore(b *testing.B, n, batch int, gossip bool) {
	keys := make([]*wiretest.Key, n)
	pubs := make([][]byte, n)
	for i := range keys {
		keys[i] = wiretest.NewKey(fmt.Sprintf("replica-%d", i))
		pubs[i] = keys[i].PublicKey()
	}
	reg := wiretest.NewRegistry(keys...)
	total := (b.N + batch - 1) / batch * batch
	const clients = 1000
	ck := make([]*wiretest.Key, clients)
	for c := range ck {
		ck[c] = wiretest.NewKey(fmt.Sprintf("client-%d", c))
		reg.Add(ck[c])
	}
	reqs := make([]*wire.Envelope, total)
	for i := range reqs {
		e, err := NewRequest(ck[i%clients], "bench", uint64(i/clients+1), []byte("set k v"))
		if err != nil {
			b.Fatal(err)
		}
		reqs[i] = e
	}
	bn := &benchNet{reps: make([]*Replica, n), applied: make([]uint64, n)}
	for i := range bn.reps {
		r, err := New(Config{ChainID: "bench", Replicas: pubs, Signer: keys[i], Verifier: reg,
			MaxBatchRequests: batch, BatchTimeout: 1 << 30, MaxPendingRequests: 4 * batch * 8,
			VerifiedCacheSize: 1 << 20})
		if err != nil {
			b.Fatal(err)
		}
		bn.reps[i] = r
		bn.drain(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	const inflight = 4 // batches handed to the primary before the network runs
	for lo := 0; lo < total; lo += inflight * batch {
		hi := min(lo+inflight*batch, total)
		for _, e := range reqs[lo:hi] {
			if gossip {
				for j := 1; j < n; j++ {
					_ = bn.reps[j].Step(e)
				}
			}
			if err := bn.reps[0].Propose(e); err != nil {
				b.Fatal(err)
			}
		}
		bn.drain(0)
		for j := 1; j < n; j++ {
			bn.drain(j)
		}
		bn.run()
	}
	el := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	for i := range bn.reps {
		if bn.reps[i].lastExecuted != uint64(total/batch) {
			b.Fatalf("replica %d executed %d batches of %d", i, bn.reps[i].lastExecuted, total/batch)
		}
	}
	b.ReportMetric(float64(total)/el.Seconds(), "req/s")
	// The machine may be shared: CPU time per request says what the core costs regardless of contention.
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(total), "cpu-ns/req")
	b.ReportMetric(float64(total)/cpu.Seconds(), "req/cpu-s")
}

// cpuTime returns the CPU time (user and system) this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCoreParallel runs each replica on its own goroutine, as each node runs its own event loop, so
// the replicas share the machine's cores; messages go through unbounded in-memory queues.
func BenchmarkCoreParallel(b *testing.B) {
	b.Run("n=4/batch=1000/primary", func(b *testing.B) { benchParallel(b, 4, 1000) })
}

type pitem struct {
	env     *wire.Envelope
	propose bool
}

type inbox struct {
	mu    sync.Mutex
	items []pitem
	wake  chan struct{}
}

func (q *inbox) put(it pitem) {
	q.mu.Lock()
	q.items = append(q.items, it)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *inbox) take() []pitem {
	q.mu.Lock()
	items := q.items
	q.items = nil
	q.mu.Unlock()
	return items
}

func benchParallel(b *testing.B, n, batch int) {
	keys := make([]*wiretest.Key, n)
	pubs := make([][]byte, n)
	for i := range keys {
		keys[i] = wiretest.NewKey(fmt.Sprintf("replica-%d", i))
		pubs[i] = keys[i].PublicKey()
	}
	reg := wiretest.NewRegistry(keys...)
	total := (b.N + batch - 1) / batch * batch
	// A client has one request outstanding: the feeder keeps at most `ahead` batches in flight and there
	// are that many batches' worth of clients.
	const ahead = 16
	clients := ahead * batch
	ck := make([]*wiretest.Key, clients)
	for c := range ck {
		ck[c] = wiretest.NewKey(fmt.Sprintf("client-%d", c))
		reg.Add(ck[c])
	}
	reqs := make([]*wire.Envelope, total)
	for i := range reqs {
		reqs[i], _ = NewRequest(ck[i%clients], "bench", uint64(i/clients+1), []byte("set k v"))
	}
	reps := make([]*Replica, n)
	boxes := make([]*inbox, n)
	for i := range reps {
		r, err := New(Config{ChainID: "bench", Replicas: pubs, Signer: keys[i], Verifier: reg,
			MaxBatchRequests: batch, BatchTimeout: 1 << 30, MaxPendingRequests: total + batch, VerifiedCacheSize: 1 << 20})
		if err != nil {
			b.Fatal(err)
		}
		reps[i] = r
		boxes[i] = &inbox{wake: make(chan struct{}, 1)}
	}
	want := uint64(total / batch)
	var wg sync.WaitGroup
	progress := make(chan uint64, 1<<16)
	loop := func(i int) {
		defer wg.Done()
		r := reps[i]
		for {
			for r.HasReady() {
				rd := r.Ready()
				for _, m := range rd.Messages {
					for j := range boxes {
						if j != i && (m.To == Broadcast || m.To == j) {
							e := &wire.Envelope{ChainID: m.Env.ChainID, Kind: m.Env.Kind, Author: m.Env.Author,
								Payload: m.Env.Payload, Sig: m.Env.Sig, Body: m.Env.Body}
							boxes[j].put(pitem{env: e})
						}
					}
				}
				for _, cb := range rd.Committed {
					res := make([][]byte, len(cb.Execute))
					for k := range res {
						res[k] = []byte("ok")
					}
					var d wire.Digest
					binary.BigEndian.PutUint64(d[:], cb.Seq)
					if err := r.Executed(cb.Seq, res, d); err != nil {
						panic(err)
					}
					if i == 0 {
						progress <- cb.Seq
					}
				}
				r.Advance()
			}
			if r.lastExecuted >= want {
				return
			}
			<-boxes[i].wake
			for _, it := range boxes[i].take() {
				if it.propose {
					_ = r.Propose(it.env)
				} else {
					_ = r.Step(it.env)
				}
			}
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	for i := range reps {
		wg.Add(1)
		go loop(i)
	}
	var executed uint64
	for lo := 0; lo < total; lo += batch {
		for uint64(lo/batch) >= executed+ahead {
			executed = <-progress
		}
		for _, e := range reqs[lo : lo+batch] {
			boxes[0].put(pitem{env: e, propose: true})
		}
	}
	wg.Wait()
	el := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	b.ReportMetric(float64(total)/el.Seconds(), "req/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(total), "cpu-ns/req")
}
