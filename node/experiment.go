package node

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/p2pbft/p2pbft/node/config"
	"github.com/p2pbft/p2pbft/node/statesync"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// Byzantine replicas for experiments. A replica started with Options.Experiment (and its explicit opt-in)
// misbehaves on purpose, so that users can watch the other replicas tolerate it. The misbehaviour lives
// entirely on the replica's way out, around the one place consensus messages leave (Node.send) and the
// place replies reach clients (Node.reply): the engine inside stays correct and keeps its own state
// consistent, which is what a Byzantine replica that wants to stay plausible would do, and the code that
// runs on real nodes has no experiment branches but one nil check on each path.
//
// The modes (config.ByzantineModes): silent, equivocate, delay, drop, garbage. See Experiment.

// ByzantineMode names a misbehaviour (config.ByzantineModes).
type ByzantineMode string

// The modes.
const (
	ByzantineSilent     ByzantineMode = "silent"
	ByzantineEquivocate ByzantineMode = "equivocate"
	ByzantineDelay      ByzantineMode = "delay"
	ByzantineDrop       ByzantineMode = "drop"
	ByzantineGarbage    ByzantineMode = "garbage"
)

// Experiment makes a replica Byzantine on purpose, for fault-injection experiments (Options.Experiment).
// It takes effect only with AllowByzantine set: the opt-in a user gives explicitly (the CLI sets it only
// for --experiment-byzantine), so a mode that reaches the node any other way (a configuration file copied
// from an experiment, a default) makes New fail instead of starting a misbehaving replica.
type Experiment struct {
	// AllowByzantine is the explicit opt-in. New refuses a Mode without it.
	AllowByzantine bool
	// Mode is the misbehaviour; empty for none.
	Mode ByzantineMode
	// Delay is how long the delay mode holds each outgoing message and reply.
	Delay time.Duration
	// DropRate is the fraction of outgoing messages (per destination replica) and replies the drop mode
	// drops, in (0, 1].
	DropRate float64
	// Seed seeds the random choices of the drop and garbage modes.
	Seed uint64
}

// ExperimentFromConfig returns the experiment the configuration's [experiment] section describes, with
// the user's opt-in (the --experiment-byzantine flag), or nil if it names no Byzantine mode.
func ExperimentFromConfig(e config.Experiment, allowByzantine bool) *Experiment {
	if e.ByzantineMode == "" {
		return nil
	}
	return &Experiment{AllowByzantine: allowByzantine, Mode: ByzantineMode(e.ByzantineMode),
		Delay: e.ByzantineDelay, DropRate: e.ByzantineDropRate, Seed: e.ByzantineSeed}
}

// ErrByzantineNotAllowed is returned by New for an Experiment with a mode but without its opt-in.
var ErrByzantineNotAllowed = errors.New("node: a Byzantine experiment mode needs the explicit opt-in (--experiment-byzantine)")

// validate checks the experiment; a nil or empty one is valid.
func (x *Experiment) validate() error {
	if x == nil || x.Mode == "" {
		return nil
	}
	if !x.AllowByzantine {
		return fmt.Errorf("%w: refusing to start as a %q replica", ErrByzantineNotAllowed, x.Mode)
	}
	if !slices.Contains(config.ByzantineModes, string(x.Mode)) {
		return fmt.Errorf("node: experiment: unknown Byzantine mode %q (want one of %v)", x.Mode, config.ByzantineModes)
	}
	switch x.Mode {
	case ByzantineDelay:
		if x.Delay <= 0 {
			return errors.New("node: experiment: the delay mode needs a positive delay")
		}
	case ByzantineDrop:
		if !(x.DropRate > 0 && x.DropRate <= 1) {
			return fmt.Errorf("node: experiment: drop rate %v not in (0, 1]", x.DropRate)
		}
	}
	return nil
}

// byzantine is a running Byzantine mode. Its send runs on the outbox goroutine, its reply on the loop,
// serve on request handlers; the shared random source is guarded.
type byzantine struct {
	n    *Node
	x    Experiment
	mu   sync.Mutex
	rng  *rand.Rand
	turn int // garbage: which kind of garbage comes next

	// delay mode: messages waiting, in order (they all wait the same time).
	delayed chan delayedMsg

	sent, dropped, forged atomic.Uint64
}

type delayedMsg struct {
	due time.Time
	m   pbft.Message
}

func newByzantine(n *Node, x *Experiment) *byzantine {
	b := &byzantine{n: n, x: *x, rng: rand.New(rand.NewPCG(x.Seed, x.Seed^0x9e3779b97f4a7c15))}
	if x.Mode == ByzantineDelay {
		b.delayed = make(chan delayedMsg, 1<<16)
	}
	return b
}

