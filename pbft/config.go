package pbft

import (
	"errors"
	"fmt"

	"github.com/p2pbft/p2pbft/wire"
)

// Config configures a Replica. Zero values of the tuning fields take the defaults listed with them
// (WithDefaults); Validate reports every problem it finds.
type Config struct {
	// ChainID names the replica set; every message must carry it.
	ChainID string
	// Replicas holds the replicas' 32-byte public keys in replica order: replica i is Replicas[i], and the
	// primary of view v is replica v mod len(Replicas). The core maps an envelope's Author to its index.
	Replicas [][]byte
	// Signer signs this replica's messages; its public key must be one of Replicas.
	Signer wire.Signer
	// Verifier checks signatures of envelopes embedded in other messages (client requests in batches,
	// certificates in view changes, new views, fetch replies and ApplyCommitted) and client requests given
	// to Propose. Outer envelopes given to Step are the driver's job (see the package documentation).
	Verifier wire.Verifier

	// CheckpointInterval K: a checkpoint every K sequence numbers. Default 32.
	CheckpointInterval uint64
	// Window L: sequence numbers in (h, h+L] may be assigned and accepted, where h is the last stable
	// checkpoint. A multiple of CheckpointInterval, at least 2K. Default 2K.
	Window uint64
	// MaxBatchRequests caps the requests of one batch. Default 1000.
	MaxBatchRequests int
	// MaxBatchBytes caps the encoded size of one batch (the pre-prepare body). Default 4 MiB.
	MaxBatchBytes int
	// BatchTimeout: the primary cuts a batch that is not full once its oldest request has waited this many
	// ticks. 0 (the default) cuts as soon as the pipeline has room, so batches grow with load by themselves.
	BatchTimeout int
	// PipelineDepth caps the batches the primary has assigned but not yet executed. Default Window.
	PipelineDepth int
	// PipelineMinBatch: while a batch is in flight, the primary cuts the next one only once this many
	// requests wait (or MaxBatchBytes of them), and otherwise when the pipeline empties. Every batch costs
	// its replicas a fixed amount of work (a pre-prepare, prepares and commits signed and verified, a
	// durable write per phase, a reply header), so at moderate load fewer, larger batches leave more CPU to
	// the requests; under heavy load the queue fills fast and batches still pipeline. 0 or 1: no wait (a
	// batch as soon as the pipeline has room).
	PipelineMinBatch int
	// RequestTimeout (ticks): how long a replica waits for a known request to execute before it starts a view
	// change. Default 50.
	RequestTimeout int
	// NewViewTimeout (ticks): how long a replica in a view change waits, once a quorum of VIEW-CHANGEs is in,
	// for the NEW-VIEW (and, in the new view, for the first execution) before it moves to the next view.
	// Both timeouts double with each consecutive view change that makes no progress (exponential backoff)
	// and return to their base on progress. Default RequestTimeout.
	NewViewTimeout int
	// MaxBackoff caps the doubling: timeouts grow at most to base << MaxBackoff. Default 10.
	MaxBackoff int
	// RetransmitTimeout (ticks): after this long without progress a replica retransmits its own messages for
	// the stuck sequence numbers, its unstable checkpoint or its VIEW-CHANGE, and asks a peer for what it is
	// missing (KindFetch). Default 10.
	RetransmitTimeout int
	// StatusInterval (ticks): how often a replica multicasts its Status. Default 10 x RetransmitTimeout.
	StatusInterval int
	// MaxPendingRequests bounds the client requests a replica holds that have not executed. Default 100000.
	MaxPendingRequests int
	// MaxRequestBytes bounds the encoded size of one client request envelope. Default 1 MiB (the built-in
	// key-value store's largest operation, a compare-and-set of two 256 KiB values, fits with room to spare).
	MaxRequestBytes int
	// MaxFutureMessages bounds, per sending replica, the messages kept for a view this replica has not
	// entered yet. Default 4*Window.
	MaxFutureMessages int
	// VerifiedCache, if not nil, is the cache of verified signatures the replica consults before it asks
	// Verifier and fills with what it verified, signed or accepted from Step: a driver that verifies at
	// ingress passes the cache it fills there (wire.CachingVerifier.Cache), so the engine does not verify a
	// signature again. Only signatures that verified may enter it. The replica's decisions do not depend on
	// what it holds: a hit only skips a verification that would succeed.
	VerifiedCache *wire.SigCache
	// VerifiedCacheSize bounds the replica's own verified-signature cache (when VerifiedCache is nil; the
	// cache holds at most twice as many signatures), so that a request verified at ingress is not verified
	// again in a pre-prepare and certificates reuse checked votes. Default 4*MaxPendingRequests.
	VerifiedCacheSize int
	// FetchBatch bounds the sequence numbers asked for in one KindFetch. Default 16.
	FetchBatch int

	// SignedMark, if not zero, covers votes this replica signed in an earlier life that the state given to
	// Restart may not hold (a store that lost the tail of its log, a data folder restored from a backup or
	// wiped): the replica signs no PRE-PREPARE, PREPARE or COMMIT with view <= SignedMark.View and sequence
	// number <= SignedMark.Seq, and no VIEW-CHANGE or NEW-VIEW for a view <= SignedMark.View, so that it can
	// never contradict a vote it forgot. It catches up meanwhile like any replica that is behind (it executes
	// what the others commit, by their certificates or by state transfer), and votes again past the mark.
	// A view change it starts goes to SignedMark.View+1 at least, and until a stable checkpoint covers
	// SignedMark.Seq it sends no VIEW-CHANGE at all (it moves to the new view silently): its VIEW-CHANGE
	// could not carry the prepared certificates it forgot, and with f faulty replicas beside it a new view
	// could then drop a committed batch. Until then it counts as one of the f (f = 0 chains are exempt).
	SignedMark Mark
}

