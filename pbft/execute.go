package pbft

import (
	"fmt"

	"github.com/p2pbft/p2pbft/wire"
)

// Execution (docs/design/pbft.md rows 5-7): committed batches leave the core strictly in sequence order, each exactly
// once, filtered by the client table; the driver executes them and reports back with Executed, after which
// the core updates the client table, signs the replies and, every K sequence numbers, takes a checkpoint.

// tryDeliver hands out every committed batch that follows the last delivered one.
func (r *Replica) tryDeliver() {
	for r.lastDelivered < r.lastExecuted+r.cfg.Window {
		s := r.slots[r.lastDelivered+1]
		if s == nil || !s.committed {
			return
		}
		b := s.committedBatch()
		if b == nil {
			return // body still missing: fetched by tickRepair
		}
		r.deliver(s.seq, s.cert, b, false)
		s.delivered = true
		if s.seq <= r.stable.seq {
			// Caught up below the stable checkpoint: the slot is garbage now (kept to serve peers).
			delete(r.slots, s.seq)
			r.tail[s.seq] = s
		}
	}
}

// deliver appends one committed batch to the Ready, filtering requests the client table has seen.
func (r *Replica) deliver(seq uint64, cert *commitCert, b *batch, alreadyApplied bool) {
	envs := make([]*wire.Envelope, len(b.reqs))
	exec := make([]ClientRequest, 0, len(b.reqs))
	for i, q := range b.reqs {
		envs[i] = q.env
		ce := r.clients.getOrAdd(q.client)
		if ClassifyRequest(q.ts, ce.delivTS) != RequestNew {
			continue // a duplicate or an older request: exactly-once
		}
		ce.delivTS = q.ts
		exec = append(exec, ClientRequest{Client: q.env.Author, Timestamp: q.ts, Op: q.op, Index: i})
	}
	r.lastDelivered = seq
	r.lastProgress = r.now
	r.probeInterval = uint64(4 * r.cfg.RetransmitTimeout)
	r.delivered = append(r.delivered, &deliveredBatch{seq: seq, view: cert.view, exec: exec, alreadyApplied: alreadyApplied})
	r.out.Committed = append(r.out.Committed, CommittedBatch{Seq: seq, View: cert.view, Digest: b.digest, Batch: envs,
		Execute: exec, Cert: cert.commits, AlreadyApplied: alreadyApplied})
}

// Executed reports that the driver executed the committed batch seq (or, for a batch marked AlreadyApplied,
// found its stored outcome): results holds one result per CommittedBatch.Execute entry and appDigest is the
// application's state digest after the batch. Calls must follow the delivery order. The core then updates
// the client table, produces the replies, and takes a checkpoint every CheckpointInterval.
func (r *Replica) Executed(seq uint64, results [][]byte, appDigest wire.Digest) error {
	if len(r.delivered) == 0 {
		if seq <= r.lastExecuted {
			return fmt.Errorf("pbft: executed %d: %w (last executed %d)", seq, ErrStale, r.lastExecuted)
		}
		return fmt.Errorf("pbft: executed %d: no batch awaits execution", seq)
	}
	d := r.delivered[0]
	if seq != d.seq {
		if seq < d.seq {
			return fmt.Errorf("pbft: executed %d: %w (next is %d)", seq, ErrStale, d.seq)
		}
		return fmt.Errorf("pbft: executed %d: batch %d must be executed first", seq, d.seq)
	}
	if len(results) != len(d.exec) {
		return fmt.Errorf("pbft: executed %d: %d results for %d requests", seq, len(results), len(d.exec))
	}
	r.delivered[0] = nil
	r.delivered = r.delivered[1:]
	if len(r.delivered) == 0 {
		r.delivered = nil
	}
	for i, cr := range d.exec {
		c := string(cr.Client)
		ce := r.clients.getOrAdd(c)
		ce.execTS, ce.seq, ce.result, ce.reply = cr.Timestamp, seq, results[i], nil
		if pr := r.pending.removeExecuted(c, cr.Timestamp); pr != nil {
			r.requestExecuted(pr.req.id)
		}
	}
	r.lastExecuted = seq
	r.appDigest = appDigest
	r.stats.ExecutedRequests += uint64(len(d.exec))
	if len(d.exec) > 0 && !d.alreadyApplied {
		r.sendReplies(seq, d.exec, results)
		if r.active {
			r.backoff = 0
			r.progressed = true
		}
	}
	if seq%r.cfg.CheckpointInterval == 0 {
		r.takeCheckpoint(seq)
	}
	r.afterInput()
	return nil
}

func (r *Replica) sendReplies(seq uint64, exec []ClientRequest, results [][]byte) {
	clients := make([][]byte, len(exec))
	stamps := make([]uint64, len(exec))
	for i, cr := range exec {
		clients[i], stamps[i] = cr.Client, cr.Timestamp
	}
	b, err := newReplyBatch(r.cfg.Signer, r.cfg.ChainID, r.view, seq, r.id, clients, stamps, results)
	if err != nil {
		r.stats.count(ReasonSignFailed)
		return
	}
	for i := range exec {
		r.out.Replies = append(r.out.Replies, ReplyMessage{Client: clients[i], Timestamp: stamps[i], Seq: seq, batch: b, index: i})
	}
}
