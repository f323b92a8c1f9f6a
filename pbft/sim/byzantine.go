package sim

import (
	"bytes"
	"slices"

	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// byzantine is the behaviour of a Byzantine replica. Except for a silent one, it runs the honest core (so it
// knows the protocol state and sends plausible messages) and tampers with what the core sends, and adds
// messages of its own. It holds only its own key: other replicas' signatures it can only replay, not forge
// (a forged one fails verification).
type byzantine struct {
	c    *Cluster
	n    *node
	kind Fault
	seen []*wire.Envelope // recently received messages, for replays
	// A forging primary stalls after a few batches now and then, to force a view change right after it
	// led a view, and then claims in its VIEW-CHANGE that the null batch prepared at the last sequence
	// number it assigned: with the view it led, such a certificate would win in the NEW-VIEW.
	stallView  uint64
	stallAfter int
	ppInView   map[uint64]int
	lastPP     map[uint64]uint64
	// An equivocating new primary builds its NEW-VIEW from the VIEW-CHANGEs that carry the fewest prepared
	// certificates (any quorum of valid ones is allowed), to drop every batch it can.
	vcs map[uint64]map[string]*wire.Envelope
}

func newByzantine(c *Cluster, n *node, kind Fault) *byzantine {
	return &byzantine{c: c, n: n, kind: kind, ppInView: map[uint64]int{}, lastPP: map[uint64]uint64{}, stallView: ^uint64(0),
		vcs: map[uint64]map[string]*wire.Envelope{}}
}

func (b *byzantine) key() wire.Signer { return b.c.keys[b.n.idx] }

func (b *byzantine) seal(kind wire.Kind, payload any) *wire.Envelope {
	p, err := pbft.EncodePayload(payload)
	if err != nil {
		panic(err)
	}
	e, err := wire.Seal(b.key(), chainID, kind, p)
	if err != nil {
		panic(err)
	}
	return e
}

// observe records a received message for later replay.
func (b *byzantine) observe(e *wire.Envelope) {
	if e.Kind == wire.KindViewChange && b.kind == FaultEquivocate {
		if vc, err := pbft.DecodeViewChange(e.Payload); err == nil {
			if b.vcs[vc.View] == nil {
				b.vcs[vc.View] = map[string]*wire.Envelope{}
			}
			b.vcs[vc.View][string(e.Author)] = e.WithoutBody()
			delete(b.vcs, vc.View-10)
		}
	}
	if b.kind != FaultStale && b.kind != FaultForge {
		return
	}
	if len(b.seen) < 512 {
		b.seen = append(b.seen, e)
		return
	}
	b.seen[b.c.rng.IntN(len(b.seen))] = e
}

func (b *byzantine) others() []int {
	var out []int
	for j := 0; j < b.c.opt.N; j++ {
		if j != b.n.idx {
			out = append(out, j)
		}
	}
	return out
}

// transform turns one message the honest core wants to send into what the Byzantine replica sends.
func (b *byzantine) transform(m pbft.Message) []pbft.Message {
	switch b.kind {
	case FaultSilent:
		return nil
	case FaultEquivocate:
		return b.equivocate(m)
	case FaultForge:
		return b.forge(m)
	}
	return []pbft.Message{m}
}

// equivocate sends a different batch or vote to a random part of the replicas.
func (b *byzantine) equivocate(m pbft.Message) []pbft.Message {
	rng := b.c.rng
	if m.Env.Kind == wire.KindFetchReply {
		if e := b.tamperFetchReply(m); e != nil { // tamper.go
			return []pbft.Message{{To: m.To, Env: e}}
		}
	}
	if m.To != pbft.Broadcast || (rng.IntN(3) == 0 && m.Env.Kind != wire.KindNewView) {
		return []pbft.Message{m}
	}
	var alt *wire.Envelope
	switch m.Env.Kind {
	case wire.KindNewView:
		if nv := b.sparseNewView(m.Env); nv != nil {
			return []pbft.Message{{To: m.To, Env: nv}}
		}
		return []pbft.Message{m}
	case wire.KindPrePrepare:
		p, err := pbft.DecodePrePrepare(m.Env.Payload)
		if err != nil || len(m.Env.Body) == 0 {
			return []pbft.Message{m}
		}
		reqs, err := pbft.DecodeBatch(m.Env.Body)
		if err != nil {
			return []pbft.Message{m}
		}
		switch {
		case rng.IntN(3) == 0:
			reqs = nil // the null batch
		case len(reqs) > 1:
			reqs[0], reqs[len(reqs)-1] = reqs[len(reqs)-1], reqs[0]
		default:
			reqs = nil
		}
		body, _ := pbft.EncodeBatch(reqs)
		ids := make([]wire.Digest, len(reqs))
		for i, q := range reqs {
			ids[i] = q.ID()
		}
		alt = b.seal(wire.KindPrePrepare, &pbft.PrePrepare{View: p.View, Seq: p.Seq, Digest: pbft.BatchDigest(ids)})
		alt.Body = body
	case wire.KindPrepare, wire.KindCommit:
		var d wire.Digest
		d[0] = byte(rng.IntN(256))
		if rng.IntN(2) == 0 {
			d = pbft.NullDigest
		}
		if m.Env.Kind == wire.KindPrepare {
			p, err := pbft.DecodePrepare(m.Env.Payload)
			if err != nil {
				return []pbft.Message{m}
			}
			alt = b.seal(wire.KindPrepare, &pbft.Prepare{View: p.View, Seq: p.Seq, Digest: d})
		} else {
			p, err := pbft.DecodeCommit(m.Env.Payload)
			if err != nil {
				return []pbft.Message{m}
			}
			alt = b.seal(wire.KindCommit, &pbft.Commit{View: p.View, Seq: p.Seq, Digest: d})
		}
	case wire.KindCheckpoint:
		p, err := pbft.DecodeCheckpoint(m.Env.Payload)
		if err != nil {
			return []pbft.Message{m}
		}
		p.Digest[0] ^= 0xff
		alt = b.seal(wire.KindCheckpoint, p)
	default:
		return []pbft.Message{m}
	}
	var out []pbft.Message
	for _, j := range b.others() {
		if rng.IntN(2) == 0 {
			out = append(out, pbft.Message{To: j, Env: alt})
		} else {
			out = append(out, pbft.Message{To: j, Env: m.Env})
		}
	}
	return out
}

// forge sends the real message, and now and then a forged one: another replica's name on its own signature,
// a VIEW-CHANGE with fabricated prepared certificates, a fetch reply with an altered certified batch.
func (b *byzantine) forge(m pbft.Message) []pbft.Message {
	rng := b.c.rng
	out := []pbft.Message{m}
	switch m.Env.Kind {
	case wire.KindPrePrepare:
		p, err := pbft.DecodePrePrepare(m.Env.Payload)
		if err != nil || len(m.Env.Body) == 0 {
			break
		}
		if _, ok := b.ppInView[p.View]; !ok && rng.IntN(3) != 0 {
			b.stallView, b.stallAfter = p.View, 1+rng.IntN(4)
		}
		if p.View == b.stallView && b.ppInView[p.View] >= b.stallAfter {
			return nil // stall: the backups will time out
		}
		b.ppInView[p.View]++
		b.lastPP[p.View] = max(b.lastPP[p.View], p.Seq)
	case wire.KindViewChange:
		if vc, err := pbft.DecodeViewChange(m.Env.Payload); err == nil {
			if _, led := b.lastPP[vc.View-1]; led || rng.IntN(2) == 0 {
				out = []pbft.Message{{To: m.To, Env: b.seal(wire.KindViewChange, b.fakeViewChange(vc))}}
			}
		}
	case wire.KindFetchReply:
		if e := b.tamperFetchReply(m); e != nil { // tamper.go
			out = []pbft.Message{{To: m.To, Env: e}}
		}
	}
	if rng.IntN(8) == 0 {
		// Claim to be someone else: the signature is ours, so verification fails.
		e := *m.Env
		victim := b.others()[rng.IntN(len(b.others()))]
		e.Author = b.c.pubs[victim]
		out = append(out, pbft.Message{To: m.To, Env: &e})
	}
	return out
}

// fakeViewChange adds a fabricated prepared certificate: a pre-prepare for a made-up batch at a sequence
// number above the stable checkpoint, signed by this replica as if it were primary of the highest view below
// the new one that it leads, with forged prepares (or too few). A correct replica must reject the whole
// VIEW-CHANGE; one that accepted it would replace a committed batch.
func (b *byzantine) fakeViewChange(vc *pbft.ViewChange) *pbft.ViewChange {
	rng := b.c.rng
	n := uint64(b.c.opt.N)
	var v uint64
	found := false
	for w := vc.View; w > 0; w-- {
		if (w-1)%n == uint64(b.n.idx) {
			v, found = w-1, true
			break
		}
	}
	if !found {
		return vc
	}
	// Best target: a sequence number that prepared in a view older than v, so the fake wins outright;
	// otherwise the last one this replica assigned in v (a tie on the view, decided by the digests).
	seq := vc.StableSeq + 1 + uint64(rng.IntN(int(b.c.opt.Window)))
	if last, ok := b.lastPP[v]; ok && last > vc.StableSeq && last <= vc.StableSeq+b.c.opt.Window {
		seq = last
	}
	var older []uint64
	for _, pc := range vc.Prepared {
		if p, err := pbft.DecodePrePrepare(pc.PrePrepare.Payload); err == nil && p.View < v {
			older = append(older, p.Seq)
		}
	}
	if len(older) > 0 {
		seq = older[rng.IntN(len(older))]
	}
	// The smallest digest there is wins every tie on the view.
	fake := wire.Digest{31: 1}
	pp := b.seal(wire.KindPrePrepare, &pbft.PrePrepare{View: v, Seq: seq, Digest: fake})
	var prepares []*wire.Envelope
	q := pbft.QuorumsOf(b.c.opt.N)
	for _, j := range b.others() {
		if len(prepares) >= q.Prepare() || rng.IntN(4) == 0 {
			continue
		}
		e := b.seal(wire.KindPrepare, &pbft.Prepare{View: v, Seq: seq, Digest: fake})
		e.Author = b.c.pubs[j] // forged: signed with our key
		prepares = append(prepares, e)
	}
	cert := pbft.PreparedCert{PrePrepare: pp, Prepares: prepares}
	out := *vc
	out.Prepared = nil
	placed := false
	for _, pc := range vc.Prepared {
		p, err := pbft.DecodePrePrepare(pc.PrePrepare.Payload)
		if err != nil {
			continue
		}
		if p.Seq == seq {
			out.Prepared = append(out.Prepared, cert)
			placed = true
			continue
		}
		if p.Seq > seq && !placed {
			out.Prepared = append(out.Prepared, cert)
			placed = true
		}
		out.Prepared = append(out.Prepared, pc)
	}
	if !placed {
		out.Prepared = append(out.Prepared, cert)
	}
	return &out
}

// onTick lets a stale replica replay old messages and flood far-away ones.
func (b *byzantine) onTick() {
	if b.kind != FaultStale || !b.n.up {
		return
	}
	rng := b.c.rng
	if len(b.seen) > 0 && rng.IntN(2) == 0 {
		e := b.seen[rng.IntN(len(b.seen))]
		b.c.net.sendReplica(b.n, pbft.Message{To: b.others()[rng.IntN(len(b.others()))], Env: e})
	}
	if rng.IntN(3) == 0 {
		st := b.n.rep.Status()
		var e *wire.Envelope
		switch rng.IntN(4) {
		case 0: // out of the window
			e = b.seal(wire.KindPrepare, &pbft.Prepare{View: st.View, Seq: st.High + 1 + uint64(rng.IntN(1000)), Digest: pbft.NullDigest})
		case 1: // far-future view
			e = b.seal(wire.KindCommit, &pbft.Commit{View: st.View + 1 + uint64(rng.IntN(1000)), Seq: st.Low + 1, Digest: pbft.NullDigest})
		case 2: // pre-prepare for a view it does not lead, or out of the window
			e = b.seal(wire.KindPrePrepare, &pbft.PrePrepare{View: st.View, Seq: st.High + 1 + uint64(rng.IntN(10)), Digest: pbft.NullDigest})
		default: // a checkpoint far ahead
			e = b.seal(wire.KindCheckpoint, &pbft.Checkpoint{Seq: (st.High/b.c.opt.CheckpointInterval + 1 + uint64(rng.IntN(50))) * b.c.opt.CheckpointInterval})
		}
		b.c.net.sendReplica(b.n, pbft.Message{To: pbft.Broadcast, Env: e})
	}
}

// sparseNewView rebuilds a NEW-VIEW from the quorum of VIEW-CHANGEs with the fewest prepared certificates,
// recomputing the pre-prepares by the protocol's rule so that backups accept it.
func (b *byzantine) sparseNewView(e *wire.Envelope) *wire.Envelope {
	nv, err := pbft.DecodeNewView(e.Payload)
	if err != nil {
		return nil
	}
	pool := map[string]*wire.Envelope{}
	for _, v := range nv.ViewChanges {
		pool[string(v.Author)] = v
	}
	for k, v := range b.vcs[nv.View] {
		pool[k] = v
	}
	type cand struct {
		env *wire.Envelope
		vc  *pbft.ViewChange
	}
	var cands []cand
	for _, env := range pool {
		if vc, err := pbft.DecodeViewChange(env.Payload); err == nil && vc.View == nv.View {
			cands = append(cands, cand{env, vc})
		}
	}
	q := pbft.Quorum(b.c.opt.N)
	if len(cands) < q {
		return nil
	}
	slices.SortFunc(cands, func(x, y cand) int {
		if d := len(x.vc.Prepared) - len(y.vc.Prepared); d != 0 {
			return d
		}
		return bytes.Compare(x.env.Author, y.env.Author)
	})
	cands = cands[:q]
	var stableSeq uint64
	best := map[uint64]struct {
		view uint64
		d    wire.Digest
	}{}
	for _, c := range cands {
		stableSeq = max(stableSeq, c.vc.StableSeq)
	}
	maxS := stableSeq
	for _, c := range cands {
		for _, pc := range c.vc.Prepared {
			p, err := pbft.DecodePrePrepare(pc.PrePrepare.Payload)
			if err != nil || p.Seq <= stableSeq {
				continue
			}
			o, ok := best[p.Seq]
			if !ok || p.View > o.view || (p.View == o.view && bytes.Compare(p.Digest[:], o.d[:]) < 0) {
				best[p.Seq] = struct {
					view uint64
					d    wire.Digest
				}{p.View, p.Digest}
			}
			maxS = max(maxS, p.Seq)
		}
	}
	out := &pbft.NewView{View: nv.View}
	for _, c := range cands {
		out.ViewChanges = append(out.ViewChanges, c.env)
	}
	for seq := stableSeq + 1; seq <= maxS; seq++ {
		d := pbft.NullDigest
		if o, ok := best[seq]; ok {
			d = o.d
		}
		out.PrePrepares = append(out.PrePrepares, b.seal(wire.KindPrePrepare, &pbft.PrePrepare{View: nv.View, Seq: seq, Digest: d}))
	}
	return b.seal(wire.KindNewView, out)
}

// badReply returns the reply a forging or equivocating replica sends in place of env: same request, view
// and sequence number, and a wrong result of the same size (the last byte, the counter's low byte, changed
// the same way at every Byzantine replica, so that up to f of them back each other), with a valid signature
// and Merkle proof of its own over a one-leaf tree. Clients must not accept it: f+1 matching replies include
// a correct one. nil if env does not open.
func (b *byzantine) badReply(env *wire.Envelope) *wire.Envelope {
	r, err := pbft.OpenReply(env)
	if err != nil || len(r.Result) == 0 {
		return nil
	}
	bad := bytes.Clone(r.Result)
	bad[len(bad)-1]++
	hdr := pbft.ReplyHeader{View: r.View, Seq: r.Seq, Replica: r.Replica, Count: 1, Root: pbft.ReplyLeafHash(r.Client, r.Timestamp, bad)}
	e := b.seal(wire.KindReply, &hdr)
	body, err := wire.Marshal(&pbft.ReplyProof{Client: r.Client, Timestamp: r.Timestamp, Result: bad})
	if err != nil {
		return nil
	}
	e.Body = body
	return e
}
