package pbft

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/p2pbft/p2pbft/wire"
	"github.com/p2pbft/p2pbft/wire/wiretest"
)

// The harness: n replicas in one process with a FIFO network under the test's control. Tests drop, hold or
// forge messages through filter, and look inside replicas (same package). It drives replicas the way a node
// must: persist, send, reply, execute and report, in Ready's order.

const testChain = "test-chain"

type tmsg struct {
	from, to int
	env      *wire.Envelope
}

type tstore struct {
	hs      HardState
	entries []Entry
}

func (s *tstore) apply(rd *Ready) {
	if rd.HardState != nil {
		s.hs = *rd.HardState
	}
	s.entries = append(s.entries, rd.Entries...)
	if rd.Truncate > 0 {
		kept := s.entries[:0]
		for _, e := range s.entries {
			if e.Seq > rd.Truncate {
				kept = append(kept, e)
			}
		}
		s.entries = kept
	}
}

// tapp is a trivial deterministic application: the result is the op reversed, the digest chains the ops.
type tapp struct {
	applied uint64
	digest  wire.Digest
	results map[uint64][][]byte
	digests map[uint64]wire.Digest
}

func newTapp() *tapp { return &tapp{results: map[uint64][][]byte{}, digests: map[uint64]wire.Digest{}} }

func (a *tapp) execute(seq uint64, reqs []ClientRequest) ([][]byte, wire.Digest) {
	h := sha256.New()
	h.Write(a.digest[:])
	h.Write(binary.BigEndian.AppendUint64(nil, seq))
	out := make([][]byte, len(reqs))
	for i, q := range reqs {
		r := make([]byte, len(q.Op))
		for j := range q.Op {
			r[j] = q.Op[len(q.Op)-1-j]
		}
		out[i] = r
		h.Write(q.Op)
	}
	h.Sum(a.digest[:0])
	a.applied = seq
	a.results[seq], a.digests[seq] = out, a.digest
	return out, a.digest
}

type tnet struct {
	t       testing.TB
	n       int
	keys    []*wiretest.Key
	pubs    [][]byte
	reg     *wiretest.Registry
	mod     func(*Config)
	reps    []*Replica
	stores  []*tstore
	apps    []*tapp
	down    []bool
	queue   []tmsg
	replies map[string][]*wire.Envelope
	bundles [][]byte // every Ready's replies of one batch, encoded as one reply bundle
	commits [][]CommittedBatch
	quorums [][]QuorumEvent // by replica, as Ready.Quorums reported them
	replyMs []ReplyMessage  // every reply of every replica
	xfers   []*StateTransfer
	filter  func(m tmsg) bool // false drops the message
	clients map[int]*wiretest.Key
	noExec  []bool // replicas whose driver does not report execution
}

func newNet(t testing.TB, n int, mod func(*Config)) *tnet {
	tn := &tnet{t: t, n: n, mod: mod, replies: map[string][]*wire.Envelope{}, clients: map[int]*wiretest.Key{}}
	for i := 0; i < n; i++ {
		k := wiretest.NewKey(fmt.Sprintf("replica-%d", i))
		tn.keys = append(tn.keys, k)
		tn.pubs = append(tn.pubs, k.PublicKey())
	}
	tn.reg = wiretest.NewRegistry(tn.keys...)
	tn.reps = make([]*Replica, n)
	tn.stores = make([]*tstore, n)
	tn.apps = make([]*tapp, n)
	tn.down = make([]bool, n)
	tn.commits = make([][]CommittedBatch, n)
	tn.quorums = make([][]QuorumEvent, n)
	tn.xfers = make([]*StateTransfer, n)
	tn.noExec = make([]bool, n)
	for i := 0; i < n; i++ {
		tn.stores[i] = &tstore{}
		tn.apps[i] = newTapp()
		r, err := New(tn.config(i))
		if err != nil {
			t.Fatal(err)
		}
		tn.reps[i] = r
		tn.drain(i)
	}
	return tn
}

func (tn *tnet) config(i int) Config {
	cfg := Config{ChainID: testChain, Replicas: tn.pubs, Signer: tn.keys[i], Verifier: tn.reg,
		CheckpointInterval: 4, RequestTimeout: 20, RetransmitTimeout: 5}
	if tn.mod != nil {
		tn.mod(&cfg)
	}
	return cfg
}

func (tn *tnet) client(c int) *wiretest.Key {
	if k := tn.clients[c]; k != nil {
		return k
	}
	k := wiretest.NewKey(fmt.Sprintf("client-%d", c))
	tn.reg.Add(k)
	tn.clients[c] = k
	return k
}

func (tn *tnet) request(c int, ts uint64, op string) *wire.Envelope {
	e, err := NewRequest(tn.client(c), testChain, ts, []byte(op))
	if err != nil {
		tn.t.Fatal(err)
	}
	return e
}

