package node

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/p2pbft/p2pbft/node/store"
	"github.com/p2pbft/p2pbft/pbft"
)

// The outbox takes the disk's fsync off the event loop without changing what PBFT requires of it: a
// message leaves only once everything it promises is durable, and the engine hears that a block executed
// (Executed, after which it signs replies and checkpoints) only once the block is durable.
//
// The loop's Ready driver (readyDriver.handle, driver.go) commits each round's store batch with
// store.Batch.CommitAsync: the writes are applied (visible, ordered in the write-ahead log) at once, and the
// loop goes on to the next round while the disk syncs. The driver queues the round's messages and executed
// blocks on its outbox (readyDriver.out), in round order, together with the Durables of the round's
// batches. One goroutine (readyDriver.runOutbox) takes the queue in order: it waits until a round's
// batches are durable, then sends the round's messages (readyDriver.sender: Node.send) and hands its
// executed blocks back to the loop, which passes them to the driver (readyDriver.reportExecuted). Since
// batches become durable in commit order, a message never leaves before the records of its own round or of
// any earlier round, exactly as when the loop fsynced each round itself. What changes is that the rounds no longer wait for each other's fsyncs: the write-ahead log groups the
// syncs of the rounds committed while one sync runs into the next one, so the disk's latency bounds how
// long a message waits, not how many rounds a second the replica runs.
//
// Replies need no wait here: the engine builds them only after Executed, i.e. for durable blocks.

// outItem is one round's output waiting for durability.
type outItem struct {
	durable []*store.Durable
	rd      *pbft.Ready // for the afterPersist test hook
	msgs    []pbft.Message
	outs    []outcome
	epoch   uint64 // readyDriver.execEpoch when the blocks executed
	start   time.Time
}

// executedBlocks are durable executed blocks handed back to the loop.
type executedBlocks struct {
	outs  []outcome
	epoch uint64
}

// outbox is the queue between the loop's driver and runOutbox. It is unbounded: the engine bounds what it has in
// flight (window, pipeline depth), and the loop must never block on it.
type outbox struct {
	mu     sync.Mutex
	q      []*outItem
	closed bool
	kick   chan struct{}
}

func (o *outbox) push(it *outItem) {
	o.mu.Lock()
	o.q = append(o.q, it)
	o.mu.Unlock()
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

// close says no more items will come.
func (o *outbox) close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

// take returns the queued items, and whether the outbox is closed.
func (o *outbox) take() ([]*outItem, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	q := o.q
	o.q = nil
	return q, o.closed
}

// runOutbox delivers the driver's outbox in order until the outbox is closed and empty; it runs on its own
// goroutine (started by Run). Once ctx ends, or after a fatal error (a failed sync, a simulated crash), it
// only waits for the remaining batches to be durable (the store must not close under them) and sends
// nothing more.
func (d *readyDriver) runOutbox(ctx context.Context) {
	failed := false
	for {
		items, closed := d.out.take()
		for _, it := range items {
			for _, dur := range it.durable {
				if err := dur.Wait(); err != nil && !failed {
					failed = true
					d.fatal(err)
				}
			}
			if failed || ctx.Err() != nil {
				continue
			}
			if len(it.durable) > 0 {
				d.metrics.persistSeconds.Observe(time.Since(it.start).Seconds())
			}
			traceDurable(d.tracer, it.outs)
			if d.afterPersistHook() && it.rd != nil {
				if err := d.test.hooks.afterPersist(it.rd); err != nil {
					failed = true
					d.fatal(err)
					continue
				}
			}
			if d.signed != nil && len(it.msgs) > 0 {
				if m := voteMark(it.msgs, d.pub); !m.IsZero() {
					if _, err := d.signed.Raise(m); err != nil {
						failed = true
						d.fatal(fmt.Errorf("node: %w", err))
						continue
					}
				}
			}
			for _, m := range it.msgs {
				d.sender.send(m)
			}
			if len(it.outs) > 0 {
				select {
				case d.executed <- executedBlocks{outs: it.outs, epoch: it.epoch}:
				case <-ctx.Done():
				}
			}
		}
		if closed && len(items) == 0 {
			return
		}
		if len(items) > 0 {
			continue // more may have come meanwhile
		}
		<-d.out.kick
	}
}

// fatal hands an error that must stop the replica to the loop.
func (d *readyDriver) fatal(err error) {
	select {
	case d.fatalCh <- err:
	default: // one is enough
	}
}
