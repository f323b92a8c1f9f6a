package pbft

import "maps"

// Reason labels why a message or call was not used.
type Reason string

// Reasons. Those marked invalid are provably bad (the sender is faulty or the message forged); the others
// are explained by timing and are only ignored.
const (
	ReasonMalformed      Reason = "malformed"         // invalid: does not decode or has a bad shape
	ReasonWrongChain     Reason = "wrong-chain"       // invalid
	ReasonNotReplica     Reason = "not-replica"       // invalid: replica kind from a non-member
	ReasonUnexpectedKind Reason = "unexpected-kind"   // invalid
	ReasonBadSignature   Reason = "bad-signature"     // invalid: an embedded signature does not verify
	ReasonNotPrimary     Reason = "not-primary"       // invalid: pre-prepare or new-view from a non-primary
	ReasonPrimaryPrepare Reason = "primary-prepare"   // invalid: a prepare from the primary
	ReasonEquivocation   Reason = "equivocation"      // invalid: a second, different vote for the same slot
	ReasonBadBatch       Reason = "bad-batch"         // invalid: digest mismatch, bad request, over the limits
	ReasonBadCertificate Reason = "bad-certificate"   // invalid: a certificate that does not prove its claim
	ReasonBadNewView     Reason = "bad-new-view"      // invalid: a NEW-VIEW that differs from the recomputed one
	ReasonBadCheckpoint  Reason = "bad-checkpoint"    // invalid: a checkpoint off the checkpoint interval
	ReasonOwnMessage     Reason = "own-message"       // ignored: our own message came back
	ReasonStaleView      Reason = "stale-view"        // ignored: for a view we left
	ReasonOutOfWindow    Reason = "out-of-window"     // ignored: sequence number outside (h, H]
	ReasonDuplicate      Reason = "duplicate"         // ignored
	ReasonFutureFull     Reason = "future-full"       // ignored: buffer for later views full
	ReasonStaleRequest   Reason = "stale-request"     // ignored: older than the client's last executed
	ReasonPendingFull    Reason = "pending-full"      // ignored: too many pending requests
	ReasonRateLimited    Reason = "rate-limited"      // ignored: fetch served recently
	ReasonAlreadyDone    Reason = "already-committed" // ignored: the slot already committed
	ReasonSignFailed     Reason = "sign-failed"       // the own signer failed
	// not signed: a vote that Config.SignedMark covers (the replica forgot what it signed there)
	ReasonBelowSignedMark Reason = "below-signed-mark"
)

var invalidReasons = map[Reason]bool{
	ReasonMalformed: true, ReasonWrongChain: true, ReasonNotReplica: true, ReasonUnexpectedKind: true,
	ReasonBadSignature: true, ReasonNotPrimary: true, ReasonPrimaryPrepare: true, ReasonEquivocation: true,
	ReasonBadBatch: true, ReasonBadCertificate: true, ReasonBadNewView: true, ReasonBadCheckpoint: true,
}

// Invalid reports whether the reason means the message was provably invalid.
func (r Reason) Invalid() bool { return invalidReasons[r] }

// Stats are counters and gauges a driver can export. Counters only grow.
type Stats struct {
	// Rejected counts messages and calls not used, by reason.
	Rejected map[Reason]uint64
	// Verified counts signatures the core checked (embedded envelopes and proposed requests).
	Verified uint64
	// Buffered counts messages kept for a view not entered yet.
	Buffered uint64

	ViewChanges        uint64 // VIEW-CHANGEs this replica sent
	NewViews           uint64 // views entered through a NEW-VIEW
	StableCheckpoints  uint64
	StateTransfers     uint64 // state transfers asked for
	SnapshotsInstalled uint64
	CommittedBatches   uint64
	CertCommits        uint64 // batches committed through a certificate (fetch reply or ApplyCommitted)
	ExecutedRequests   uint64
	Fetches            uint64 // KindFetch messages sent
	StatusesSent       uint64 // KindStatus multicasts
	StatusFetches      uint64 // fetches a peer's Status triggered (this replica learned it was behind)
	Retransmits        uint64
	Divergences        uint64 // own checkpoint contradicted a certified one
	// SafetyAlarms counts proofs that more than f replicas are faulty: a NEW-VIEW or a commit certificate
	// that contradicts a batch this replica committed. It stays zero while at most f replicas are faulty.
	SafetyAlarms uint64

	// Gauges.
	Slots           int
	Tail            int // committed batches kept below the stable checkpoint to serve lagging peers
	Pending         int
	Future          int
	CheckpointVotes int
	VerifiedCache   int
}

func newStats() Stats { return Stats{Rejected: make(map[Reason]uint64)} }

func (s *Stats) count(r Reason) { s.Rejected[r]++ }

// Stats returns a copy of the replica's counters and gauges.
func (r *Replica) Stats() Stats {
	s := r.stats
	s.Rejected = maps.Clone(r.stats.Rejected)
	s.Slots = len(r.slots)
	s.Tail = len(r.tail)
	s.Pending = r.pending.len()
	for _, f := range r.future {
		s.Future += len(f)
	}
	for _, v := range r.ckptVotes {
		s.CheckpointVotes += len(v)
	}
	s.VerifiedCache = r.vcache.Len()
	return s
}
