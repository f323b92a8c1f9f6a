package pbft

import (
	"errors"
	"fmt"

	"github.com/p2pbft/p2pbft/wire"
)

// Replica is one PBFT replica: a deterministic state machine. It is not safe for concurrent use; the driver
// calls it from one goroutine.
type Replica struct {
	cfg    Config
	n      int
	quorum Quorums
	id     int
	keys   map[string]int
	set    ReplicaSet     // keys and the chain, for the certificate checks
	vcache *wire.SigCache // Config.VerifiedCache, or the replica's own
	// hint is a batch body the driver decoded and verified already (StepPrePrepare), for parseBatch.
	hint     *batchHint
	now      uint64 // ticks since start
	restored bool

	// View state (persisted in HardState).
	view       uint64
	active     bool
	ownVC      *wire.Envelope
	newViewEnv *wire.Envelope

	// Checkpoints.
	stable       stableCheckpoint
	snapshot     *Snapshot           // state at the last stable checkpoint this replica holds (persisted)
	ownCkpts     map[uint64]*ownCkpt // own checkpoints above the stable one (and the stable one)
	ckptVotes    [][]ckptVote        // per replica, checkpoints above the stable one
	ownLatest    *wire.Envelope      // own latest CHECKPOINT, for retransmission
	ckptAt       uint64              // next retransmission of ownLatest
	syncDeadline uint64              // when a replica behind the stable checkpoint gives up catching up by itself
	tail         map[uint64]*slot    // committed slots of the last window below stable, to serve fetches
	// certified are the latest stable checkpoints (seq and digest, oldest first, the current one last): a
	// snapshot of any of them above what this replica executed may be installed, so a state transfer
	// that takes longer than a checkpoint interval under load is not thrown away when the next one becomes
	// stable (the replica then catches up from it to the stable checkpoint with blocks).
	certified []certifiedCheckpoint

	// The log.
	slots       map[uint64]*slot
	highestSeen uint64

	// Execution.
	lastDelivered uint64
	lastExecuted  uint64
	appDigest     wire.Digest
	delivered     []*deliveredBatch
	clients       *clientTable

	// State transfer.
	syncing bool
	stAt    uint64

	// Primary.
	nextSeq uint64

	// Requests.
	pending  *pendingSet
	reqTimer requestTimer

	// View change.
	latestVC    []*vcInfo
	vcValid     map[wire.Digest]*ViewChange
	nvDeadline  uint64
	vcQuorum    bool
	backoff     int
	progressed  bool // a pending request executed since the current view began
	vcResendAt  uint64
	nvServed    []uint64
	resendCount uint32

	// Messages for views not entered yet, per sender.
	future [][]*wire.Envelope

	// Repair.
	lastProgress  uint64
	fetchAt       uint64
	probeAt       uint64
	probeInterval uint64
	fetchRot      int
	statusAt      uint64 // next Status multicast
	statusFetchAt uint64 // earliest fetch a Status may trigger
	fetchServed   []uint64

	// Output.
	out       Ready
	hsDirty   bool
	truncate  uint64
	soft      SoftState
	readyOut  bool
	stats     Stats
	sigFailed error
}

type stableCheckpoint struct {
	seq    uint64
	digest wire.Digest
	proof  []*wire.Envelope
}

type ownCkpt struct {
	snap   *Snapshot
	digest wire.Digest
}

type ckptVote struct {
	seq    uint64
	digest wire.Digest
	env    *wire.Envelope
}

type vcInfo struct {
	view uint64
	id   wire.Digest
	env  *wire.Envelope
	vc   *ViewChange
}

type deliveredBatch struct {
	seq            uint64
	view           uint64
	exec           []ClientRequest
	alreadyApplied bool
}

type requestTimer struct {
	running  bool
	deadline uint64
	target   wire.Digest
}

// New creates a replica that starts from the genesis state: view 0, nothing executed.
func New(cfg Config) (*Replica, error) {
	return Restart(cfg, nil, 0)
}

