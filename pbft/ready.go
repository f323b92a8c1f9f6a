package pbft

import (
	"errors"
	"fmt"

	"github.com/p2pbft/p2pbft/wire"
)

// Ready is the output of the core, in the order the driver must handle it:
//
//  1. make HardState, Entries and Truncate durable (in one atomic write), before anything else;
//  2. send Messages;
//  3. send Replies;
//  4. execute Committed, in order, and report each with Executed;
//  5. start the state transfer StateTransfer asks for, if any;
//  6. show SoftState to observers.
//
// then call Advance. The driver may report Executed for a batch later (for example after making the
// application's state durable); the replies and checkpoint that follow from it come out in a later Ready.
//
// Asynchronous persistence. A driver may instead take step 1 off its critical path, as the node does
// (node/outbox.go). Call the Readys taken from one replica, in order, its rounds. The driver may then:
//
//   - apply a round's HardState, Entries and Truncate to its store at once, visible to later reads and
//     ordered after the earlier rounds' writes, without waiting for them to be durable;
//   - execute the round's Committed batches at once, writing each block and the application state after it
//     with the round's writes, and call Advance, and go on with the next rounds, while the disk syncs.
//
// and it must keep:
//
//   - no message of round k (Messages) leaves before the writes of every round up to and including k are
//     durable: rounds become durable in order (a round is never durable before an earlier one), and a
//     round's messages wait for its own sync and every earlier one;
//   - Executed is reported for a block only once the block (the round that executed it, with the
//     application state after it) is durable, and in delivery order; the replies and checkpoints that follow
//     come out in later Readys, so they too only speak of durable blocks;
//   - a crash loses the writes not yet durable as a suffix of whole rounds, in order: what Restart is given
//     (Persisted, and the applied index of the application state on disk) is exactly the writes of rounds
//     1..j for some j, never part of a round or a later round without an earlier one. The messages and
//     Executed reports of the lost rounds are dropped with them.
//
// Replies, StateTransfer and SoftState need no wait: the engine builds replies only for batches reported
// executed, i.e. durable, and a state transfer or a soft state promises nothing to anyone.
//
// Why this is safe: a replica's promises to the others are only the messages it sent. What it wrote but
// did not send is no promise yet: the others never saw it, so losing it in a crash is the same as never
// having written it, and the restarted replica, rebuilt from rounds 1..j, is a replica that stopped after
// round j. Every message it sent belongs to a round that was durable, with every earlier one, before the
// message left, so that round is among 1..j: the restarted replica finds every vote it sent in its log, as
// under synchronous persistence, and never signs a conflicting one. Sending a round's messages before its writes are durable
// breaks this: a crash can then lose a PRE-PREPARE or vote that others hold, and the restarted replica
// signs another one for the same view and sequence number (pbft/sim's asyncpersist fault catches such a
// driver; see pbft/sim/MUTATIONS.md).
type Ready struct {
	// HardState, when not nil, replaces the persisted hard state.
	HardState *HardState
	// Entries are appended to the persisted log.
	Entries []Entry
	// Truncate, when not zero, drops every log entry with Seq <= Truncate (after appending Entries).
	Truncate uint64

	// Messages to send to other replicas.
	Messages []Message
	// Replies to send to clients.
	Replies []ReplyMessage
	// Committed batches to execute, in strict sequence order with no gaps.
	Committed []CommittedBatch
	// StateTransfer, when not nil, asks the driver to fetch the state at a certified checkpoint.
	StateTransfer *StateTransfer
	// SoftState, when not nil, is the replica's new volatile state (it changed).
	SoftState *SoftState
	// Quorums are the slots that prepared or committed (locally) while the engine produced this Ready, in
	// the order they did. They are for observers (tracing, latency metrics): the driver need not act on
	// them, and their time is the time the driver takes the Ready.
	Quorums []QuorumEvent
}

