package p2p

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/multiformats/go-multiaddr"

	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/wire"
)

// linkSink collects what a link or a link handler received.
type linkSink struct {
	mu     sync.Mutex
	pushes []string
	reqs   []LinkRequest
	from   []*ClientLink
}

func (s *linkSink) onPush(data []byte) {
	s.mu.Lock()
	s.pushes = append(s.pushes, string(data))
	s.mu.Unlock()
}

func (s *linkSink) onReqs(from *ClientLink, lrs []LinkRequest) {
	s.mu.Lock()
	s.reqs = append(s.reqs, lrs...)
	for range lrs {
		s.from = append(s.from, from)
	}
	s.mu.Unlock()
}

func (s *linkSink) counts() (pushes, reqs int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pushes), len(s.reqs)
}

// linkPair starts a replica host and a client host bootstrapped to it.
func linkPair(t *testing.T, name string) (replica, client *Host, g *identity.Genesis) {
	keys := testKeys(t, name, 1)
	g = testGenesis(t, name+"-chain", keys)
	replica = startHost(t, baseConfig(t, keys[0], g))
	ccfg := baseConfig(t, testKeys(t, name+"-client", 1)[0], g)
	ccfg.Bootstrap = []string{replica.Addrs()[0].String()}
	client = startHost(t, ccfg)
	return replica, client, g
}