func newReplica(cfg Config) (*Replica, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := len(cfg.Replicas)
	if cfg.VerifiedCache == nil {
		cfg.VerifiedCache = wire.NewSigCache(cfg.VerifiedCacheSize)
	}
	r := &Replica{
		cfg:           cfg,
		n:             n,
		quorum:        QuorumsOf(n),
		keys:          make(map[string]int, n),
		vcache:        cfg.VerifiedCache,
		active:        true,
		ownCkpts:      make(map[uint64]*ownCkpt),
		ckptVotes:     make([][]ckptVote, n),
		slots:         make(map[uint64]*slot),
		tail:          make(map[uint64]*slot),
		clients:       newClientTable(),
		nextSeq:       1,
		pending:       newPendingSet(),
		latestVC:      make([]*vcInfo, n),
		vcValid:       make(map[wire.Digest]*ViewChange),
		nvServed:      make([]uint64, n),
		future:        make([][]*wire.Envelope, n),
		fetchServed:   make([]uint64, n),
		probeInterval: uint64(4 * cfg.RetransmitTimeout),
		stats:         newStats(),
	}
	for i, k := range cfg.Replicas {
		r.keys[string(k)] = i
	}
	r.id = r.keys[string(cfg.Signer.PublicKey())]
	r.set = &replicaKeys{chainID: cfg.ChainID, keys: r.keys}
	r.snapshot = &Snapshot{}
	r.soft = r.softState()
	r.hsDirty = true // the driver persists a hard state before anything else
	return r, nil
}

// ID returns this replica's index.
func (r *Replica) ID() int { return r.id }

// N returns the number of replicas.
func (r *Replica) N() int { return r.n }

func (r *Replica) primaryOf(v uint64) int { return int(v % uint64(r.n)) }

func (r *Replica) isPrimary() bool { return r.primaryOf(r.view) == r.id }

func (r *Replica) high() uint64 { return r.stable.seq + r.cfg.Window }

// inWindow reports whether seq is in (h, H].
func (r *Replica) inWindow(seq uint64) bool { return seq > r.stable.seq && seq <= r.high() }

func (r *Replica) timeout(base int) uint64 {
	return uint64(base) << uint(min(r.backoff, r.cfg.MaxBackoff))
}

func (r *Replica) seen(seq uint64) {
	// Only trust sequence numbers a window ahead: a Byzantine replica must not make us fetch forever.
	if seq > r.highestSeen && seq <= r.high()+r.cfg.Window {
		r.highestSeen = seq
	}
}

// Errors returned by Step, Propose and the driver calls. Step errors are *StepError values that wrap one of
// ErrInvalid (provably invalid: malformed, forged, from a non-member, equivocating) or ErrIgnored (explained
// by timing: stale, duplicate, outside the window, buffer full).
var (
	ErrInvalid = errors.New("invalid message")
	ErrIgnored = errors.New("message ignored")
	// ErrStale: a driver call names a sequence number the replica has moved past.
	ErrStale = errors.New("stale")
	// ErrSnapshotMismatch: a snapshot does not have the certified checkpoint digest.
	ErrSnapshotMismatch = errors.New("snapshot does not match the certified checkpoint")
	// ErrNotSyncing: InstallSnapshot was called while no state transfer is wanted.
	ErrNotSyncing = errors.New("no state transfer in progress")
)

// StepError says why a message was not used. Reason is a short stable label for counters.
type StepError struct {
	Reason Reason
	Kind   wire.Kind
	Err    error
}

func (e *StepError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("pbft: %s %s: %v", e.Kind, e.Reason, e.Err)
	}
	return fmt.Sprintf("pbft: %s %s", e.Kind, e.Reason)
}

func (e *StepError) Unwrap() []error {
	base := ErrIgnored
	if e.Reason.Invalid() {
		base = ErrInvalid
	}
	if e.Err != nil {
		return []error{base, e.Err}
	}
	return []error{base}
}

func (r *Replica) reject(k wire.Kind, reason Reason, err error) error {
	r.stats.count(reason)
	return &StepError{Reason: reason, Kind: k, Err: err}
}

// Step hands the replica one message received from the network. The driver must have verified the outer
// envelope's signature (the gossip validator does this once per message); Step checks everything else:
// chain ID, shape, kind, that the author is a replica (or, for a request, any client), the payload, and the
// signatures of embedded envelopes. A message that is not used returns a *StepError; the replica's state is
// unchanged by an invalid message.
func (r *Replica) Step(e *wire.Envelope) error {
	if e == nil {
		return r.reject(wire.KindInvalid, ReasonMalformed, errors.New("nil envelope"))
	}
	if err := e.CheckShape(); err != nil {
		return r.reject(e.Kind, ReasonMalformed, err)
	}
	if e.ChainID != r.cfg.ChainID {
		return r.reject(e.Kind, ReasonWrongChain, nil)
	}
	if e.Kind == wire.KindRequest {
		return r.stepRequest(e, true, false)
	}
	from, ok := r.keys[string(e.Author)]
	if !ok {
		return r.reject(e.Kind, ReasonNotReplica, nil)
	}
	if from == r.id {
		return r.reject(e.Kind, ReasonOwnMessage, nil)
	}
	err := r.stepReplica(e, from)
	r.afterInput()
	if err == errBuffered {
		return nil
	}
	return err
}