// QuorumEvent says that the slot (View, Seq) reached a quorum: prepared (the pre-prepare and quorum-1 matching
// PREPAREs) or, if Committed, committed-local (prepared and a quorum of matching COMMITs).
type QuorumEvent struct {
	View, Seq uint64
	Committed bool
}

// IsEmpty reports whether the Ready carries nothing.
func (rd *Ready) IsEmpty() bool {
	return rd.HardState == nil && len(rd.Entries) == 0 && rd.Truncate == 0 && len(rd.Messages) == 0 &&
		len(rd.Replies) == 0 && len(rd.Committed) == 0 && rd.StateTransfer == nil && rd.SoftState == nil &&
		len(rd.Quorums) == 0
}

// Broadcast is the Message.To value that addresses every other replica.
const Broadcast = -1

// Message is one outbound consensus message.
type Message struct {
	// To is a replica index, or Broadcast for all replicas but this one.
	To int
	// Env is the signed envelope, with its Body and Resend set as they must travel.
	Env *wire.Envelope
}

// CommittedBatch is a batch that committed at Seq, for the driver to execute and store as block Seq.
type CommittedBatch struct {
	Seq    uint64
	View   uint64      // view of the commit certificate
	Digest wire.Digest // BatchDigest of Batch
	// Batch is the whole batch, in order; Digest covers the IDs of these envelopes. Empty for a null batch.
	Batch []*wire.Envelope
	// Execute lists the requests to execute, in order: Batch without the requests the client table says
	// were already executed (exactly-once). Executed takes one result per entry.
	Execute []ClientRequest
	// Cert is the commit certificate: a quorum of COMMIT envelopes for (View, Seq, Digest) from distinct
	// replicas. It proves the block to anyone who knows the replica set.
	Cert []*wire.Envelope
	// AlreadyApplied is set for batches replayed after a restart that the application had already applied
	// (at or below the applied index given to Restart): do not execute them again, but report the results
	// and digest they produced (stored with the block) through Executed, so the core can rebuild its client
	// table.
	AlreadyApplied bool
}

// ClientRequest is one request to execute.
type ClientRequest struct {
	Client    []byte // the client's public key (the request envelope's Author)
	Timestamp uint64
	Op        []byte
	Index     int // position in CommittedBatch.Batch
}

// StateTransfer asks the driver to bring the application to the certified checkpoint (Seq, Digest): either
// fetch a snapshot (application state plus the client table exported in HardState.Snapshot) from peers and
// hand it in with InstallSnapshot, or fetch the committed blocks Applied+1..Seq from peers and hand each in
// with ApplyCommitted. Proof holds the quorum of CHECKPOINT envelopes that certify Digest.
type StateTransfer struct {
	Seq     uint64
	Digest  wire.Digest
	Proof   []*wire.Envelope
	Applied uint64 // the last sequence number the replica executed
}

// Status is a replica's operating mode.
type Status int

const (
	// StatusNormal: in a view, ordering requests.
	StatusNormal Status = iota
	// StatusViewChange: moving to a new view, waiting for its NEW-VIEW.
	StatusViewChange
	// StatusSyncing: waiting for a state transfer to a certified checkpoint.
	StatusSyncing
)

func (s Status) String() string {
	switch s {
	case StatusNormal:
		return "normal"
	case StatusViewChange:
		return "view-change"
	case StatusSyncing:
		return "syncing"
	}
	return fmt.Sprintf("status(%d)", int(s))
}

// SoftState is the replica's volatile state, for observers and logs.
type SoftState struct {
	View         uint64
	Primary      int
	Status       Status
	LastExecuted uint64 // last sequence number reported through Executed
	Stable       uint64 // last stable checkpoint: the low watermark h
	Low, High    uint64 // the window (h, H]
}

