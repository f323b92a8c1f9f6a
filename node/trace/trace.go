// Package trace keeps the recent history of consensus at one replica: for each of its last slots (a
// sequence number in a view), when each step of PBFT happened here, and for its last view changes, when
// each of their messages went and came. Reading the records of every replica side by side (p2pbft trace)
// shows the life of one sequence number across the replica set: which replica was late, which vote
// completed a quorum, what a view change cost.
//
// # Design
//
// The records must stay on in production, so recording is cheap and bounded:
//
//   - A Recorder holds two rings: the last N slots (Options.Slots) and the last view changes
//     (Options.ViewChanges). A new record replaces the oldest one; memory never grows with the run.
//   - Times are wall-clock Unix nanoseconds (int64), taken by the caller: comparable across replicas whose
//     clocks agree (one machine, or NTP), and costing no allocation to store.
//   - A record is found by (view, seq) through a map, so an event costs a map lookup and a few stores under
//     one mutex. The mutex is shared by the replica's event loop, its outbox (sends, durability) and API
//     readers; readers copy what they need and sort outside the hot path.
//   - Only the first PREPARE and COMMIT of each replica is kept in a slot (retransmissions add nothing),
//     so a slot holds at most 2n votes.
//   - A nil *Recorder records nothing: a replica with tracing off pays one nil check per event.
//
// The Recorder knows nothing of PBFT messages: the node (the engine's driver) decodes what it sends and
// receives and what the engine reports (pbft.Ready.Quorums), and calls the Recorder's methods.
package trace

import (
	"cmp"
	"slices"
	"sync"
	"time"
)

// DefaultSlots and DefaultViewChanges are the ring sizes of Options' zero values.
const (
	DefaultSlots       = 1024
	DefaultViewChanges = 64
)

// Phase names one interval of a slot's or a view change's life, as reported to Options.Observe.
type Phase string

// The phases a Recorder measures. A phase is measured once, when its end happens after its start here.
const (
	// PrePrepareToPrepared: from the pre-prepare (sent by the primary, received by a backup) to the prepared
	// quorum.
	PrePrepareToPrepared Phase = "pre_prepare_to_prepared"
	// PreparedToCommitted: from the prepared to the committed-local quorum.
	PreparedToCommitted Phase = "prepared_to_committed"
	// CommittedToExecuted: from the committed quorum to execution by the application (waits for earlier
	// slots to commit too).
	CommittedToExecuted Phase = "committed_to_executed"
	// ExecutedToDurable: from execution to the store batch holding the block being synced to disk.
	ExecutedToDurable Phase = "executed_to_durable"
	// DurableToReplied: from durability to the replies being handed to the clients' connections.
	DurableToReplied Phase = "durable_to_replied"
	// ViewChangeToNewView: from this replica's VIEW-CHANGE to the NEW-VIEW (sent or received).
	ViewChangeToNewView Phase = "view_change_to_new_view"
	// NewViewToFirstCommit: from the NEW-VIEW to the first slot committed in the new view.
	NewViewToFirstCommit Phase = "new_view_to_first_commit"
)

// Phases lists every Phase, for creating metrics ahead of the first event.
func Phases() []Phase {
	return []Phase{PrePrepareToPrepared, PreparedToCommitted, CommittedToExecuted, ExecutedToDurable,
		DurableToReplied, ViewChangeToNewView, NewViewToFirstCommit}
}

// Vote is a message from one replica and when it arrived (or, for the replica's own, when it left).
type Vote struct {
	From int   `json:"from"`
	At   int64 `json:"at"`
}