// Mark is a signed high-water mark (Config.SignedMark).
type Mark struct {
	View, Seq uint64
}

// forbids says whether the mark forbids signing kind for view and seq (seq ignored for view changes and
// new views).
func (m Mark) forbids(kind wire.Kind, view, seq uint64) bool {
	switch kind {
	case wire.KindPrePrepare, wire.KindPrepare, wire.KindCommit:
		return view <= m.View && seq <= m.Seq && m != Mark{}
	case wire.KindViewChange, wire.KindNewView:
		return view <= m.View && m != Mark{}
	}
	return false
}

// Defaults for the zero values of Config.
const (
	DefaultCheckpointInterval = 32
	DefaultMaxBatchRequests   = 1000
	DefaultMaxBatchBytes      = 4 << 20
	DefaultRequestTimeout     = 50
	DefaultMaxBackoff         = 10
	DefaultRetransmitTimeout  = 10
	DefaultMaxPending         = 100000
	DefaultMaxRequestBytes    = 1 << 20
	DefaultFetchBatch         = 16
)

// WithDefaults returns a copy of c with every zero tuning field set to its default.
func (c Config) WithDefaults() Config {
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = DefaultCheckpointInterval
	}
	if c.Window == 0 {
		c.Window = 2 * c.CheckpointInterval
	}
	if c.MaxBatchRequests == 0 {
		c.MaxBatchRequests = DefaultMaxBatchRequests
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if c.PipelineDepth == 0 {
		c.PipelineDepth = int(c.Window)
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.NewViewTimeout == 0 {
		c.NewViewTimeout = c.RequestTimeout
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.RetransmitTimeout == 0 {
		c.RetransmitTimeout = DefaultRetransmitTimeout
	}
	if c.StatusInterval == 0 {
		c.StatusInterval = 10 * c.RetransmitTimeout
	}
	if c.MaxPendingRequests == 0 {
		c.MaxPendingRequests = DefaultMaxPending
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if c.MaxFutureMessages == 0 {
		c.MaxFutureMessages = 4 * int(c.Window)
	}
	if c.VerifiedCacheSize == 0 {
		c.VerifiedCacheSize = 4 * c.MaxPendingRequests
	}
	if c.FetchBatch == 0 {
		c.FetchBatch = DefaultFetchBatch
	}
	return c
}

// Validate reports every problem with c (after WithDefaults), joined into one error.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(c.ChainID) == 0 || len(c.ChainID) > wire.MaxChainIDLen {
		bad("ChainID: length %d not in [1,%d]", len(c.ChainID), wire.MaxChainIDLen)
	}
	if len(c.Replicas) == 0 || len(c.Replicas) > maxReplicas {
		bad("Replicas: %d replicas, want 1 to %d", len(c.Replicas), maxReplicas)
	}
	seen := make(map[string]int, len(c.Replicas))
	for i, k := range c.Replicas {
		if len(k) != wire.PublicKeySize {
			bad("Replicas[%d]: key is %d bytes, want %d", i, len(k), wire.PublicKeySize)
		}
		if j, dup := seen[string(k)]; dup {
			bad("Replicas[%d]: same key as Replicas[%d]", i, j)
		}
		seen[string(k)] = i
	}
	if c.Signer == nil {
		bad("Signer: missing")
	} else if _, ok := seen[string(c.Signer.PublicKey())]; !ok {
		bad("Signer: public key %x is not one of Replicas", c.Signer.PublicKey())
	}
	if c.Verifier == nil {
		bad("Verifier: missing")
	}
	if c.CheckpointInterval == 0 {
		bad("CheckpointInterval: must be > 0")
	} else if c.Window < 2*c.CheckpointInterval || c.Window%c.CheckpointInterval != 0 {
		bad("Window: %d must be a multiple of CheckpointInterval (%d) and at least twice it", c.Window, c.CheckpointInterval)
	}
	if c.Window > 1<<16 {
		bad("Window: %d exceeds %d", c.Window, 1<<16)
	}
	positive := map[string]int{
		"MaxBatchRequests": c.MaxBatchRequests, "MaxBatchBytes": c.MaxBatchBytes, "PipelineDepth": c.PipelineDepth,
		"RequestTimeout": c.RequestTimeout, "NewViewTimeout": c.NewViewTimeout, "RetransmitTimeout": c.RetransmitTimeout, "StatusInterval": c.StatusInterval,
		"MaxPendingRequests": c.MaxPendingRequests, "MaxRequestBytes": c.MaxRequestBytes,
		"MaxFutureMessages": c.MaxFutureMessages, "VerifiedCacheSize": c.VerifiedCacheSize, "FetchBatch": c.FetchBatch,
	}
	for _, name := range []string{"MaxBatchRequests", "MaxBatchBytes", "PipelineDepth", "RequestTimeout", "NewViewTimeout",
		"RetransmitTimeout", "StatusInterval", "MaxPendingRequests", "MaxRequestBytes", "MaxFutureMessages", "VerifiedCacheSize",
		"FetchBatch"} {
		if positive[name] <= 0 {
			bad("%s: %d must be > 0", name, positive[name])
		}
	}
	if c.BatchTimeout < 0 {
		bad("BatchTimeout: %d must be >= 0", c.BatchTimeout)
	}
	if c.PipelineMinBatch < 0 {
		bad("PipelineMinBatch: %d must be >= 0", c.PipelineMinBatch)
	}
	if c.MaxBackoff < 0 || c.MaxBackoff > 30 {
		bad("MaxBackoff: %d not in [0,30]", c.MaxBackoff)
	}
	if c.MaxBatchRequests > maxBatchCount {
		bad("MaxBatchRequests: %d exceeds %d", c.MaxBatchRequests, maxBatchCount)
	}
	if c.MaxBatchBytes > wire.MaxMessageSize/2 {
		bad("MaxBatchBytes: %d exceeds %d", c.MaxBatchBytes, wire.MaxMessageSize/2)
	}
	if c.MaxRequestBytes > c.MaxBatchBytes {
		bad("MaxRequestBytes: %d exceeds MaxBatchBytes %d", c.MaxRequestBytes, c.MaxBatchBytes)
	}
	if c.FetchBatch > maxFetchItems {
		bad("FetchBatch: %d exceeds %d", c.FetchBatch, maxFetchItems)
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("pbft: invalid config: %w", errors.Join(errs...))
}

// F returns the number of faulty replicas n replicas tolerate: (n-1)/3.
func F(n int) int { return (n - 1) / 3 }

// Quorum returns the size of a quorum for n replicas: the smallest q with 2q-n >= f+1, so that two quorums
// share a correct replica. For n = 3f+1 it is 2f+1. It is QuorumsOf(n).Commit().
func Quorum(n int) int { return QuorumsOf(n).Commit() }

// Quorums are the vote counts of the protocol for N replicas of which F = F(N) may be faulty: the one place
// the engine, the node, the client and the tools take them from. Build it with QuorumsOf.
type Quorums struct {
	N, F int
}

// QuorumsOf returns the quorums of n replicas.
func QuorumsOf(n int) Quorums { return Quorums{N: n, F: F(n)} }

// Commit is the size of a quorum, the smallest q with 2q-N >= F+1 (two quorums share a correct replica):
// 2f+1 for n = 3f+1. A commit certificate, a checkpoint proof and the VIEW-CHANGEs of a NEW-VIEW hold this
// many messages from distinct replicas.
func (q Quorums) Commit() int { return (q.N+q.F)/2 + 1 }

// Prepare is how many matching PREPAREs from distinct backups a slot needs, besides the primary's
// pre-prepare, to be prepared (together a quorum): Commit()-1.
func (q Quorums) Prepare() int { return q.Commit() - 1 }

// Weak is F+1, the fewest replicas that include a correct one: a client accepts a result Weak replicas
// agree on, a replica joins a view change Weak replicas moved to, and a snapshot manifest Weak replicas
// agree on is believed.
func (q Quorums) Weak() int { return q.F + 1 }
