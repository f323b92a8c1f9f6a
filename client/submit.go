package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/p2pbft/p2pbft/p2p"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// checkSize refuses a request the replicas would refuse for its size.
func (c *Client) checkSize(env *wire.Envelope) error {
	if n := pbft.RequestSize(env); n > c.cfg.MaxRequestBytes {
		return fmt.Errorf("client: %w: a request of %d bytes exceeds the replicas' limit of %d (consensus: pbft.Config.MaxRequestBytes)",
			ErrRefused, n, c.cfg.MaxRequestBytes)
	}
	return nil
}

// primary returns the primary of the believed view.
func (c *Client) primary() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int(c.view % uint64(c.n))
}

// learnView moves the believed view forward to v.
func (c *Client) learnView(v uint64) {
	c.mu.Lock()
	if v > c.view {
		c.log.Debug("learned a new view from replies", "view", v, "previous", c.view)
		c.view = v
	}
	c.mu.Unlock()
}

// submit sends env (signed by session si, timestamp ts) and waits for f+1 matching replies. The first round
// goes to every replica: the primary orders the request, the backups keep it so that they need not verify
// its signature when the pre-prepare brings it (the link authenticates it), and every replica that executes
// it replies. If f+1 matching replies are not in after RetryTimeout, or at once if the primary refused
// the request, the request goes again, marked as a retransmission, to every replica that has not replied:
// then every correct replica verifies it, forwards it to the primary and watches for its execution (PBFT's
// reaction to a client that had to retransmit). Retransmissions repeat every RetryTimeout, doubling up to
// MaxRetryTimeout, until ctx ends.
func (c *Client) submit(ctx context.Context, si int, frame p2p.LinkFrame, ts uint64, deadline time.Time) (*Reply, error) {
	start := time.Now()
	var retry p2p.LinkFrame
	cl := newCall(ts, c.n)
	c.calls[si].Store(cl)
	defer c.calls[si].Store(nil)
	links := c.links[si/c.cfg.SessionsPerHost]
	primary := c.primary()
	rounds := 0
	primaryReached := false
	sendRound := func(why string) int {
		f := frame
		if rounds > 0 {
			if retry == nil {
				retry = frame.Retry()
			}
			f = retry
			if rounds == 1 {
				c.metrics.broadcasts.Add(1)
			}
			c.metrics.retransmissions.Add(1)
		}
		rounds++
		sent := 0
		for r := range c.n {
			if cl.answered(r) {
				continue
			}
			if err := links[r].SendFrame(f); err != nil {
				c.metrics.failedAttempts.Add(1)
				continue
			}
			c.metrics.sent.Add(1)
			sent++
			if r == primary {
				primaryReached = true
			}
		}
		if rounds > 1 {
			c.log.Debug("request sent again", "why", why, "timestamp", ts, "round", rounds, "sent", sent)
		}
		return sent
	}
	if sendRound("first") == 0 {
		wctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
		err := c.waitAnyLink(wctx, links)
		cancel()
		if err != nil {
			if c.ctx.Err() != nil {
				return nil, ErrClosed
			}
			c.metrics.abandoned.Add(1)
			if errors.Is(err, ErrUnreachable) {
				return nil, fmt.Errorf("client: request %d (session %d) not sent: %w", ts, si, err)
			}
			return nil, fmt.Errorf("client: request %d (session %d) not sent: no replica reachable within %s (connected to %d of %d; check the genesis addresses and --bootstrap): %w",
				ts, si, c.cfg.ConnectTimeout, c.connectedReplicas(), c.n, err)
		}
		sendRound("no replica was reachable")
	}
	if !primaryReached {
		// The backups wait for the primary's pre-prepare unless told the client had to retransmit.
		sendRound("the primary is unreachable")
	}
	refused := false
	refusals := make(map[int]string, c.n)
	retryAfter := c.cfg.RetryTimeout
	nextRetry := time.Now().Add(retryAfter)
	// One timer serves the retransmissions and the deadline: it fires at whichever comes first.
	wake := func() time.Duration {
		d := time.Until(nextRetry)
		if !deadline.IsZero() {
			d = min(d, time.Until(deadline))
		}
		return max(d, 0)
	}
	timer := time.NewTimer(wake())
	defer timer.Stop()
	for {
		select {
		case <-cl.done:
			return c.accept(si, cl, rounds, start), nil
		case rf := <-cl.refused:
			if rf.final {
				refusals[rf.replica] = rf.reason
			}
			if n := countSame(refusals, rf.reason); rf.final && n >= c.quorum.Weak() {
				c.metrics.abandoned.Add(1)
				return nil, fmt.Errorf("client: request %d (session %d): %w by %d replicas: %s", ts, si, ErrRefused, n, rf.reason)
			}
			if rf.replica == primary && !refused {
				refused = true
				sendRound("the primary refused the request")
				nextRetry = time.Now().Add(retryAfter)
				timer.Reset(wake())
			}
		case now := <-timer.C:
			if !deadline.IsZero() && !now.Before(deadline) {
				c.metrics.abandoned.Add(1)
				return nil, fmt.Errorf("client: request %d (session %d) after %d rounds: %w: %w", ts, si, rounds, ErrUnknownOutcome, context.DeadlineExceeded)
			}
			if !now.Before(nextRetry) {
				sendRound("timeout")
				retryAfter = min(2*retryAfter, c.cfg.MaxRetryTimeout)
				nextRetry = now.Add(retryAfter)
			}
			timer.Reset(wake())
		case <-ctx.Done():
			c.metrics.abandoned.Add(1)
			return nil, fmt.Errorf("client: request %d (session %d) after %d rounds: %w: %w", ts, si, rounds, ErrUnknownOutcome, ctx.Err())
		case <-c.ctx.Done():
			return nil, ErrClosed
		}
	}
}