// batchHint is a pre-prepare body as the driver decoded it (DecodeBatch), whose request signatures it
// verified.
type batchHint struct {
	body []byte
	reqs []*wire.Envelope
}

// StepPrePrepare is Step for a pre-prepare whose body the driver has decoded (reqs = DecodeBatch(e.Body))
// and whose requests' signatures it has verified, all off the event loop: the engine then neither decodes
// the body again nor looks the signatures up. The driver vouches for reqs as it does for the outer
// envelope's signature.
func (r *Replica) StepPrePrepare(e *wire.Envelope, reqs []*wire.Envelope) error {
	if e != nil && len(e.Body) > 0 && len(reqs) > 0 {
		r.hint = &batchHint{body: e.Body, reqs: reqs}
		defer func() { r.hint = nil }()
	}
	return r.Step(e)
}

// hinted returns the driver's decoded requests of body, if it gave them (StepPrePrepare).
func (r *Replica) hinted(body []byte) []*wire.Envelope {
	h := r.hint
	if h == nil || len(h.body) != len(body) || len(body) == 0 || &h.body[0] != &body[0] {
		return nil
	}
	return h.reqs
}

// stepReplica dispatches a message from replica `from` whose signature has been checked.
func (r *Replica) stepReplica(e *wire.Envelope, from int) error {
	switch e.Kind {
	case wire.KindPrePrepare:
		return r.onPrePrepare(e, from)
	case wire.KindPrepare:
		return r.onPrepare(e, from)
	case wire.KindCommit:
		return r.onCommit(e, from)
	case wire.KindCheckpoint:
		return r.onCheckpoint(e, from)
	case wire.KindViewChange:
		return r.onViewChange(e, from)
	case wire.KindNewView:
		return r.onNewView(e, from)
	case wire.KindFetch:
		return r.onFetch(e, from)
	case wire.KindFetchReply:
		return r.onFetchReply(e, from)
	case wire.KindStatus:
		return r.onStatus(e, from)
	default:
		return r.reject(e.Kind, ReasonUnexpectedKind, nil)
	}
}

// Propose hands the replica a client request received from a client directly (the node's API). The core
// verifies its signature (unless already verified), answers a duplicate from the client table, and, on a
// backup, forwards it to the primary.
func (r *Replica) Propose(req *wire.Envelope) error {
	if req == nil {
		return r.reject(wire.KindRequest, ReasonMalformed, errors.New("nil envelope"))
	}
	if err := req.CheckShape(); err != nil {
		return r.reject(req.Kind, ReasonMalformed, err)
	}
	if req.ChainID != r.cfg.ChainID {
		return r.reject(req.Kind, ReasonWrongChain, nil)
	}
	if req.Kind != wire.KindRequest {
		return r.reject(req.Kind, ReasonUnexpectedKind, nil)
	}
	return r.stepRequest(req, false, true)
}

// Tick advances the replica's clock by one tick: timers, batch deadlines and retransmissions.
func (r *Replica) Tick() {
	r.now++
	r.tickTimers()
	r.tickRepair()
	r.tickStatus()
	r.afterInput()
}

// afterInput runs the work every input may enable.
func (r *Replica) afterInput() {
	r.tryDeliver()
	r.maybePropose()
	r.tryDeliver() // a single replica (n=1) commits its own proposals at once
}

// HasReady reports whether Ready has something for the driver. It is false while a Ready is out and Advance
// has not been called.
func (r *Replica) HasReady() bool {
	if r.readyOut {
		return false
	}
	return r.hsDirty || r.truncate != 0 || !r.out.IsEmpty() || r.soft != r.softState()
}

// Ready returns the accumulated output and hands its ownership to the driver, which handles it in order
// (see Ready) and then calls Advance. Calling Ready again before Advance returns an empty Ready.
func (r *Replica) Ready() Ready {
	if r.readyOut {
		return Ready{}
	}
	rd := r.out
	r.out = Ready{}
	if r.hsDirty {
		rd.HardState = r.hardState()
		r.hsDirty = false
	}
	if r.truncate != 0 {
		rd.Truncate = r.truncate
		r.truncate = 0
	}
	if s := r.softState(); s != r.soft {
		r.soft = s
		rd.SoftState = &s
	}
	r.readyOut = true
	return rd
}

