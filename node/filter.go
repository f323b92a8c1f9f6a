package node

import (
	"github.com/p2pbft/p2pbft/p2p"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// filterView is the part of the replica's state the p2p filter consults, published by the loop.
type filterView struct {
	view   uint64
	active bool
	stable uint64
}

// filter is the p2p host's cheap check before a signature is verified (p2p.Filter): it drops what the
// engine would drop anyway because of where the replica is, so stale traffic costs no cryptography. It
// decodes only the small normal-case and checkpoint payloads, and reads a view of the replica's state that
// may lag the loop's by a little; a lagging view only lets more through, never less, since views and
// checkpoints only grow.
//
//   - pre-prepares, prepares and commits for a view below the replica's, or for a sequence number at or
//     below its stable checkpoint: Ignore (the engine has discarded those slots);
//   - checkpoints at or below the stable checkpoint: Ignore;
//   - a replica kind whose payload does not decode: Reject (invalid whoever sends it).
//
// Everything else passes: view changes, new views and fetches carry state the engine must judge itself.
func (n *Node) filter(e *wire.Envelope, author int) p2p.Verdict {
	if author < 0 {
		return p2p.Pass
	}
	fv := n.filterV.Load()
	if fv == nil {
		return p2p.Pass
	}
	var view, seq uint64
	switch e.Kind {
	case wire.KindPrePrepare:
		p, err := pbft.DecodePrePrepare(e.Payload)
		if err != nil {
			return p2p.Reject
		}
		view, seq = p.View, p.Seq
	case wire.KindPrepare:
		p, err := pbft.DecodePrepare(e.Payload)
		if err != nil {
			return p2p.Reject
		}
		view, seq = p.View, p.Seq
	case wire.KindCommit:
		p, err := pbft.DecodeCommit(e.Payload)
		if err != nil {
			return p2p.Reject
		}
		view, seq = p.View, p.Seq
	case wire.KindCheckpoint:
		c, err := pbft.DecodeCheckpoint(e.Payload)
		if err != nil {
			return p2p.Reject
		}
		if c.Seq <= fv.stable {
			return p2p.Ignore
		}
		return p2p.Pass
	default:
		return p2p.Pass
	}
	if view < fv.view || seq <= fv.stable {
		return p2p.Ignore
	}
	return p2p.Pass
}
