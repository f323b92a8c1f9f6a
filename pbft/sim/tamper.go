package sim

import (
	"bytes"
	"errors"
	"maps"
	"math/rand/v2"
	"slices"

	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// Tampered catch-up. A lagging replica takes from its peers what it cannot check by watching the votes: the
// certified batches of fetch replies (a commit certificate and the batch), the blocks of a state transfer
// (the same, handed in with ApplyCommitted) and snapshots (application digest and client table, checked
// against a certified checkpoint). Forging and equivocating replicas serve them altered: content of the
// right size that a careless replica would take, under valid signatures wherever their own key can sign:
//
//   - a certified batch whose requests are reordered or replaced by another client's request of the same
//     size, under the real commit certificate (caught by the batch digest), or under a certificate of
//     COMMITs for the altered batch that they sign with their own key and put the certificate's names on
//     (caught by the certificate's signatures);
//   - a snapshot whose application digest has a byte changed, whose client table has one row's result or
//     timestamp changed, or which is the state of another checkpoint (caught by the checkpoint digest).
//
// The application state itself is served intact: the simulator's application has no digest of its state
// to check a copy against (a real application must check it against the application digest).
//
// A replica transferring state asks a tampering peer first half of the time (fetches go to the peers in
// turn, the engine's choice), so that the CI budget produces many such answers; AdversaryCounts reports how
// many were sent and how many the engine rejected.

// AdversaryCounts counts what the adversaries of slow.go and this file did in a run (or a campaign).
type AdversaryCounts struct {
	// SlowSeeds: runs with the slow fault; SlowProgressed those of them in which a request issued after
	// the heal executed, and SlowProgressTicks the sum and SlowProgressMax the maximum of how long after the
	// heal it did.
	SlowSeeds         int64
	SlowProgressed    int64
	SlowProgressTicks int64
	SlowProgressMax   int64
	// Tampered answers sent, and how many of them the engine rejected: fetch replies (those delivered; a
	// reply lost in the network is not counted, nor one about slots the replica has executed since, which it
	// ignores), blocks handed in with ApplyCommitted, and snapshots given to CheckSnapshot.
	FetchReplies, FetchRepliesRejected int64
	Blocks, BlocksRejected             int64
	Snapshots, SnapshotsRejected       int64
}

func (a *AdversaryCounts) add(b AdversaryCounts) {
	a.SlowSeeds += b.SlowSeeds
	a.SlowProgressed += b.SlowProgressed
	a.SlowProgressTicks += b.SlowProgressTicks
	a.SlowProgressMax = max(a.SlowProgressMax, b.SlowProgressMax)
	a.FetchReplies += b.FetchReplies
	a.FetchRepliesRejected += b.FetchRepliesRejected
	a.Blocks += b.Blocks
	a.BlocksRejected += b.BlocksRejected
	a.Snapshots += b.Snapshots
	a.SnapshotsRejected += b.SnapshotsRejected
}

// adversaryCounts returns the counts of the run so far.
func (c *Cluster) adversaryCounts() AdversaryCounts {
	a := c.tamper.counts
	if c.slow.on {
		a.SlowSeeds = 1
		if c.slow.progress >= 0 {
			a.SlowProgressed = 1
			a.SlowProgressTicks = c.slow.progress / tickEvery
			a.SlowProgressMax = a.SlowProgressTicks
		}
	}
	return a
}

// tampering is the state of the tampering adversary in one run.
type tampering struct {
	rng    *rand.Rand // a stream of its own, so that runs without tampering replicas draw as they did
	sent   map[wire.Digest]bool
	counts AdversaryCounts
}

func newTampering(c *Cluster) tampering {
	return tampering{rng: rand.New(rand.NewPCG(uint64(c.opt.Seed), 0x7a3e)), sent: map[wire.Digest]bool{}}
}

// tampers says whether a replica serves altered catch-up data.
func (n *node) tampers() bool {
	return n.byz != nil && (n.byz.kind == FaultForge || n.byz.kind == FaultEquivocate)
}

// tamperPeer returns, half of the time, a running tampering replica other than n for n to catch up from
// (nil otherwise, and always in runs without one).
func (c *Cluster) tamperPeer(n *node) *node {
	var cands []*node
	for _, p := range c.nodes {
		if p.idx != n.idx && p.up && p.tampers() {
			cands = append(cands, p)
		}
	}
	if len(cands) == 0 || c.tamper.rng.IntN(2) == 0 {
		return nil
	}
	return cands[c.tamper.rng.IntN(len(cands))]
}

// onStep counts a tampered fetch reply the engine stepped, and whether it rejected it.
func (c *Cluster) onStep(e *wire.Envelope, err error) {
	if e.Kind != wire.KindFetchReply || len(c.tamper.sent) == 0 || !c.tamper.sent[e.ID()] {
		return
	}
	c.tamper.counts.FetchReplies++
	if err != nil {
		c.tamper.counts.FetchRepliesRejected++
	}
}

// tamperFetchReply returns the fetch reply to send in place of m: the first certified batch in it altered
// (nil if it holds none that can be).
func (b *byzantine) tamperFetchReply(m pbft.Message) *wire.Envelope {
	fr, err := pbft.DecodeFetchReply(m.Env.Payload)
	if err != nil {
		return nil
	}
	for i := range fr.Slots {
		fs := &fr.Slots[i]
		if len(fs.Cert) == 0 {
			continue
		}
		reqs, err := pbft.DecodeBatch(fs.Batch)
		if err != nil {
			return nil
		}
		alt, cert := b.tamperBlock(fs.Seq, reqs, fs.Cert)
		if alt == nil {
			return nil
		}
		body, err := pbft.EncodeBatch(alt)
		if err != nil {
			return nil
		}
		fs.Batch, fs.Cert = body, cert
		e := b.seal(wire.KindFetchReply, fr)
		b.c.tamper.sent[e.ID()] = true
		return e
	}
	return nil
}

// tamperBlock alters a certified batch: other content of about the same size, under the real certificate
// half of the time and otherwise under COMMITs for the altered batch, signed with this replica's key and
// carrying the real certificate's names (valid only where the name is its own). nil if it finds nothing to
// put in.
func (b *byzantine) tamperBlock(seq uint64, reqs, cert []*wire.Envelope) ([]*wire.Envelope, []*wire.Envelope) {
	rng := b.c.tamper.rng
	alt := b.alterBatch(seq, reqs)
	if alt == nil {
		return nil, nil
	}
	if rng.IntN(2) == 0 {
		return alt, cert
	}
	c0, err := pbft.DecodeCommit(cert[0].Payload)
	if err != nil {
		return nil, nil
	}
	ids := make([]wire.Digest, len(alt))
	for i, q := range alt {
		ids[i] = q.ID()
	}
	d := pbft.BatchDigest(ids)
	forged := make([]*wire.Envelope, len(cert))
	for i, e := range cert {
		f := b.seal(wire.KindCommit, &pbft.Commit{View: c0.View, Seq: seq, Digest: d})
		f.Author = e.Author
		forged[i] = f
	}
	return alt, forged
}

// alterBatch returns other requests for a batch: two of its requests swapped, or one replaced by a request
// of the same encoded size from another batch this replica holds (so that the size gives nothing away), or
// a request put into a null batch. nil if it has nothing to use.
func (b *byzantine) alterBatch(seq uint64, reqs []*wire.Envelope) []*wire.Envelope {
	rng := b.c.tamper.rng
	if len(reqs) >= 2 {
		alt := append([]*wire.Envelope(nil), reqs...)
		i := rng.IntN(len(alt))
		j := (i + 1 + rng.IntN(len(alt)-1)) % len(alt)
		alt[i], alt[j] = alt[j], alt[i]
		return alt
	}
	// Another request, from the blocks this replica holds (in a fixed order, for determinism).
	size := -1
	if len(reqs) == 1 {
		if data, err := reqs[0].Marshal(); err == nil {
			size = len(data)
		}
	}
	var other, sameSize []*wire.Envelope
	for s := seq - min(seq, 64); s <= seq+64; s++ {
		blk, ok := b.n.blocks[s]
		if !ok || s == seq {
			continue
		}
		for _, q := range blk.Batch {
			if len(reqs) == 1 && bytes.Equal(q.Author, reqs[0].Author) && bytes.Equal(q.Payload, reqs[0].Payload) {
				continue
			}
			other = append(other, q)
			if data, err := q.Marshal(); err == nil && len(data) == size {
				sameSize = append(sameSize, q)
			}
		}
	}
	switch {
	case len(sameSize) > 0:
		return []*wire.Envelope{sameSize[rng.IntN(len(sameSize))]}
	case len(other) > 0:
		return []*wire.Envelope{other[rng.IntN(len(other))]}
	}
	return nil
}

// tamperedBlock returns the block peer p serves for seq, and whether p altered it.
func (p *node) tamperedBlock(seq uint64) (pbft.CommittedBatch, bool) {
	blk := p.blocks[seq]
	if !p.tampers() || len(blk.Cert) == 0 {
		return blk, false
	}
	alt, cert := p.byz.tamperBlock(seq, blk.Batch, blk.Cert)
	if alt == nil {
		return blk, false
	}
	blk.Batch, blk.Cert = alt, cert
	return blk, true
}

// tamperSnapshot returns the snapshot a tampering peer serves in place of (seq, appDigest, table): the
// application digest with one byte changed, the client table with one row's result or timestamp changed
// (the same encoded size), or the state of another checkpoint it holds.
func (p *node) tamperSnapshot(seq uint64, appDigest wire.Digest, table []byte) (wire.Digest, []byte) {
	rng := p.c.tamper.rng
	switch rng.IntN(3) {
	case 1:
		if recs, err := pbft.DecodeClientTable(table); err == nil && len(recs) > 0 {
			r := &recs[rng.IntN(len(recs))]
			if len(r.Result) > 0 && rng.IntN(2) == 0 {
				r.Result = bytes.Clone(r.Result)
				r.Result[len(r.Result)-1] ^= 1
			} else {
				r.Timestamp ^= 1 // stays > 0 and of the same encoded size for the simulator's timestamps
				if r.Timestamp == 0 {
					r.Timestamp = 2
				}
			}
			if t, err := wire.Marshal(recs); err == nil {
				return appDigest, t
			}
		}
	case 2:
		seqs := slices.Sorted(maps.Keys(p.coreSnaps))
		for _, s := range seqs {
			if cs := p.coreSnaps[s]; s != seq && (cs.AppDigest != appDigest || !bytes.Equal(cs.ClientTable, table)) {
				return cs.AppDigest, cs.ClientTable
			}
		}
	}
	appDigest[rng.IntN(len(appDigest))] ^= byte(1 + rng.IntN(255))
	return appDigest, table
}

// countSnapshot counts a tampered snapshot given to CheckSnapshot, which returned err. One refused for
// its sequence number alone (stale, or the replica is no longer syncing) does not count: its content was
// not looked at.
func (c *Cluster) countSnapshot(err error) {
	if errors.Is(err, pbft.ErrStale) || errors.Is(err, pbft.ErrNotSyncing) {
		return
	}
	c.tamper.counts.Snapshots++
	if err != nil {
		c.tamper.counts.SnapshotsRejected++
	}
}

// countBlock counts a tampered block handed in with ApplyCommitted, which returned err (one refused as
// stale does not count).
func (c *Cluster) countBlock(err error) {
	if errors.Is(err, pbft.ErrStale) {
		return
	}
	c.tamper.counts.Blocks++
	if err != nil {
		c.tamper.counts.BlocksRejected++
	}
}

// checkCertifiedEntry checks that a batch a correct replica logs with a commit certificate (one it committed
// on the strength of a fetched certificate, or a block it was handed) is the batch the certificate commits.
// A replica that took a tampered batch might not deliver it at once (it keeps batches by digest), but its log
// would hold it, for a restart to find or to serve to others.
func (o *observer) checkCertifiedEntry(n *node, e *pbft.Entry) {
	c, err := pbft.DecodeCommit(e.Cert[0].Payload)
	if err != nil {
		o.violation("%s logged a certified batch at %d whose certificate does not decode: %v", n.name, e.Seq, err)
		return
	}
	reqs, err := pbft.DecodeBatch(e.Batch)
	if err != nil {
		o.violation("%s logged a certified batch at %d that does not decode: %v", n.name, e.Seq, err)
		return
	}
	ids := make([]wire.Digest, len(reqs))
	for i, q := range reqs {
		ids[i] = q.ID()
	}
	if d := pbft.BatchDigest(ids); d != c.Digest || c.Seq != e.Seq {
		o.violation("agreement: %s logged at %d a batch %s under a commit certificate for %d, %s", n.name, e.Seq, d, c.Seq, c.Digest)
	}
}
