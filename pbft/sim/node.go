package sim

import (
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// node is one replica instance.
type node struct {
	c     *Cluster
	idx   int
	twin  int
	name  string
	rep   *pbft.Replica
	store memStore
	app   *counterApp
	up    bool
	byz   *byzantine

	crashMidReady bool
	blocks        map[uint64]pbft.CommittedBatch
	coreSnaps     map[uint64]*pbft.Snapshot
	st            *pbft.StateTransfer
	stBusy        bool
	restarts      int
	low           uint64 // the replica's low watermark as of its last Ready

	// mark is the highest view and sequence number this replica signed in any of its lives (signed.go), as
	// the node's separately fsynced signed-state file keeps it; it survives wipes. wipeNext makes the next
	// restart one from an empty disk, and armed is the mark the engine was given at the last such restart:
	// the votes it covers are gone from the store for good, so every later restart is given it too.
	mark     pbft.Mark
	armed    pbft.Mark
	wipeNext bool
	wipes    int

	// as is the durable side under the asyncpersist fault (persist.go); epoch counts installed snapshots
	// (blocks executed in an older epoch are below the snapshot, and not reported).
	as    asyncState
	epoch uint64
}

func (n *node) correct() bool { return n.byz == nil }
func (n *node) silent() bool  { return n.byz != nil && n.byz.kind == FaultSilent }

func (n *node) start(p *pbft.Persisted, applied uint64) {
	if n.silent() {
		return
	}
	cfg := n.c.config(n.idx)
	cfg.SignedMark = n.armed
	rep, err := pbft.Restart(cfg, p, applied)
	if err != nil {
		n.c.obs.violation("%s: restart failed: %v", n.name, err)
		return
	}
	n.rep = rep
	n.up = true
	n.slowRetransmit()
	n.low = rep.Status().Low
	n.process()
}

func (n *node) crash() {
	n.c.tracef("%s crash", n.name)
	n.obsStats()
	n.up = false
	n.rep = nil
	n.crashMidReady = false
	n.st, n.stBusy = nil, false
	n.loseVolatile()
}

func (n *node) restart() {
	n.restarts++
	if n.wipeNext {
		n.wipe()
	}
	p, err := n.store.persisted()
	if err != nil {
		n.c.obs.violation("%s: persisted state does not decode: %v", n.name, err)
		return
	}
	if p != nil {
		n.c.tracef("%s restart (applied %d, %d log entries)", n.name, n.app.applied, len(p.Entries))
	}
	n.start(p, n.app.applied)
}

// wipe empties the replica's disk and application state; only its signed mark survives, and the engine is
// given it.
func (n *node) wipe() {
	n.c.tracef("%s wiped (signed mark view %d seq %d)", n.name, n.mark.View, n.mark.Seq)
	n.wipeNext = false
	n.wipes++
	n.store = memStore{}
	n.as = asyncState{lost: n.as.lost, lostMsgs: n.as.lostMsgs}
	n.app = newCounterApp()
	n.blocks = map[uint64]pbft.CommittedBatch{}
	n.coreSnaps = map[uint64]*pbft.Snapshot{}
	n.armed = n.mark
	// The empty replica delivers from the start again (or from a snapshot it installs).
	n.c.obs.next[n] = 1
}

func (n *node) obsStats() {
	if n.rep != nil {
		n.c.obs.addStats(n.rep.Stats())
	}
}

// process handles the replica's Ready values the way a node must: persist, send, reply, execute, state
// transfer, in that order. Under the asyncpersist fault it handles them as the node's outbox does instead
// (persist.go): apply, Advance, and send and report executed blocks once the writes are durable.
func (n *node) process() {
	for n.up && n.rep.HasReady() {
		rd := n.rep.Ready()
		high := n.low + n.c.opt.Window
		if rd.SoftState != nil {
			high = rd.SoftState.High
		}
		n.c.obs.checkEntries(n, &rd, n.low, high)
		if rd.SoftState != nil {
			n.low = rd.SoftState.Low
		}
		if n.async() {
			n.readyAsync(&rd)
			continue
		}
		if err := n.store.apply(&rd); err != nil {
			n.c.obs.violation("%s: persist: %v", n.name, err)
		}
		n.onHardState(&rd)
		if n.crashMidReady {
			n.crash()
			return
		}
		n.send(rd.Messages)
		for _, rm := range rd.Replies {
			n.c.net.sendReply(n, rm)
		}
		for i := range rd.Committed {
			n.execute(&rd.Committed[i])
			if !n.up {
				return
			}
		}
		n.afterReady(&rd)
		n.rep.Advance()
	}
}

// onHardState shows a written hard state to the observer and keeps the core's snapshots, to serve state
// transfers.
func (n *node) onHardState(rd *pbft.Ready) {
	if rd.HardState == nil {
		return
	}
	n.c.obs.onHardState(n, rd.HardState)
	if s := rd.HardState.Snapshot; s != nil && s.Seq > 0 {
		n.coreSnaps[s.Seq] = s
		for seq := range n.coreSnaps {
			if seq+4*n.c.opt.CheckpointInterval < s.Seq {
				delete(n.coreSnaps, seq)
			}
		}
	}
}

func (n *node) send(msgs []pbft.Message) {
	for _, m := range msgs {
		n.c.obs.onSent(n, m.Env)
		n.c.net.sendReplica(n, m)
	}
}

// afterReady starts the state transfer a Ready asks for and traces its soft state.
func (n *node) afterReady(rd *pbft.Ready) {
	if rd.StateTransfer != nil {
		n.c.tracef("%s state transfer to %d (applied %d)", n.name, rd.StateTransfer.Seq, rd.StateTransfer.Applied)
		n.st = rd.StateTransfer
		n.scheduleStateTransfer()
	}
	if rd.SoftState != nil && n.c.trace != nil {
		n.c.tracef("%s %+v", n.name, *rd.SoftState)
	}
}

// execute runs a committed batch and reports it executed.
func (n *node) execute(cb *pbft.CommittedBatch) {
	o, ok := n.run(cb)
	if !ok {
		return
	}
	if err := n.rep.Executed(o.seq, o.results, o.digest); err != nil {
		n.c.obs.violation("%s: Executed(%d): %v", n.name, cb.Seq, err)
	}
}

// run executes a committed batch in the application (or takes its stored outcome if it was applied
// before) and keeps it as a block; the outcome is for Executed.
func (n *node) run(cb *pbft.CommittedBatch) (executedBlock, bool) {
	n.c.obs.onCommitted(n, cb)
	var results [][]byte
	var digest wire.Digest
	if cb.AlreadyApplied {
		o, ok := n.app.history[cb.Seq]
		if !ok {
			n.c.obs.violation("%s: replay of %d the application never applied", n.name, cb.Seq)
			return executedBlock{}, false
		}
		results, digest = o.results, o.digest
	} else {
		var err error
		results, digest, err = n.app.execute(cb.Seq, cb.Execute)
		if err != nil {
			n.c.obs.violation("%s: %v", n.name, err)
			return executedBlock{}, false
		}
		n.c.obs.onExecuted(n, cb, results)
	}
	n.blocks[cb.Seq] = *cb
	if cb.Seq%n.c.opt.CheckpointInterval == 0 {
		n.app.keepSnapshot(4)
	}
	return executedBlock{seq: cb.Seq, results: results, digest: digest}, true
}