// run releases delayed messages until ctx ends (delay mode only).
func (b *byzantine) run(ctx context.Context) {
	if b.delayed == nil {
		return
	}
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		select {
		case d := <-b.delayed:
			if wait := time.Until(d.due); wait > 0 {
				t.Reset(wait)
				select {
				case <-t.C:
				case <-ctx.Done():
					return
				}
			}
			b.n.transmit(d.m)
		case <-ctx.Done():
			return
		}
	}
}

func (b *byzantine) chance(p float64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.rng.Float64() < p
}

// send is Node.send for a Byzantine replica.
func (b *byzantine) send(m pbft.Message) {
	n := b.n
	switch b.x.Mode {
	case ByzantineSilent:
		b.dropped.Add(1)
	case ByzantineDelay:
		select {
		case b.delayed <- delayedMsg{due: time.Now().Add(b.x.Delay), m: m}:
		default:
			b.dropped.Add(1) // a full queue: the delay has grown into loss
		}
	case ByzantineDrop:
		for _, one := range n.perReplica(m) {
			if b.chance(b.x.DropRate) {
				b.dropped.Add(1)
				continue
			}
			b.sent.Add(1)
			n.transmit(one)
		}
	case ByzantineEquivocate:
		if m.Env.Kind != wire.KindPrePrepare || m.To != pbft.Broadcast || !b.equivocate(m) {
			n.transmit(m)
		}
	case ByzantineGarbage:
		for _, one := range n.perReplica(m) {
			b.forged.Add(1)
			n.transmit(pbft.Message{To: one.To, Env: b.garbage(one.Env)})
		}
	default:
		n.transmit(m)
	}
}

// perReplica splits a broadcast into one message per other replica (so that the drop and garbage modes
// treat each destination on its own).
func (n *Node) perReplica(m pbft.Message) []pbft.Message {
	if m.To != pbft.Broadcast {
		return []pbft.Message{m}
	}
	out := make([]pbft.Message, 0, n.n-1)
	for i := range n.n {
		if i != n.self {
			out = append(out, pbft.Message{To: i, Env: m.Env})
		}
	}
	return out
}

// equivocate sends the pre-prepare's batch to the first backup and a conflicting batch for the same view
// and sequence number (the requests in reverse order, or the null batch for a single request) to the
// others, each signed with this replica's key. It reports false if there is nothing to equivocate with
// (a null batch).
func (b *byzantine) equivocate(m pbft.Message) bool {
	n := b.n
	p, err := pbft.DecodePrePrepare(m.Env.Payload)
	if err != nil {
		return false
	}
	reqs, err := pbft.DecodeBatch(m.Env.Body)
	if err != nil || len(reqs) == 0 {
		return false
	}
	other := slices.Clone(reqs)
	if len(other) == 1 {
		other = nil
	} else {
		slices.Reverse(other)
	}
	ids := make([]wire.Digest, len(other))
	for i, e := range other {
		ids[i] = e.ID()
	}
	pp := pbft.PrePrepare{View: p.View, Seq: p.Seq, Digest: pbft.BatchDigest(ids)}
	payload, err := pbft.EncodePayload(&pp)
	if err != nil {
		return false
	}
	env, err := wire.Seal(n.key, n.chainID, wire.KindPrePrepare, payload)
	if err != nil {
		return false
	}
	if env.Body, err = pbft.EncodeBatch(other); err != nil {
		return false
	}
	env.Resend = m.Env.Resend
	first := true
	for i := range n.n {
		if i == n.self {
			continue
		}
		if first {
			first = false
			n.transmit(pbft.Message{To: i, Env: m.Env})
			continue
		}
		b.forged.Add(1)
		n.transmit(pbft.Message{To: i, Env: env})
	}
	return true
}

// garbage returns a harmful stand-in for e, in turn: a malformed payload (signed), a broken signature,
// or a well-formed, correctly signed message with wrong content.
func (b *byzantine) garbage(e *wire.Envelope) *wire.Envelope {
	n := b.n
	b.mu.Lock()
	turn := b.turn
	b.turn++
	junk := make([]byte, 8+b.rng.IntN(64))
	for i := range junk {
		junk[i] = byte(b.rng.Uint32())
	}
	var digest wire.Digest
	for i := range digest {
		digest[i] = byte(b.rng.Uint32())
	}
	b.mu.Unlock()
	switch turn % 3 {
	case 0: // malformed: a payload that does not decode, signed by us
		if f, err := wire.Seal(n.key, n.chainID, e.Kind, junk); err == nil {
			return f
		}
	case 1: // wrongly signed: the real statement with a broken signature
		f := e.WithoutBody()
		f.Body, f.Resend = e.Body, e.Resend
		f.Sig = slices.Clone(e.Sig)
		f.Sig[0] ^= 0x80
		return f
	}
	// bogus: well-formed and signed, but about a batch or state nobody has
	var v any
	switch e.Kind {
	case wire.KindPrePrepare:
		if p, err := pbft.DecodePrePrepare(e.Payload); err == nil {
			v = &pbft.PrePrepare{View: p.View, Seq: p.Seq, Digest: digest}
		}
	case wire.KindPrepare:
		if p, err := pbft.DecodePrepare(e.Payload); err == nil {
			v = &pbft.Prepare{View: p.View, Seq: p.Seq, Digest: digest}
		}
	case wire.KindCommit:
		if p, err := pbft.DecodeCommit(e.Payload); err == nil {
			v = &pbft.Commit{View: p.View, Seq: p.Seq, Digest: digest}
		}
	case wire.KindCheckpoint:
		if p, err := pbft.DecodeCheckpoint(e.Payload); err == nil {
			v = &pbft.Checkpoint{Seq: p.Seq, Digest: digest}
		}
	}
	payload := junk
	if v != nil {
		if p, err := pbft.EncodePayload(v); err == nil {
			payload = p
		}
	}
	if f, err := wire.Seal(n.key, n.chainID, e.Kind, payload); err == nil {
		return f
	}
	return e
}

