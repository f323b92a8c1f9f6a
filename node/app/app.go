package app

import (
	"errors"

	"github.com/p2pbft/p2pbft/wire"
)

// State names the state an application holds: the height of the last block it applied and its state
// digest after that block. Height 0 is the empty initial state.
type State struct {
	Height uint64
	Digest wire.Digest
}

// Request is one operation of a committed batch, as the node hands it to the application.
type Request struct {
	// Client is the public key of the request's author (wire.Envelope.Author). Consensus has authenticated
	// it; an application may use it for access control.
	Client []byte
	// Op is the application operation: opaque to consensus, defined by the application.
	Op []byte
}

// Outcome is what executing one batch produced.
type Outcome struct {
	// Results holds one result per request, in batch order. The node sends each to its client.
	Results [][]byte
	// Digest is the application state digest after the batch. It goes into the block and into checkpoints,
	// so it must be a deterministic function of the state alone.
	Digest wire.Digest
}

// Application is a deterministic replicated state machine. The node calls its methods from one goroutine
// (the replica's event loop), in this order for every committed block:
//
//	Execute(h, batch) ... Execute(h+k, batch)   // one or more blocks, in height order, no gaps
//	Commit(w)                                   // w is committed durably, atomically with blocks h..h+k
//	TakeSnapshot(h+k)                           // only at checkpoint heights
//
// Only SnapshotSource reads may run concurrently with these calls (state transfer serves peers from other
// goroutines). See the package documentation for the durability contract.
type Application interface {
	// Info reports the committed state: the height and digest as of the last Commit whose Writer the node
	// made durable. On start the node replays the blocks Info().Height+1 .. head through Execute and Commit,
	// and checks each digest against the block.
	Info() (State, error)

	// Execute applies the batch of block height, which is the height after the last executed one, and
	// returns one result per request and the state digest after the batch. It must be deterministic: the
	// same state and batch give the same results and digest on every replica. A request the application
	// cannot perform (malformed, failed precondition) gets a result saying so; an error return means the
	// application cannot go on (for example a failed disk read) and stops the node. An empty batch (a null
	// batch) changes nothing but the height.
	Execute(height uint64, batch []Request) (Outcome, error)

	// Commit writes, into w, whatever makes the executed but uncommitted blocks durable. The node commits
	// w in the same atomic, fsynced write as those blocks, so the chain and the application never disagree
	// after a crash. An application that keeps its state in memory writes nothing and reports Info().Height
	// 0 after a restart; the node then replays the chain. If the node cannot commit w it stops without
	// calling the application again.
	Commit(w Writer) error

	SnapshotSource
	Restorer
}

// SnapshotSource keeps exact images of the state at checkpoint heights and serves them in bounded chunks,
// so a replica that fell behind can copy the state from its peers.
type SnapshotSource interface {
	// TakeSnapshot keeps the state at height, which must be the height of the last Commit, readable
	// through OpenSnapshot until ReleaseSnapshot(height), however far execution goes on afterwards.
	TakeSnapshot(height uint64) error

	// ReleaseSnapshot drops the snapshot at height and frees what only it needed. Releasing a height that
	// has no snapshot is not an error.
	ReleaseSnapshot(height uint64) error

	// Snapshots lists the snapshots kept, in increasing height. A durable application keeps them across
	// restarts; a volatile one loses them.
	Snapshots() ([]State, error)

	// OpenSnapshot returns a reader of the snapshot at height, or an error wrapping ErrNoSnapshot.
	// It may be called from any goroutine.
	OpenSnapshot(height uint64) (Snapshot, error)
}

// Snapshot reads one kept snapshot. Its methods may be called from any goroutine, concurrently with
// execution. A reader whose snapshot is released returns errors wrapping ErrNoSnapshot.
type Snapshot interface {
	// State returns the snapshot's height and digest.
	State() State
	// ReadChunk returns the part of the snapshot that follows cursor (nil: from the beginning), encoded in
	// about maxBytes (at least one item, however large), and whether more follows. Cursors come from
	// SnapshotRestore.Cursor on the receiving side, so a transfer can resume, or switch to another peer,
	// after any chunk.
	ReadChunk(cursor []byte, maxBytes int) (chunk []byte, more bool, err error)
	// Close releases the reader (not the snapshot).
	Close() error
}

// Restorer replaces the application state with a snapshot received from peers.
type Restorer interface {
	// Restore starts installing the snapshot at height whose digest is want (the certified checkpoint
	// digest). Nothing changes for readers of the current state until the returned restore's Finish is
	// made durable. Only one restore runs at a time, and not while blocks are executed but uncommitted.
	Restore(height uint64, want wire.Digest) (SnapshotRestore, error)
}

// SnapshotRestore is a restore in progress. Chunks come from untrusted peers: Apply rejects a malformed or
// out-of-order chunk without applying any of it, and Finish rejects a state whose digest is not the wanted
// one. A rejected restore must be aborted and started again (from another peer).
type SnapshotRestore interface {
	// Cursor is what to pass to Snapshot.ReadChunk for the next chunk.
	Cursor() []byte
	// Apply installs one chunk.
	Apply(chunk []byte) error
	// Finish checks the digest of the installed state and writes into w the switch to it (and a kept
	// snapshot at its height, so this replica can serve it in turn). The node commits w atomically with
	// the chain's jump to the snapshot height; until then the old state stays current.
	Finish(w Writer) error
	// Abort discards the partly installed state.
	Abort() error
}

// Querier is implemented by applications that answer read-only queries from their committed state without
// consensus (the node's local query API). The answer reflects the returned height; it is one replica's
// view and may be stale or, on a faulty replica, wrong.
type Querier interface {
	Query(query []byte) (answer []byte, height uint64, err error)
}

// Errors applications return (wrapped).
var (
	// ErrNoSnapshot: no kept snapshot at the asked height.
	ErrNoSnapshot = errors.New("no snapshot at that height")
	// ErrBadChunk: a snapshot chunk is malformed or out of order.
	ErrBadChunk = errors.New("bad snapshot chunk")
	// ErrDigestMismatch: a restored state does not have the certified digest.
	ErrDigestMismatch = errors.New("restored state digest mismatch")
	// ErrHeight: a call names a height that does not follow the application's state.
	ErrHeight = errors.New("height out of order")
)