// Slot is the record of one sequence number in one view at one replica. Times are Unix nanoseconds; zero
// means the event did not happen here (yet).
type Slot struct {
	View uint64 `json:"view"`
	Seq  uint64 `json:"seq"`
	// PrePrepareSent is when the primary sent the pre-prepare (once the disk had it); PrePrepareReceived
	// when a backup accepted it, from replica PrePrepareFrom.
	PrePrepareSent     int64 `json:"pre_prepare_sent,omitempty"`
	PrePrepareReceived int64 `json:"pre_prepare_received,omitempty"`
	PrePrepareFrom     int   `json:"pre_prepare_from"`
	// Prepares and Commits are the first PREPARE and COMMIT of each replica, in arrival order; the
	// replica's own are included at the time they left.
	Prepares []Vote `json:"prepares,omitempty"`
	Commits  []Vote `json:"commits,omitempty"`
	// Prepared and Committed are when the engine reached the prepared and committed-local quorums.
	Prepared  int64 `json:"prepared,omitempty"`
	Committed int64 `json:"committed,omitempty"`
	// Executed is when the application executed the batch; Durable when the block was synced to disk;
	// Replied when Replies replies were handed to the clients' connections.
	Executed int64 `json:"executed,omitempty"`
	Durable  int64 `json:"durable,omitempty"`
	Replied  int64 `json:"replied,omitempty"`
	Replies  int   `json:"replies,omitempty"`
	// Requests and Bytes are the batch's size: requests (known once executed) and encoded bytes (known
	// from the pre-prepare).
	Requests int `json:"requests"`
	Bytes    int `json:"bytes"`
}

// PrePrepare returns when the slot's pre-prepare was sent or received here, or 0.
func (s *Slot) PrePrepare() int64 {
	if s.PrePrepareSent != 0 {
		return s.PrePrepareSent
	}
	return s.PrePrepareReceived
}

// ViewChange is the record of one view change (to View) at one replica. Times are Unix nanoseconds; zero
// means the event did not happen here (yet).
type ViewChange struct {
	View uint64 `json:"view"`
	// Sent is when this replica sent its VIEW-CHANGE for View; Received the first VIEW-CHANGE of each other
	// replica, in arrival order (one that reached a backup only inside the NEW-VIEW counts from then).
	Sent     int64  `json:"view_change_sent,omitempty"`
	Received []Vote `json:"view_changes_received,omitempty"`
	// NewViewSent is when this replica, the new primary, sent the NEW-VIEW; NewViewReceived when a backup
	// accepted it.
	NewViewSent     int64 `json:"new_view_sent,omitempty"`
	NewViewReceived int64 `json:"new_view_received,omitempty"`
	// FirstCommit is when the first slot (FirstCommitSeq) committed in View here.
	FirstCommit    int64  `json:"first_commit,omitempty"`
	FirstCommitSeq uint64 `json:"first_commit_seq,omitempty"`
}

// NewView returns when the NEW-VIEW was sent or received here, or 0.
func (v *ViewChange) NewView() int64 {
	if v.NewViewSent != 0 {
		return v.NewViewSent
	}
	return v.NewViewReceived
}

// Options configure a Recorder.
type Options struct {
	// Slots and ViewChanges are the ring sizes; zero or less means DefaultSlots and DefaultViewChanges.
	Slots       int
	ViewChanges int
	// Observe, if not nil, receives every measured phase. It is called outside the Recorder's lock.
	Observe func(p Phase, d time.Duration)
}

type key struct{ view, seq uint64 }

// Recorder keeps the rings. Its methods are safe for concurrent use; on a nil *Recorder they do nothing
// and the readers return nothing.
type Recorder struct {
	observe func(Phase, time.Duration)

	mu     sync.Mutex
	slots  []Slot
	next   int // where the next new slot goes
	full   bool
	bySlot map[key]int
	latest map[uint64]int // seq -> index of its record in the highest view
	vcs    []ViewChange
	vcNext int
	vcFull bool
	byView map[uint64]int
}

// New returns a Recorder with empty rings.
func New(o Options) *Recorder {
	if o.Slots <= 0 {
		o.Slots = DefaultSlots
	}
	if o.ViewChanges <= 0 {
		o.ViewChanges = DefaultViewChanges
	}
	return &Recorder{observe: o.Observe, slots: make([]Slot, o.Slots), bySlot: make(map[key]int, o.Slots),
		latest: make(map[uint64]int, o.Slots), vcs: make([]ViewChange, o.ViewChanges), byView: make(map[uint64]int)}
}