// reply is Node.reply's delivery for a Byzantine replica: env is the reply the engine built. It returns
// the reply to deliver now (nil for none); the delay mode delivers later itself.
func (b *byzantine) reply(r pbft.ReplyMessage, env *wire.Envelope, deliver func(*wire.Envelope)) *wire.Envelope {
	switch b.x.Mode {
	case ByzantineSilent:
		return nil
	case ByzantineDrop:
		if b.chance(b.x.DropRate) {
			return nil
		}
	case ByzantineDelay:
		time.AfterFunc(b.x.Delay, func() { deliver(env) })
		return nil
	case ByzantineGarbage:
		if w, err := b.wrongReply(r, env); err == nil {
			return w
		}
	}
	return env
}

// wrongReply signs a reply that carries another result for the client's request, with a valid Merkle
// proof: only a client that waits for f+1 matching replies is safe from it.
func (b *byzantine) wrongReply(r pbft.ReplyMessage, env *wire.Envelope) (*wire.Envelope, error) {
	n := b.n
	hdr, err := pbft.DecodeReplyHeader(env.Payload)
	if err != nil {
		return nil, err
	}
	result := append([]byte("byzantine: not the result of "), r.Result()...)
	leaf := pbft.ReplyLeafHash(r.Client, r.Timestamp, result)
	payload, err := pbft.EncodePayload(&pbft.ReplyHeader{View: hdr.View, Seq: hdr.Seq, Replica: uint32(n.self), Count: 1, Root: leaf})
	if err != nil {
		return nil, err
	}
	w, err := wire.Seal(n.key, n.chainID, wire.KindReply, payload)
	if err != nil {
		return nil, err
	}
	if w.Body, err = wire.Marshal(&pbft.ReplyProof{Client: r.Client, Timestamp: r.Timestamp, Result: result}); err != nil {
		return nil, err
	}
	b.forged.Add(1)
	return w, nil
}

// serve lets the Byzantine modes refuse state-transfer requests (silent) or answer them with garbage
// (garbage); other modes serve honestly.
func (b *byzantine) serve(r *statesync.Response) error {
	switch b.x.Mode {
	case ByzantineSilent:
		return errors.New("node: not answering")
	case ByzantineGarbage:
		b.forged.Add(1)
		switch r.Type {
		case statesync.TypeChunk, statesync.TypeTable:
			r.Data = []byte("garbage")
		case statesync.TypeBlocks:
			for i := range r.Blocks {
				r.Blocks[i] = []byte("garbage")
			}
		}
	}
	return nil
}

// bundle is the replier's delivery for a Byzantine replica: data is the honest bundle of msgs, push sends
// a bundle to the link. silent sends nothing, drop drops at its rate, delay sends later, garbage sends
// one forged reply per request (another result, a valid proof under its own signed header).
func (b *byzantine) bundle(msgs []pbft.ReplyMessage, data []byte, push func([]byte)) {
	switch b.x.Mode {
	case ByzantineSilent:
		return
	case ByzantineDrop:
		if b.chance(b.x.DropRate) {
			return
		}
	case ByzantineDelay:
		time.AfterFunc(b.x.Delay, func() { push(data) })
		return
	case ByzantineGarbage:
		for _, m := range msgs {
			env, err := m.Envelope()
			if err != nil {
				continue
			}
			w, err := b.wrongReply(m, env)
			if err != nil {
				continue
			}
			p, err := pbft.DecodeReplyProof(w.Body)
			if err != nil {
				continue
			}
			leaf := pbft.ReplyLeaf{Index: p.Index, Client: p.Client, Timestamp: p.Timestamp, Result: p.Result}
			if d, err := wire.Marshal(&pbft.ReplyBundle{Header: w.WithoutBody(), Leaves: []pbft.ReplyLeaf{leaf}}); err == nil {
				push(d)
			}
		}
		return
	}
	push(data)
}