// connectedReplicas returns how many replicas the first host is connected to.
func (c *Client) connectedReplicas() int { return len(c.hosts[0].ConnectedReplicas()) }

// countSame counts the refusals that give reason.
func countSame(refusals map[int]string, reason string) int {
	n := 0
	for _, r := range refusals {
		if r == reason {
			n++
		}
	}
	return n
}

// waitAnyLink waits until at least one of links is up. With Config.FailUnreachable it gives up, with an
// error wrapping ErrUnreachable, once every link's attempt to open has failed.
func (c *Client) waitAnyLink(ctx context.Context, links []*p2p.Link) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		for _, l := range links {
			if l.Up() {
				return nil
			}
		}
		if err := c.unreachable(links); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.ctx.Done():
			return ErrClosed
		case <-t.C:
		}
	}
}

// unreachable returns an error wrapping ErrUnreachable, naming each replica and why it could not be
// reached, when Config.FailUnreachable is set, no link of links is up, and every link's attempts to open
// a stream have failed (none is still waiting on a slow peer); else nil.
func (c *Client) unreachable(links []*p2p.Link) error {
	if !c.cfg.FailUnreachable {
		return nil
	}
	why := make([]string, 0, len(links))
	for r, l := range links {
		if l.Up() {
			return nil
		}
		n, err := l.DialFailures()
		if n == 0 || err == nil {
			return nil
		}
		// libp2p lists one line per address it tried; one line per replica reads better.
		msg := strings.Join(strings.Fields(err.Error()), " ")
		why = append(why, fmt.Sprintf("replica %d: %s", r, msg))
	}
	return fmt.Errorf("%w: every attempt failed (check the genesis addresses and --bootstrap):\n  %s", ErrUnreachable, strings.Join(why, "\n  "))
}

// accept builds the Reply of a call that reached its quorum and learns the view from its replies.
func (c *Client) accept(si int, cl *call, rounds int, start time.Time) *Reply {
	cl.mu.Lock()
	rep := cl.result
	var agreed []int
	var views []uint64
	for r, got := range cl.replies {
		if got == nil {
			continue
		}
		views = append(views, got.View)
		if bytes.Equal(got.Result, rep.Result) {
			agreed = append(agreed, r)
		}
	}
	cl.mu.Unlock()
	// The (f+1)-th highest view reported: at least f+1 replicas claim it or more, so at least one correct
	// replica reached it and a faulty one cannot push the client to an arbitrary view.
	slices.Sort(views)
	slices.Reverse(views)
	if w := c.quorum.Weak(); len(views) >= w {
		c.learnView(views[w-1])
	}
	lat := time.Since(start)
	c.metrics.accept(lat)
	return &Reply{
		Result: rep.Result, Timestamp: cl.ts, Seq: rep.Seq, View: c.View(), Replicas: agreed, Session: si,
		Client: c.sessions.Session(si).Key().PublicKey(), Transmissions: rounds, Latency: lat,
	}
}
