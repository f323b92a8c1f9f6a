package sim

import (
	"strings"

	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// Non-equivocation, judged from what each correct replica signed rather than from what it stored: a store
// can lose or never hold what a replica sent (a wiped disk, a tail lost in a crash), and the other
// replicas only ever see what was sent. The observer keeps, per correct replica and across all its lives
// (never reset on a restart or a wipe), the digest of every PRE-PREPARE, PREPARE and COMMIT it sent per
// (view, sequence number) and the payload digest of every VIEW-CHANGE it sent per view. A second message of
// one kind for the same slot with a different digest is a violation. Retransmissions, the network's
// duplicates and a replica's own votes resent inside fetch replies carry the same payload, so they agree
// with the record; Byzantine replicas are not checked (they are allowed to equivocate), and their replays
// of others' messages never pass through here: only a correct replica's own outbound messages are recorded.

type signedKey struct {
	replica   int
	kind      wire.Kind
	view, seq uint64
}

// onSent records the messages a correct replica sends (and those its envelope embeds that it signed
// itself: the pre-prepares of its NEW-VIEW, its votes in a fetch reply or a prepared certificate), checks
// them against what it signed before, and raises its signed mark.
func (o *observer) onSent(n *node, e *wire.Envelope) {
	if !n.correct() || e == nil {
		return
	}
	o.signedEnvelope(n, e)
}

func (o *observer) signedEnvelope(n *node, e *wire.Envelope) {
	if string(e.Author) != string(o.c.pubs[n.idx]) {
		return // another's message it relays (a client request) or embeds (a certificate)
	}
	switch e.Kind {
	case wire.KindPrePrepare:
		if p, err := pbft.DecodePrePrepare(e.Payload); err == nil {
			o.signedVote(n, e.Kind, p.View, p.Seq, p.Digest)
		}
	case wire.KindPrepare:
		if p, err := pbft.DecodePrepare(e.Payload); err == nil {
			o.signedVote(n, e.Kind, p.View, p.Seq, p.Digest)
		}
	case wire.KindCommit:
		if p, err := pbft.DecodeCommit(e.Payload); err == nil {
			o.signedVote(n, e.Kind, p.View, p.Seq, p.Digest)
		}
	case wire.KindViewChange:
		vc, err := pbft.DecodeViewChange(e.Payload)
		if err != nil {
			return
		}
		o.signedVote(n, e.Kind, vc.View, 0, e.PayloadDigest())
		for _, pc := range vc.Prepared {
			if pc.PrePrepare != nil {
				o.signedEnvelope(n, pc.PrePrepare)
			}
			for _, p := range pc.Prepares {
				o.signedEnvelope(n, p)
			}
		}
	case wire.KindNewView:
		nv, err := pbft.DecodeNewView(e.Payload)
		if err != nil {
			return
		}
		// One NEW-VIEW per view is all a correct primary builds, but it may rebuild it after a restart
		// from other VIEW-CHANGEs; what must not differ are the pre-prepares in it, checked below.
		n.mark.View = max(n.mark.View, nv.View)
		for _, pp := range nv.PrePrepares {
			o.signedEnvelope(n, pp)
		}
	case wire.KindFetchReply:
		fr, err := pbft.DecodeFetchReply(e.Payload)
		if err != nil {
			return
		}
		for _, s := range fr.Slots {
			for _, m := range s.Messages {
				o.signedEnvelope(n, m)
			}
			for _, m := range s.Cert {
				o.signedEnvelope(n, m)
			}
		}
	}
}

// signedVote checks one signed vote against the record and raises the replica's signed mark (the highest
// view and sequence number it signed, as the node's signed-state file keeps it).
func (o *observer) signedVote(n *node, kind wire.Kind, view, seq uint64, d wire.Digest) {
	n.mark.View = max(n.mark.View, view)
	if kind != wire.KindViewChange {
		n.mark.Seq = max(n.mark.Seq, seq)
	}
	k := signedKey{replica: n.idx, kind: kind, view: view, seq: seq}
	prev, ok := o.signed[k]
	if !ok {
		o.signed[k] = d
		return
	}
	if prev == d {
		return
	}
	if kind == wire.KindViewChange {
		o.violation("non-equivocation: %s signed two VIEW-CHANGEs for view %d: %s… and %s…", n.name, view, prev, d)
		return
	}
	o.violation("non-equivocation: %s signed two %ss for view %d seq %d: %s… and %s…", n.name, strings.ToUpper(kind.String()), view, seq, prev, d)
}