// Advance tells the replica that the driver handled the last Ready.
func (r *Replica) Advance() { r.readyOut = false }

func (r *Replica) hardState() *HardState {
	h := &HardState{View: r.view, Active: r.active, StableSeq: r.stable.seq, StableDigest: r.stable.digest,
		StableProof: r.stable.proof, Snapshot: r.snapshot}
	if r.active {
		h.NewView = r.newViewEnv
	} else {
		h.ViewChange = r.ownVC
	}
	return h
}

func (r *Replica) softState() SoftState {
	st := StatusNormal
	switch {
	case r.syncing:
		st = StatusSyncing
	case !r.active:
		st = StatusViewChange
	}
	return SoftState{View: r.view, Primary: r.primaryOf(r.view), Status: st, LastExecuted: r.lastExecuted,
		Stable: r.stable.seq, Low: r.stable.seq, High: r.high()}
}

// Status returns the current soft state.
func (r *Replica) Status() SoftState { return r.softState() }

// Output helpers.

func (r *Replica) persist(e Entry) { r.out.Entries = append(r.out.Entries, e) }

func (r *Replica) send(to int, e *wire.Envelope) {
	r.out.Messages = append(r.out.Messages, Message{To: to, Env: e})
}

// resend sends a copy of a signed envelope with a new Resend counter, so that a content-addressed gossip
// layer does not drop it as a duplicate.
func (r *Replica) resend(to int, e *wire.Envelope) {
	if e == nil {
		return
	}
	r.resendCount++
	c := *e
	c.Resend = r.resendCount
	r.send(to, &c)
}

func (r *Replica) sign(kind wire.Kind, payload any) (*wire.Envelope, error) {
	if view, seq, ok := voteSlot(payload); ok && r.cfg.SignedMark.forbids(kind, view, seq) {
		r.stats.count(ReasonBelowSignedMark)
		return nil, ErrBelowSignedMark
	}
	p, err := wire.Marshal(payload)
	if err != nil {
		return nil, err
	}
	e, err := wire.Seal(r.cfg.Signer, r.cfg.ChainID, kind, p)
	if err != nil {
		r.sigFailed = err
		r.stats.count(ReasonSignFailed)
		return nil, err
	}
	// Our own messages end up in certificates we check later.
	r.vcache.AddEnvelope(e)
	return e, nil
}

// ErrBelowSignedMark: the replica would sign a vote that Config.SignedMark covers.
var ErrBelowSignedMark = errors.New("pbft: vote at or below the signed mark of an earlier life")

// voteSlot returns the view and sequence number of a vote payload (a view change or new view has no
// sequence number: 0).
func voteSlot(payload any) (view, seq uint64, ok bool) {
	switch p := payload.(type) {
	case *PrePrepare:
		return p.View, p.Seq, true
	case *Prepare:
		return p.View, p.Seq, true
	case *Commit:
		return p.View, p.Seq, true
	case *ViewChange:
		return p.View, 0, true
	case *NewView:
		return p.View, 0, true
	}
	return 0, 0, false
}

// verifyEnvelopes checks the signatures of embedded envelopes, using and filling the verified cache.
func (r *Replica) verifyEnvelopes(es []*wire.Envelope) error { return r.verify(es, true) }

// verify checks signatures not known to be valid; remember adds the valid ones to the verified cache.
func (r *Replica) verify(es []*wire.Envelope, remember bool) error {
	var todo []*wire.Envelope
	for _, e := range es {
		if !r.vcache.HasEnvelope(e) {
			todo = append(todo, e)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	r.stats.Verified += uint64(len(todo))
	var err error
	if len(todo) == 1 {
		err = r.cfg.Verifier.Verify(todo[0])
	} else {
		err = r.cfg.Verifier.VerifyBatch(todo)
	}
	if err != nil {
		return err
	}
	if remember {
		for _, e := range todo {
			r.vcache.AddEnvelope(e)
		}
	}
	return nil
}

// member returns the replica index of an embedded envelope's author, checking chain and kind.
func (r *Replica) member(e *wire.Envelope, kind wire.Kind) (int, error) {
	return CheckMember(r.set, e, kind)
}

func (r *Replica) slotFor(seq uint64) *slot {
	s := r.slots[seq]
	if s == nil {
		s = newSlot(seq, r.n, r.view)
		r.slots[seq] = s
	}
	return s
}
