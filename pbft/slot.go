package pbft

import "github.com/p2pbft/p2pbft/wire"

// request is a client request the replica has checked: signature (or certified batch), chain, kind, payload.
type request struct {
	env    *wire.Envelope
	id     wire.Digest
	client string
	ts     uint64
	op     []byte
	size   int // encoded size, for batch limits
}

// batch is a batch body whose digest has been checked.
type batch struct {
	digest wire.Digest
	body   []byte
	reqs   []*request
	// verified: the driver verified the requests' signatures (StepPrePrepare).
	verified bool
}

var nullBatch = &batch{digest: NullDigest}

// vote is one replica's prepare or commit in a slot's current view.
type vote struct {
	env    *wire.Envelope
	digest wire.Digest
}

// preparedCert is the prepared certificate of a slot: the pre-prepare (WithoutBody) and quorum-1 prepares.
type preparedCert struct {
	view     uint64
	digest   wire.Digest
	pp       *wire.Envelope
	prepares []*wire.Envelope
}

// commitCert is a commit certificate: a quorum of commits for one view and digest.
type commitCert struct {
	view    uint64
	digest  wire.Digest
	commits []*wire.Envelope
}

// maxSlotBatches bounds the batch bodies kept for one sequence number (one per digest, from pre-prepares of
// successive views and fetches).
const maxSlotBatches = 4

// slot is everything a replica knows about one sequence number. Votes are kept for the slot's current view
// only, one per replica (the first one wins; a second, different one from the same replica is counted as
// equivocation); the prepared certificate from the highest view survives view changes.
type slot struct {
	seq     uint64
	batches []*batch

	view        uint64
	pp          *wire.Envelope // accepted pre-prepare of view (WithoutBody), nil if none
	digest      wire.Digest
	prepares    []vote
	commits     []vote
	sentPrepare bool
	sentCommit  bool
	prepared    bool

	pcert     *preparedCert
	committed bool
	cert      *commitCert
	delivered bool
}

func newSlot(seq uint64, n int, view uint64) *slot {
	return &slot{seq: seq, view: view, prepares: make([]vote, n), commits: make([]vote, n)}
}

// advance moves the slot to a later view, dropping the votes of the old one. The prepared certificate and
// committed state survive.
func (s *slot) advance(view uint64) {
	if view <= s.view {
		return
	}
	s.view = view
	s.pp = nil
	s.digest = wire.Digest{}
	clear(s.prepares)
	clear(s.commits)
	s.sentPrepare, s.sentCommit, s.prepared = false, false, false
}

func (s *slot) batch(d wire.Digest) *batch {
	if d == NullDigest {
		return nullBatch
	}
	for _, b := range s.batches {
		if b.digest == d {
			return b
		}
	}
	return nil
}

// addBatch keeps a checked batch body, evicting the oldest one that nothing refers to when full.
func (s *slot) addBatch(b *batch) {
	if b.digest == NullDigest || s.batch(b.digest) != nil {
		return
	}
	if len(s.batches) >= maxSlotBatches {
		for i, o := range s.batches {
			if o.digest == s.digest || (s.pcert != nil && o.digest == s.pcert.digest) || (s.cert != nil && o.digest == s.cert.digest) {
				continue
			}
			s.batches = append(s.batches[:i], s.batches[i+1:]...)
			break
		}
		if len(s.batches) >= maxSlotBatches {
			return
		}
	}
	s.batches = append(s.batches, b)
}

// count returns how many votes match digest d.
func count(vs []vote, d wire.Digest) int {
	n := 0
	for i := range vs {
		if vs[i].env != nil && vs[i].digest == d {
			n++
		}
	}
	return n
}

func matching(vs []vote, d wire.Digest, limit int) []*wire.Envelope {
	out := make([]*wire.Envelope, 0, limit)
	for i := range vs {
		if vs[i].env != nil && vs[i].digest == d && len(out) < limit {
			out = append(out, vs[i].env)
		}
	}
	return out
}

// The prepared and committed predicates (docs/design/pbft.md rows 3 and 4), stated once: the normal case
// (checkPrepared, checkCommitted) and the restore from the log (restoreEval) both decide with them.

// reachesPrepared reports whether s, not prepared yet, is prepared now: it has the pre-prepare and
// q.Prepare() matching prepares from distinct backups (the primary sends none).
func (s *slot) reachesPrepared(q Quorums) bool {
	return !s.prepared && s.pp != nil && count(s.prepares, s.digest) >= q.Prepare()
}

// markPrepared marks s prepared and keeps its prepared certificate.
func (s *slot) markPrepared(q Quorums) {
	s.prepared = true
	s.pcert = &preparedCert{view: s.view, digest: s.digest, pp: s.pp, prepares: matching(s.prepares, s.digest, q.Prepare())}
}

// reachesCommitted reports whether s, not committed yet, is committed-local now: prepared, with a quorum
// (q.Commit()) of matching commits, own included.
func (s *slot) reachesCommitted(q Quorums) bool {
	return !s.committed && s.prepared && count(s.commits, s.digest) >= q.Commit()
}

// markCommitted marks s committed and keeps its commit certificate.
func (s *slot) markCommitted(q Quorums) {
	s.committed = true
	s.cert = &commitCert{view: s.view, digest: s.digest, commits: matching(s.commits, s.digest, q.Commit())}
}

// markCertified marks s committed on the strength of a checked commit certificate for (view, digest)
// (fetched, or replayed from the log), without its own votes.
func (s *slot) markCertified(view uint64, digest wire.Digest, commits []*wire.Envelope) {
	s.committed = true
	s.cert = &commitCert{view: view, digest: digest, commits: commits}
}

// committedBatch returns the batch that committed, if its body is known.
func (s *slot) committedBatch() *batch {
	if !s.committed {
		return nil
	}
	return s.batch(s.cert.digest)
}
