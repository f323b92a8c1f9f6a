package node

import (
	"bytes"
	"fmt"

	"github.com/p2pbft/p2pbft/node/signstate"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// The signed high-water mark (package signstate): the outbox raises it, after the round's store batch is
// durable and before the round's votes leave; at start the node compares it with what the store holds.
// A store that holds less forgot votes this replica sent, and the engine is told not to vote at or below
// the mark again (pbft.Config.SignedMark).

// openSignedState opens the mark's file and, if the store holds less than the mark, arms the engine's
// guard. persisted is what the store gave the engine; applied is the application's durable height.
func (n *Node) openSignedState(persisted *pbft.Persisted, applied uint64) error {
	path := n.cfg.Path(signstate.FileName)
	g := n.genesis.Digest()
	f, foreign, err := signstate.Open(path, g[:], n.cfg.Store.Sync)
	if err != nil {
		return fmt.Errorf("node: signed state: %w (it records the highest view and sequence number this replica "+
			"signed, so that it never contradicts itself after losing its store; restore the file from a backup "+
			"if you have one; delete it only if you are sure the store in %s is intact)", err, n.cfg.Path(n.cfg.Store.Dir))
	}
	n.signed = f
	n.drv.signed = f
	if foreign {
		n.log.Warn("the signed state file belonged to another chain (another genesis): starting it afresh", "file", path)
	}
	if head, was := n.store.Head().Height, f.Height(); head < was {
		n.log.Warn("the store is below the height it had when the replica last stopped cleanly: it lost writes "+
			"it had made durable (a cut-off or damaged log, a data folder restored from a backup, or wiped by "+
			"p2pbft reset); the replica catches up from the others", "store_height", head, "stopped_at", was,
			"data", n.cfg.Path(n.cfg.Store.Dir))
	}
	held := storeMark(persisted, applied, n.pub)
	mark := f.Mark()
	if held.Covers(mark) {
		return nil
	}
	n.signedMark = pbft.Mark{View: mark.View, Seq: mark.Seq}
	n.log.Warn("the store holds less than this replica signed: it lost writes it had made durable (a cut-off "+
		"log, a wiped or restored data folder); the replica will not vote at or below what it signed and "+
		"catches up from the others first", "signed", mark.String(), "store", held.String(), "file", path)
	return nil
}

// storeMark is the part of the signed mark that the persisted state accounts for: its view, and the
// highest of its stable checkpoint, the application's height and the sequence numbers of its own votes
// in the log.
func storeMark(p *pbft.Persisted, applied uint64, self []byte) signstate.Mark {
	m := signstate.Mark{Seq: applied}
	if p == nil {
		return m
	}
	m.View = p.HardState.View
	m.Seq = max(m.Seq, p.HardState.StableSeq)
	for i := range p.Entries {
		if e := p.Entries[i].Env; e != nil && bytes.Equal(e.Author, self) {
			m.Seq = max(m.Seq, p.Entries[i].Seq)
		}
	}
	return m
}

// voteMark returns the mark that covers this replica's own votes among msgs (zero if there are none).
func voteMark(msgs []pbft.Message, self []byte) signstate.Mark {
	var m signstate.Mark
	for _, msg := range msgs {
		e := msg.Env
		if !bytes.Equal(e.Author, self) {
			continue // another replica's message passed on (fetch replies, certificates)
		}
		m = m.Max(envelopeMark(e))
	}
	return m
}

// envelopeMark returns the view and sequence number of an own vote (zero for other kinds).
func envelopeMark(e *wire.Envelope) signstate.Mark {
	switch e.Kind {
	case wire.KindPrePrepare:
		if p, err := pbft.DecodePrePrepare(e.Payload); err == nil {
			return signstate.Mark{View: p.View, Seq: p.Seq}
		}
	case wire.KindPrepare:
		if p, err := pbft.DecodePrepare(e.Payload); err == nil {
			return signstate.Mark{View: p.View, Seq: p.Seq}
		}
	case wire.KindCommit:
		if p, err := pbft.DecodeCommit(e.Payload); err == nil {
			return signstate.Mark{View: p.View, Seq: p.Seq}
		}
	case wire.KindViewChange:
		if p, err := pbft.DecodeViewChange(e.Payload); err == nil {
			return signstate.Mark{View: p.View}
		}
	case wire.KindNewView:
		if p, err := pbft.DecodeNewView(e.Payload); err == nil {
			m := signstate.Mark{View: p.View}
			for _, pp := range p.PrePrepares {
				m = m.Max(envelopeMark(pp))
			}
			return m
		}
	}
	return signstate.Mark{}
}