// A client key's hello routes the replica's pushes for that key to the link it came on; the link's
// requests reach the handler verified, with the link to answer on.
func TestLinkRoutesRepliesByHello(t *testing.T) {
	r, c, g := linkPair(t, "link")
	sess := testKeys(t, "link-session", 2)
	var rs, cs linkSink
	r.SetLinkHandler(rs.onReqs)
	hello, err := c.SignHello(sess[0])
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.NewLink(r.ID(), []*wire.Envelope{hello}, cs.onPush)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.WaitUp(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "hello routed", func() bool { return r.LinkFor(sess[0].PublicKey()) != nil })
	if r.LinkFor(sess[1].PublicKey()) != nil {
		t.Fatal("a key that sent no hello is routed")
	}
	for i := range 50 {
		if err := l.Send(seal(t, sess[i%2], g.ChainID(), wire.KindRequest, fmt.Sprint("req", i))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "requests delivered", func() bool { _, n := rs.counts(); return n == 50 })
	rs.mu.Lock()
	from := rs.from[0]
	for _, lr := range rs.reqs {
		routed := bytes.Equal(lr.Envelope.Author, sess[0].PublicKey())
		if lr.Routed != routed || lr.Retry {
			t.Fatalf("request of %x: routed %v, retry %v", lr.Envelope.Author[:4], lr.Routed, lr.Retry)
		}
	}
	rs.mu.Unlock()
	// A retransmission is marked as one.
	f, err := c.EncodeLinkFrame(seal(t, sess[0], g.ChainID(), wire.KindRequest, "again"))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.SendFrame(f.Retry()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "retry delivered", func() bool { _, n := rs.counts(); return n == 51 })
	if lr := rs.reqs[50]; !lr.Retry || !lr.Routed {
		t.Fatalf("retransmission delivered as %+v", lr)
	}
	if from.Peer() != c.ID() || r.LinkFor(sess[0].PublicKey()) != from {
		t.Fatal("the handler's link is not the one the hello routes to")
	}
	if !r.LinkFor(sess[0].PublicKey()).Push([]byte("reply")) {
		t.Fatal("push refused")
	}
	waitFor(t, 10*time.Second, "push received", func() bool { n, _ := cs.counts(); return n == 1 })
	if cs.pushes[0] != "reply" {
		t.Fatalf("pushed %q", cs.pushes[0])
	}
	// The link ends: its keys are no longer routed.
	l.Close()
	waitFor(t, 10*time.Second, "route dropped", func() bool { return r.LinkFor(sess[0].PublicKey()) == nil })
}

// A request sent the moment a link comes up reaches the handler with its author already routed: the
// hello before it on the stream is routed before the request is handed on, so a replica that answers at
// once finds the link (Host.LinkFor). Each round opens a new link with many keys' hellos.
func TestLinkHelloRoutedBeforeRequests(t *testing.T) {
	r, c, g := linkPair(t, "order")
	sess := testKeys(t, "order-session", 32)
	var hellos []*wire.Envelope
	for _, k := range sess {
		h, err := c.SignHello(k)
		if err != nil {
			t.Fatal(err)
		}
		hellos = append(hellos, h)
	}
	var mu sync.Mutex
	unrouted, delivered := 0, 0
	r.SetLinkHandler(func(from *ClientLink, lrs []LinkRequest) {
		mu.Lock()
		defer mu.Unlock()
		delivered += len(lrs)
		for _, lr := range lrs {
			if !lr.Routed || r.LinkFor(lr.Envelope.Author) != from {
				unrouted++
			}
		}
	})
	for round := range 5 {
		l, err := c.NewLink(r.ID(), hellos, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.WaitUp(ctxFor(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
		for i, k := range sess {
			if err := l.Send(seal(t, k, g.ChainID(), wire.KindRequest, fmt.Sprint("req", round, i))); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, 10*time.Second, "requests delivered", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return delivered == (round+1)*len(sess)
		})
		l.Close()
		waitFor(t, 10*time.Second, "route dropped", func() bool { return r.LinkFor(sess[0].PublicKey()) == nil })
	}
	mu.Lock()
	defer mu.Unlock()
	if unrouted > 0 {
		t.Fatalf("%d requests reached the handler before their author's hello was routed", unrouted)
	}
}

// A hello names the client host it was signed for: replayed by another host it is refused, and a key
// cannot be claimed without its private key (a bad signature), so nobody can take another's replies.
func TestLinkHelloReplayRefused(t *testing.T) {
	r, c, g := linkPair(t, "replay")
	other := startHost(t, func() Config {
		cfg := baseConfig(t, testKeys(t, "replay-other", 1)[0], g)
		cfg.Bootstrap = []string{r.Addrs()[0].String()}
		return cfg
	}())
	sess := testKeys(t, "replay-session", 1)[0]
	stolen, err := c.SignHello(sess) // signed for c, sent by other
	if err != nil {
		t.Fatal(err)
	}
	forged := &wire.Envelope{ChainID: g.ChainID(), Kind: wire.KindHello, Author: sess.PublicKey(),
		Payload: []byte(other.ID()), Sig: make([]byte, wire.SignatureSize)}
	l, err := other.NewLink(r.ID(), []*wire.Envelope{stolen, forged}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.WaitUp(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "both hellos refused", func() bool {
		st := r.Stats()
		return st.Total(Rejected, ReasonMalformed) >= 1 && st.Total(Rejected, ReasonSignature) >= 1
	})
	if r.LinkFor(sess.PublicKey()) != nil {
		t.Fatal("a replayed or forged hello routed the key")
	}
}

// Bad envelopes on a link are refused one by one and counted; the requests around them are delivered with
// their signatures unverified (the handler's to check: VerifyBatch finds the bad one), and the link stays
// up.
func TestLinkRefusesBadEnvelopes(t *testing.T) {
	r, c, g := linkPair(t, "bad")
	replicaKey := testKeys(t, "bad", 1)[0]
	sess := testKeys(t, "bad-session", 1)[0]
	var rs linkSink
	r.SetLinkHandler(rs.onReqs)
	l, err := c.NewLink(r.ID(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.WaitUp(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	badSig := seal(t, sess, g.ChainID(), wire.KindRequest, "bad")
	badSig.Sig = append([]byte(nil), badSig.Sig...)
	badSig.Sig[5] ^= 1
	for _, e := range []*wire.Envelope{
		seal(t, sess, g.ChainID(), wire.KindRequest, "good-1"),
		badSig,
		seal(t, sess, g.ChainID(), wire.KindCommit, "client commit"),        // a replica kind from a client key
		seal(t, replicaKey, g.ChainID(), wire.KindCommit, "replica commit"), // not a client kind: not on links
		seal(t, sess, g.ChainID(), wire.KindRequest, "good-2"),
	} {
		if err := l.Send(e); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "requests delivered", func() bool { _, n := rs.counts(); return n == 3 })
	st := r.Stats()
	for reason, want := range map[Reason]uint64{ReasonNonMember: 1, ReasonKind: 1} {
		if got := st.Total(Rejected, reason); got != want {
			t.Errorf("rejected for %s: %d, want %d", reason, got, want)
		}
	}
	// Read batches are handed on in parallel: the requests may arrive in any order.
	rs.mu.Lock()
	envs := make([]*wire.Envelope, len(rs.reqs))
	for i, lr := range rs.reqs {
		if lr.Routed {
			t.Fatal("a key that sent no hello is routed")
		}
		envs[i] = lr.Envelope
	}
	rs.mu.Unlock()
	for i, ok := range r.VerifyBatch(envs) {
		if want := !bytes.Equal(envs[i].Payload, []byte("bad")); ok != want {
			t.Fatalf("VerifyBatch says %v for the request %q, want %v", ok, envs[i].Payload, want)
		}
	}
	if !l.Up() || l.Opened() != 1 {
		t.Fatalf("link up %v, opened %d times", l.Up(), l.Opened())
	}
}

// A link reopens when the replica restarts and writes its hellos again, so replies route again.
func TestLinkReconnects(t *testing.T) {
	keys := testKeys(t, "reconnect", 1)
	g := testGenesis(t, "reconnect-chain", keys)
	rcfg := baseConfig(t, keys[0], g)
	r := startHost(t, rcfg)
	addr := r.Addrs()[0]
	ccfg := baseConfig(t, testKeys(t, "reconnect-client", 1)[0], g)
	ccfg.Bootstrap = []string{addr.String()}
	c := startHost(t, ccfg)
	sess := testKeys(t, "reconnect-session", 1)[0]
	hello, _ := c.SignHello(sess)
	var cs linkSink
	l, err := c.NewLink(r.ID(), []*wire.Envelope{hello}, cs.onPush)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	waitFor(t, 10*time.Second, "routed", func() bool { return r.LinkFor(sess.PublicKey()) != nil })
	r.Close()
	waitFor(t, 10*time.Second, "link down", func() bool { return !l.Up() })
	if err := l.Send(seal(t, sess, g.ChainID(), wire.KindRequest, "x")); err == nil {
		t.Fatal("send on a down link succeeded")
	}
	rcfg.ListenAddrs = []string{strings.TrimSuffix(addr.String(), "/p2p/"+r.ID().String())}
	r2 := startHost(t, rcfg)
	waitFor(t, 20*time.Second, "routed again", func() bool { return r2.LinkFor(sess.PublicKey()) != nil })
	if l.Opened() < 2 {
		t.Fatalf("opened %d streams", l.Opened())
	}
	r2.LinkFor(sess.PublicKey()).Push([]byte("again"))
	waitFor(t, 10*time.Second, "push after reconnect", func() bool { n, _ := cs.counts(); return n == 1 })
}

// A full push queue drops the push and counts it; an ended link refuses pushes.
func TestLinkPushQueueFull(t *testing.T) {
	r, _, _ := linkPair(t, "full")
	ctx, cancel := context.WithCancel(context.Background())
	c := &ClientLink{h: r, out: make(chan []byte, 1), ctx: ctx, keys: map[string]bool{}}
	if !c.Push([]byte("a")) || c.Push([]byte("b")) {
		t.Fatal("a queue of one took two pushes")
	}
	if r.Stats().Drops[DropLinkQueue] != 1 {
		t.Fatalf("drops %v", r.Stats().Drops)
	}
	cancel()
	<-c.out
	if c.Push([]byte("c")) {
		t.Fatal("an ended link took a push")
	}
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// A link to a replica that nothing listens for reports the dial's own error (connection refused), also
// when another dial to the replica failed just before and the swarm would refuse the next ones for its
// backoff: the link keeps its own backoff, and a "dial backoff" says nothing about the replica.
func TestLinkReportsTheDialErrorNotTheBackoff(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	closed, err := multiaddr.NewMultiaddr(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port))
	if err != nil {
		t.Fatal(err)
	}
	replica := testKeys(t, "refused", 1)[0]
	g, err := identity.NewGenesis("refused-chain", []identity.Replica{{Name: "r0", PeerID: replica.PeerID(), Addrs: []multiaddr.Multiaddr{closed}}})
	if err != nil {
		t.Fatal(err)
	}
	// The host's discovery dials the replica once at start and then not for an hour; that failed dial
	// puts the replica's address in the swarm's backoff, which a probe confirms.
	cfg := baseConfig(t, testKeys(t, "refused-client", 1)[0], g)
	cfg.RedialMin, cfg.RedialMax = time.Hour, 4*time.Hour
	c := startHost(t, cfg)
	waitFor(t, 20*time.Second, "the replica's address in the swarm's dial backoff", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.LibP2P().NewStream(ctx, replica.PeerID(), c.linkProto)
		return errors.Is(err, swarm.ErrDialBackoff)
	})
	l, err := c.NewLink(replica.PeerID(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var lastErr error
	waitFor(t, 20*time.Second, "a failed attempt of the link", func() bool {
		var n int
		n, lastErr = l.DialFailures()
		return n > 0
	})
	if msg := lastErr.Error(); !strings.Contains(msg, "connection refused") || strings.Contains(msg, "dial backoff") {
		t.Fatalf("the link's error does not say why the replica is unreachable: %v", lastErr)
	}
}