// slot returns the record of (view, seq), creating it in place of the oldest if needed. r.mu is held.
func (r *Recorder) slot(view, seq uint64) *Slot {
	k := key{view, seq}
	if i, ok := r.bySlot[k]; ok {
		return &r.slots[i]
	}
	i := r.next
	if r.full {
		old := &r.slots[i]
		delete(r.bySlot, key{old.View, old.Seq})
		if j, ok := r.latest[old.Seq]; ok && j == i {
			delete(r.latest, old.Seq)
		}
	}
	// Reuse the vote slices' memory: a steady run allocates nothing once the ring went round.
	r.slots[i] = Slot{View: view, Seq: seq, PrePrepareFrom: -1, Prepares: r.slots[i].Prepares[:0],
		Commits: r.slots[i].Commits[:0]}
	r.bySlot[k] = i
	if j, ok := r.latest[seq]; !ok || r.slots[j].View <= view {
		r.latest[seq] = i
	}
	r.next++
	if r.next == len(r.slots) {
		r.next, r.full = 0, true
	}
	return &r.slots[i]
}

// viewChange returns the record of the view change to view, creating it if needed. r.mu is held.
func (r *Recorder) viewChange(view uint64) *ViewChange {
	if i, ok := r.byView[view]; ok {
		return &r.vcs[i]
	}
	i := r.vcNext
	if r.vcFull {
		delete(r.byView, r.vcs[i].View)
	}
	r.vcs[i] = ViewChange{View: view, Received: r.vcs[i].Received[:0]}
	r.byView[view] = i
	r.vcNext++
	if r.vcNext == len(r.vcs) {
		r.vcNext, r.vcFull = 0, true
	}
	return &r.vcs[i]
}

// measure reports the interval from start to end to the observer, if both happened in that order.
func (r *Recorder) measure(p Phase, start, end int64) {
	if r.observe != nil && start != 0 && end >= start {
		r.observe(p, time.Duration(end-start))
	}
}

// PrePrepareSent records that this replica, the primary, sent the pre-prepare of (view, seq) with a batch
// of bytes bytes.
func (r *Recorder) PrePrepareSent(view, seq uint64, bytes int, at int64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	s := r.slot(view, seq)
	if s.PrePrepareSent == 0 {
		s.PrePrepareSent, s.Bytes = at, bytes
	}
	r.mu.Unlock()
}

// PrePrepareReceived records that this replica accepted the pre-prepare of (view, seq) from the primary
// from, with a batch of bytes bytes.
func (r *Recorder) PrePrepareReceived(view, seq uint64, from, bytes int, at int64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	s := r.slot(view, seq)
	if s.PrePrepareReceived == 0 {
		s.PrePrepareReceived, s.PrePrepareFrom = at, from
		if s.Bytes == 0 {
			s.Bytes = bytes
		}
	}
	r.mu.Unlock()
}

// Prepare records a PREPARE for (view, seq) from replica from (the first one of each replica counts).
func (r *Recorder) Prepare(view, seq uint64, from int, at int64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	s := r.slot(view, seq)
	s.Prepares = addVote(s.Prepares, from, at)
	r.mu.Unlock()
}

// Commit records a COMMIT for (view, seq) from replica from (the first one of each replica counts).
func (r *Recorder) Commit(view, seq uint64, from int, at int64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	s := r.slot(view, seq)
	s.Commits = addVote(s.Commits, from, at)
	r.mu.Unlock()
}

func addVote(vs []Vote, from int, at int64) []Vote {
	for _, v := range vs {
		if v.From == from {
			return vs
		}
	}
	return append(vs, Vote{From: from, At: at})
}

// Prepared records that (view, seq) prepared.
func (r *Recorder) Prepared(view, seq uint64, at int64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	s := r.slot(view, seq)
	first := s.Prepared == 0
	if first {
		s.Prepared = at
	}
	pp := s.PrePrepare()
	r.mu.Unlock()
	if first {
		r.measure(PrePrepareToPrepared, pp, at)
	}
}

// Committed records that (view, seq) committed here (committed-local, or through a commit certificate
// fetched from a peer). The first commit in a view that this replica saw a view change to marks the end of
// that view change.
func (r *Recorder) Committed(view, seq uint64, at int64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	s := r.slot(view, seq)
	first := s.Committed == 0
	if first {
		s.Committed = at
	}
	prepared := s.Prepared
	var nv int64
	if i, ok := r.byView[view]; ok && r.vcs[i].FirstCommit == 0 {
		vc := &r.vcs[i]
		vc.FirstCommit, vc.FirstCommitSeq = at, seq
		nv = vc.NewView()
	}
	r.mu.Unlock()
	if first {
		r.measure(PreparedToCommitted, prepared, at)
	}
	r.measure(NewViewToFirstCommit, nv, at)
}