// drain handles replica i's Ready values.
func (tn *tnet) drain(i int) {
	r := tn.reps[i]
	for !tn.down[i] && r.HasReady() {
		rd := r.Ready()
		tn.stores[i].apply(&rd)
		tn.quorums[i] = append(tn.quorums[i], rd.Quorums...)
		for _, m := range rd.Messages {
			if m.To == Broadcast {
				for j := 0; j < tn.n; j++ {
					if j != i {
						tn.queue = append(tn.queue, tmsg{from: i, to: j, env: m.Env})
					}
				}
			} else {
				tn.queue = append(tn.queue, tmsg{from: i, to: m.To, env: m.Env})
			}
		}
		for k := 0; k < len(rd.Replies); {
			j := k + 1
			for j < len(rd.Replies) && rd.Replies[j].SameBatch(rd.Replies[k]) {
				j++
			}
			b, err := EncodeReplyBundle(rd.Replies[k:j])
			if err != nil {
				tn.t.Fatal(err)
			}
			tn.bundles = append(tn.bundles, b)
			k = j
		}
		tn.replyMs = append(tn.replyMs, rd.Replies...)
		for _, rm := range rd.Replies {
			e, err := rm.Envelope()
			if err != nil {
				tn.t.Fatal(err)
			}
			tn.replies[string(rm.Client)] = append(tn.replies[string(rm.Client)], e)
		}
		for _, cb := range rd.Committed {
			tn.commits[i] = append(tn.commits[i], cb)
			if tn.noExec[i] {
				continue
			}
			var res [][]byte
			var d wire.Digest
			if cb.AlreadyApplied {
				res, d = tn.apps[i].results[cb.Seq], tn.apps[i].digests[cb.Seq]
			} else {
				res, d = tn.apps[i].execute(cb.Seq, cb.Execute)
			}
			if err := r.Executed(cb.Seq, res, d); err != nil {
				tn.t.Fatalf("replica %d: Executed(%d): %v", i, cb.Seq, err)
			}
		}
		if rd.StateTransfer != nil {
			tn.xfers[i] = rd.StateTransfer
		}
		r.Advance()
	}
}

// deliver delivers queued messages in order until the queue is empty (or max messages).
func (tn *tnet) deliver(max int) int {
	n := 0
	for len(tn.queue) > 0 && n < max {
		m := tn.queue[0]
		tn.queue = tn.queue[1:]
		n++
		if tn.down[m.to] || tn.down[m.from] || (tn.filter != nil && !tn.filter(m)) {
			continue
		}
		_ = tn.reps[m.to].Step(m.env)
		tn.drain(m.to)
	}
	return n
}

func (tn *tnet) run() { tn.deliver(1 << 30) }

// tick ticks every running replica k times, delivering messages after each tick.
func (tn *tnet) tick(k int) {
	for ; k > 0; k-- {
		for i := range tn.reps {
			if !tn.down[i] {
				tn.reps[i].Tick()
				tn.drain(i)
			}
		}
		tn.run()
	}
}

// propose hands a request to replica i as its client API would.
func (tn *tnet) propose(i int, e *wire.Envelope) error {
	err := tn.reps[i].Propose(e)
	tn.drain(i)
	return err
}

// step hands replica i an envelope as if from the network.
func (tn *tnet) step(i int, e *wire.Envelope) error {
	err := tn.reps[i].Step(e)
	tn.drain(i)
	return err
}

func (tn *tnet) executed(i int) uint64 { return tn.reps[i].lastExecuted }

// sign seals a payload as replica i.
func (tn *tnet) sign(i int, kind wire.Kind, payload any) *wire.Envelope {
	p, err := wire.Marshal(payload)
	if err != nil {
		tn.t.Fatal(err)
	}
	e, err := wire.Seal(tn.keys[i], testChain, kind, p)
	if err != nil {
		tn.t.Fatal(err)
	}
	return e
}

// restart rebuilds replica i from its store and its application's applied index.
func (tn *tnet) restart(i int) {
	p := &Persisted{HardState: tn.stores[i].hs, Entries: append([]Entry(nil), tn.stores[i].entries...)}
	r, err := Restart(tn.config(i), p, tn.apps[i].applied)
	if err != nil {
		tn.t.Fatalf("restart %d: %v", i, err)
	}
	tn.reps[i] = r
	tn.down[i] = false
	tn.drain(i)
}

// committedDigests returns the digests replica i delivered, by sequence number.
func (tn *tnet) committedDigests(i int) map[uint64]wire.Digest {
	m := map[uint64]wire.Digest{}
	for _, cb := range tn.commits[i] {
		m[cb.Seq] = cb.Digest
	}
	return m
}

// checkAgreement fails the test if two replicas delivered different batches at one sequence number.
func (tn *tnet) checkAgreement() {
	tn.t.Helper()
	seen := map[uint64]wire.Digest{}
	for i := range tn.reps {
		for seq, d := range tn.committedDigests(i) {
			if o, ok := seen[seq]; ok && o != d {
				tn.t.Fatalf("replicas disagree at %d", seq)
			}
			seen[seq] = d
		}
	}
}

// accepted returns the result client c accepts for timestamp ts (f+1 matching replies), or nil.
func (tn *tnet) accepted(c int, ts uint64) []byte {
	coll := NewReplyCollector(testChain, tn.pubs, tn.reg, tn.client(c).PublicKey())
	coll.Await(ts)
	for _, e := range tn.replies[string(tn.client(c).PublicKey())] {
		if r, err := coll.Add(e); err == nil && r != nil {
			return r.Result
		}
	}
	return nil
}
