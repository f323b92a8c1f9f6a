package sim

import (
	"errors"

	"github.com/p2pbft/p2pbft/pbft"
)

// scheduleStateTransfer fetches the wanted state from a peer after a delay, by snapshot or by blocks.
func (n *node) scheduleStateTransfer() {
	if n.stBusy {
		return
	}
	n.stBusy = true
	rep := n.rep
	n.c.after(20+n.c.rng.Int64N(80), func() {
		if n.rep != rep || !n.up {
			return
		}
		n.stBusy = false
		n.doStateTransfer()
	})
}

func (n *node) doStateTransfer() {
	st := n.st
	if st == nil || n.rep.Status().Status != pbft.StatusSyncing {
		n.st = nil
		return
	}
	peers := n.c.nodes
	p := peers[n.c.rng.IntN(len(peers))]
	if t := n.c.tamperPeer(n); t != nil {
		p = t
	}
	if p.idx == n.idx || !p.up {
		n.scheduleStateTransfer()
		return
	}
	if n.c.rng.IntN(2) == 0 && n.applyBlocks(p, st) {
		n.process()
		if n.up && n.rep.Status().Status == pbft.StatusSyncing {
			n.scheduleStateTransfer()
		}
		return
	}
	seq := st.Seq
	if n.c.rng.IntN(3) == 0 {
		// A copy that took longer than a checkpoint interval: the snapshot of an older checkpoint the
		// peer still holds, above what this replica executed (the core installs any recent certified one,
		// then catches up to the stable checkpoint).
		seq = p.olderSnapshot(n.rep.Status().LastExecuted, st.Seq)
	}
	as, ok1 := p.app.snaps[seq]
	cs, ok2 := p.coreSnaps[seq]
	if !ok1 || !ok2 {
		// The peer moved on: take its newer checkpoint proof, so the next transfer aims at what it holds.
		if hs, err := pbft.DecodeHardState(p.store.hs); err == nil && hs.StableSeq > st.Seq && len(hs.StableProof) > 0 {
			if err := n.rep.LearnCheckpoint(hs.StableProof); err == nil {
				n.c.tracef("%s learned checkpoint %d from %s", n.name, hs.StableSeq, p.name)
				n.process()
			}
		}
		n.scheduleStateTransfer()
		return
	}
	appDigest, table := cs.AppDigest, cs.ClientTable
	if p.tampers() {
		appDigest, table = p.tamperSnapshot(seq, appDigest, table)
	}
	err := n.rep.CheckSnapshot(seq, appDigest, table)
	if p.tampers() {
		n.c.countSnapshot(err)
	}
	if err != nil {
		if p.correct() && !errors.Is(err, pbft.ErrStale) && !errors.Is(err, pbft.ErrNotSyncing) {
			n.c.obs.violation("%s: snapshot %d from correct %s rejected: %v", n.name, seq, p.name, err)
		}
		n.scheduleStateTransfer()
		return
	}
	n.app.restore(as)
	if err := n.rep.InstallSnapshot(seq, appDigest, table); err != nil {
		n.c.obs.violation("%s: install snapshot %d: %v", n.name, seq, err)
		return
	}
	n.epoch++ // blocks executed before, still waiting for their sync (asyncpersist), are below the snapshot
	if seq < st.Seq {
		n.c.obs.olderSnapshots++
	}
	n.c.tracef("%s installed snapshot %d (asked for %d) from %s", n.name, seq, st.Seq, p.name)
	n.c.obs.onInstalled(n, seq)
	n.st = nil
	n.process()
}

// olderSnapshot returns the oldest checkpoint in (above, below) whose state p holds (application and
// core), or below if there is none.
func (p *node) olderSnapshot(above, below uint64) uint64 {
	best := below
	for s := range p.app.snaps {
		if _, ok := p.coreSnaps[s]; ok && s > above && s < best {
			best = s
		}
	}
	return best
}

// applyBlocks catches up by committed blocks from peer p, if it has them all.
func (n *node) applyBlocks(p *node, st *pbft.StateTransfer) bool {
	from := n.app.applied + 1
	if st.Seq < from || st.Seq-from > 64 {
		return false
	}
	for seq := from; seq <= st.Seq; seq++ {
		if _, ok := p.blocks[seq]; !ok {
			return false
		}
	}
	for seq := from; seq <= st.Seq && n.up; seq++ {
		b, tampered := p.tamperedBlock(seq)
		err := n.rep.ApplyCommitted(seq, b.Batch, b.Cert)
		if tampered {
			n.c.countBlock(err)
		}
		if err != nil {
			if errors.Is(err, pbft.ErrStale) {
				continue // delivered meanwhile (the previous block let committed slots through)
			}
			if p.correct() {
				n.c.obs.violation("%s: block %d from correct %s rejected: %v", n.name, seq, p.name, err)
			}
			return true
		}
		n.process()
	}
	n.c.tracef("%s applied blocks %d..%d from %s", n.name, from, st.Seq, p.name)
	return true
}