// Executed records that the application executed the batch of (view, seq), of requests requests; view is
// the view of the batch's commit certificate.
func (r *Recorder) Executed(view, seq uint64, requests int, at int64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	s := r.slot(view, seq)
	first := s.Executed == 0
	if first {
		s.Executed, s.Requests = at, requests
	}
	committed := s.Committed
	r.mu.Unlock()
	if first {
		r.measure(CommittedToExecuted, committed, at)
	}
}

// Durable records that the block of (view, seq) is synced to disk.
func (r *Recorder) Durable(view, seq uint64, at int64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	s := r.slot(view, seq)
	first := s.Durable == 0
	if first {
		s.Durable = at
	}
	executed := s.Executed
	r.mu.Unlock()
	if first {
		r.measure(ExecutedToDurable, executed, at)
	}
}

// Replied records that replies replies of the block at seq (in the highest view this replica recorded for
// it) were handed to the clients' connections. A block's replies may come in several rounds; the first
// one's time is kept and the count adds up.
func (r *Recorder) Replied(seq uint64, replies int, at int64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	i, ok := r.latest[seq]
	if !ok {
		r.mu.Unlock()
		return
	}
	s := &r.slots[i]
	first := s.Replied == 0
	if first {
		s.Replied = at
	}
	s.Replies += replies
	durable := s.Durable
	r.mu.Unlock()
	if first {
		r.measure(DurableToReplied, durable, at)
	}
}

// ViewChangeSent records that this replica sent its VIEW-CHANGE for view.
func (r *Recorder) ViewChangeSent(view uint64, at int64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	if vc := r.viewChange(view); vc.Sent == 0 {
		vc.Sent = at
	}
	r.mu.Unlock()
}

// ViewChangeReceived records a VIEW-CHANGE for view from replica from (the first one of each replica
// counts).
func (r *Recorder) ViewChangeReceived(view uint64, from int, at int64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	vc := r.viewChange(view)
	vc.Received = addVote(vc.Received, from, at)
	r.mu.Unlock()
}

// NewViewSent records that this replica, the primary of view, sent its NEW-VIEW.
func (r *Recorder) NewViewSent(view uint64, at int64) { r.newView(view, at, true) }

// NewViewReceived records that this replica accepted the NEW-VIEW of view.
func (r *Recorder) NewViewReceived(view uint64, at int64) { r.newView(view, at, false) }

func (r *Recorder) newView(view uint64, at int64, sent bool) {
	if r == nil {
		return
	}
	r.mu.Lock()
	vc := r.viewChange(view)
	first := vc.NewView() == 0
	if sent && vc.NewViewSent == 0 {
		vc.NewViewSent = at
	} else if !sent && vc.NewViewReceived == 0 {
		vc.NewViewReceived = at
	}
	start := vc.Sent
	r.mu.Unlock()
	if first {
		r.measure(ViewChangeToNewView, start, at)
	}
}

// Slots returns copies of the slot records ordered by sequence number, then view: if from > 0, the
// first limit records with a sequence number from from upward; otherwise the last limit records. A limit
// of zero or less means all of them.
func (r *Recorder) Slots(from uint64, limit int) []Slot {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	n := r.next
	if r.full {
		n = len(r.slots)
	}
	out := make([]Slot, 0, n)
	for i := range n {
		s := r.slots[i]
		if s.Seq < from {
			continue
		}
		s.Prepares = slices.Clone(s.Prepares)
		s.Commits = slices.Clone(s.Commits)
		out = append(out, s)
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b Slot) int {
		return cmp.Or(cmp.Compare(a.Seq, b.Seq), cmp.Compare(a.View, b.View))
	})
	if limit > 0 && len(out) > limit {
		if from > 0 {
			out = out[:limit]
		} else {
			out = out[len(out)-limit:]
		}
	}
	return out
}

// ViewChanges returns copies of the view change records, ordered by view.
func (r *Recorder) ViewChanges() []ViewChange {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	n := r.vcNext
	if r.vcFull {
		n = len(r.vcs)
	}
	out := make([]ViewChange, n)
	for i := range n {
		out[i] = r.vcs[i]
		out[i].Received = slices.Clone(r.vcs[i].Received)
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b ViewChange) int { return cmp.Compare(a.View, b.View) })
	return out
}