// HardState is what a replica must find again after a restart, besides the log. It is small except for
// Snapshot, and changes on view changes and stable checkpoints.
type HardState struct {
	_ struct{} `cbor:",toarray"`
	// View is the view the replica is in or moving to; Active says it entered it (NEW-VIEW accepted, or
	// view 0).
	View   uint64
	Active bool
	// StableSeq, StableDigest and StableProof are the last stable checkpoint and its proof (a quorum of
	// CHECKPOINT envelopes; empty for checkpoint 0).
	StableSeq    uint64
	StableDigest wire.Digest
	StableProof  []*wire.Envelope
	// Snapshot is the core's part of the state at the last stable checkpoint it holds the state for.
	Snapshot *Snapshot
	// ViewChange is the replica's own VIEW-CHANGE for View while not Active (resent after a restart, never
	// re-signed). NewView is the NEW-VIEW of View once Active (View > 0).
	ViewChange *wire.Envelope
	NewView    *wire.Envelope
}

// Snapshot is the core's part of the replicated state at a checkpoint: the application digest and the
// encoded client table. A peer fetching the state at Seq needs it together with the application snapshot.
type Snapshot struct {
	_           struct{} `cbor:",toarray"`
	Seq         uint64
	AppDigest   wire.Digest
	ClientTable []byte
}

// Digest returns the checkpoint digest of the snapshot.
func (s *Snapshot) Digest() wire.Digest {
	return CheckpointDigest(s.Seq, s.AppDigest, ClientTableDigest(s.ClientTable))
}

// Entry is one record of the persisted log. Exactly one form is used:
//   - Env alone: a consensus message the replica accepted or authored (pre-prepares carry their Body);
//   - Batch alone: a batch body learned after its pre-prepare (fetched after a NEW-VIEW);
//   - Batch and Cert: a batch that committed, proved by the commit certificate Cert.
type Entry struct {
	_     struct{} `cbor:",toarray"`
	Seq   uint64
	Env   *wire.Envelope
	Batch []byte
	Cert  []*wire.Envelope
}

// Persisted is what Restart rebuilds a replica from: the last HardState and the log entries in the order
// they were appended (after truncation).
type Persisted struct {
	HardState HardState
	Entries   []Entry
}

// Marshal encodes the hard state.
func (h *HardState) Marshal() ([]byte, error) { return wire.Marshal(h) }

// DecodeHardState decodes a hard state.
func DecodeHardState(b []byte) (*HardState, error) {
	h, err := decodeStrict[HardState]("hard state", b)
	if err != nil {
		return nil, err
	}
	if err := checkEnvelopes(h.StableProof); err != nil {
		return nil, fmt.Errorf("pbft: decode hard state: proof: %w", err)
	}
	for _, e := range []*wire.Envelope{h.ViewChange, h.NewView} {
		if e != nil {
			if err := e.CheckShape(); err != nil {
				return nil, fmt.Errorf("pbft: decode hard state: %w", err)
			}
		}
	}
	return h, nil
}

// Marshal encodes the entry.
func (e *Entry) Marshal() ([]byte, error) { return wire.Marshal(e) }

// DecodeEntry decodes a log entry and checks that it has one of the valid forms.
func DecodeEntry(b []byte) (*Entry, error) {
	e, err := decodeStrict[Entry]("entry", b)
	if err != nil {
		return nil, err
	}
	switch {
	case e.Seq == 0:
		return nil, errors.New("pbft: decode entry: sequence number 0")
	case e.Env != nil && (e.Batch != nil || e.Cert != nil):
		return nil, errors.New("pbft: decode entry: message entry with batch or certificate")
	case e.Env != nil:
		if err := e.Env.CheckShape(); err != nil {
			return nil, fmt.Errorf("pbft: decode entry: %w", err)
		}
	case e.Cert != nil:
		if err := checkEnvelopes(e.Cert); err != nil {
			return nil, fmt.Errorf("pbft: decode entry: certificate: %w", err)
		}
	}
	return e, nil
}

// MarshalSnapshot and DecodeSnapshot encode the snapshot record for transfer between nodes.
func (s *Snapshot) Marshal() ([]byte, error) { return wire.Marshal(s) }

// DecodeSnapshot decodes a snapshot record.
func DecodeSnapshot(b []byte) (*Snapshot, error) { return decodeStrict[Snapshot]("snapshot", b) }
