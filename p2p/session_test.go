package p2p

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/multiformats/go-multiaddr"

	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/wire"
)

// sessionPair starts one replica (a genesis of one) and one client host connected to it.
func sessionPair(t *testing.T, name string, mutate func(*Config)) (replica, client *Host, rk, ck *identity.Key, g *identity.Genesis) {
	t.Helper()
	rk = testKeys(t, name, 1)[0]
	ck = testKeys(t, name+"-client", 1)[0]
	g = testGenesis(t, name+"-chain", []*identity.Key{rk})
	cfg := baseConfig(t, rk, g)
	if mutate != nil {
		mutate(&cfg)
	}
	replica = startHost(t, cfg)
	ccfg := baseConfig(t, ck, g)
	ccfg.Bootstrap = []string{replica.Addrs()[0].String()}
	client = startHost(t, ccfg)
	waitFor(t, 10*time.Second, "client connected", func() bool { return len(client.ConnectedReplicas()) == 1 })
	return replica, client, rk, ck, g
}

// sessionStreams counts the client's open session streams to p.
func sessionStreams(h *Host, p peer.ID) int {
	n := 0
	for _, c := range h.LibP2P().Network().ConnsToPeer(p) {
		for _, s := range c.GetStreams() {
			if s.Protocol() == h.sessProto {
				n++
			}
		}
	}
	return n
}

// TestSessionPipelinedOutOfOrder: many callers share one session stream; the server answers in the
// reverse order of arrival, and every caller gets its own response.
func TestSessionPipelinedOutOfOrder(t *testing.T) {
	const n = 40
	replica, client, rk, ck, g := sessionPair(t, "sess-order", nil)
	var mu sync.Mutex
	arrived := 0
	gates := make([]chan struct{}, n) // gates[k] releases the k-th arrival
	for i := range gates {
		gates[i] = make(chan struct{})
	}
	var answered []int
	replica.SetRequestHandler(func(ctx context.Context, d Delivery) (*wire.Envelope, error) {
		mu.Lock()
		k := arrived
		arrived++
		if arrived == n { // all in: release the last arrival first
			close(gates[n-1])
		}
		mu.Unlock()
		select {
		case <-gates[k]:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		mu.Lock()
		answered = append(answered, k)
		mu.Unlock()
		resp, err := wire.Seal(rk, g.ChainID(), wire.KindReply, append([]byte("re:"), d.Envelope.Payload...))
		if k > 0 {
			close(gates[k-1]) // the previous arrival answers after this one
		}
		return resp, err
	})
	s := client.NewSession(replica.ID())
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			op := fmt.Sprintf("op-%d", i)
			resp, err := s.Send(ctx, seal(t, ck, g.ChainID(), wire.KindRequest, op))
			if err != nil {
				errs <- fmt.Errorf("%s: %w", op, err)
				return
			}
			if string(resp.Payload) != "re:"+op {
				errs <- fmt.Errorf("%s: got response %q", op, resp.Payload)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i, k := range answered {
		if k != n-1-i {
			t.Fatalf("answer order %v, want the reverse of arrival", answered)
		}
	}
	if got := sessionStreams(client, replica.ID()); got != 1 {
		t.Fatalf("%d session streams open, want 1", got)
	}
	if got := replica.Stats().ForPeer(client.ID(), Accepted); got != n {
		t.Fatalf("%d requests accepted, want %d", got, n)
	}
}

// TestSessionPerRequestErrors: a handler error, a refused request, a forged response and a caller's
// deadline each fail only their own request; the session keeps serving.
func TestSessionPerRequestErrors(t *testing.T) {
	replica, client, rk, ck, g := sessionPair(t, "sess-err", nil)
	other := testKeys(t, "sess-err-other", 1)[0]
	replica.SetRequestHandler(func(ctx context.Context, d Delivery) (*wire.Envelope, error) {
		switch string(d.Envelope.Payload) {
		case "fail":
			return nil, errors.New("no such block")
		case "impostor":
			return wire.Seal(other, g.ChainID(), wire.KindReply, []byte("forged"))
		case "slow":
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return wire.Seal(rk, g.ChainID(), wire.KindReply,
			[]byte(fmt.Sprintf("answer to %s from author %d via %s", d.Envelope.Payload, d.Author, d.Via)))
	})
	s := client.NewSession(replica.ID())
	defer s.Close()
	ctx := context.Background()
	resp, err := s.Send(ctx, seal(t, ck, g.ChainID(), wire.KindRequest, "hello"))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(resp.Payload); got != "answer to hello from author -1 via request" {
		t.Fatalf("response %q", got)
	}
	var re *RemoteError
	if _, err := s.Send(ctx, seal(t, ck, g.ChainID(), wire.KindRequest, "fail")); !errors.As(err, &re) || !strings.Contains(re.Msg, "no such block") {
		t.Fatalf("handler error: got %v", err)
	}
	if _, err := s.Send(ctx, seal(t, ck, g.ChainID(), wire.KindRequest, "impostor")); err == nil || !strings.Contains(err.Error(), "another key") {
		t.Fatalf("response signed by another key: got %v", err)
	}
	bad := seal(t, ck, g.ChainID(), wire.KindRequest, "forged request")
	bad.Sig = append([]byte(nil), bad.Sig...)
	bad.Sig[3] ^= 1
	if _, err := s.Send(ctx, bad); !errors.As(err, &re) || !strings.Contains(re.Msg, "signature") {
		t.Fatalf("forged request: got %v", err)
	}
	if got := replica.Stats().Total(Rejected, ReasonSignature); got != 1 {
		t.Fatalf("%d signature rejections counted, want 1", got)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := s.Send(short, seal(t, ck, g.ChainID(), wire.KindRequest, "slow")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow handler: got %v", err)
	}
	if _, err := s.Send(ctx, seal(t, ck, g.ChainID(), wire.KindRequest, "still there")); err != nil {
		t.Fatalf("after the errors: %v", err)
	}
	if got := sessionStreams(client, replica.ID()); got != 1 {
		t.Fatalf("%d session streams, want 1 (errors must not break the stream)", got)
	}
	for _, c := range replica.Stats().Messages {
		if c.Source != string(replica.sessProto) {
			t.Errorf("counted under %q, want the session protocol", c.Source)
		}
	}
	// No handler: an error response.
	replica2, client2, _, ck2, g2 := sessionPair(t, "sess-nohandler", nil)
	s2 := client2.NewSession(replica2.ID())
	defer s2.Close()
	if _, err := s2.Send(ctx, seal(t, ck2, g2.ChainID(), wire.KindRequest, "x")); !errors.As(err, &re) || !strings.Contains(re.Msg, "no request handler") {
		t.Fatalf("no handler: got %v", err)
	}
}

// TestSessionRejectsBadFrames: garbage inside a well-formed frame gets an error response and is counted;
// frames that break the framing (over the client limit, empty, no request number) reset the stream and
// are counted.
func TestSessionRejectsBadFrames(t *testing.T) {
	replica, client, rk, ck, g := sessionPair(t, "sess-bad", func(c *Config) { c.MaxClientMessageSize = 4096 })
	replica.SetRequestHandler(func(ctx context.Context, d Delivery) (*wire.Envelope, error) {
		return wire.Seal(rk, g.ChainID(), wire.KindReply, d.Envelope.Payload)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	open := func() network.Stream {
		st, err := client.LibP2P().NewStream(ctx, replica.ID(), replica.sessProto)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	readResp := func(st network.Stream) (uint64, []byte) {
		t.Helper()
		_ = st.SetReadDeadline(time.Now().Add(10 * time.Second))
		body, err := readFrame(st, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		id, resp, err := decodeSessionResponse(body)
		if err != nil {
			t.Fatal(err)
		}
		return id, resp
	}
	// Garbage envelope: an error response for its request number, and the stream goes on.
	st := open()
	if err := writeFrame(st, append(appendSessionID(nil, 7), "not an envelope"...)); err != nil {
		t.Fatal(err)
	}
	id, resp := readResp(st)
	var re *RemoteError
	if _, err := decodeResponse(resp); id != 7 || !errors.As(err, &re) || !strings.Contains(re.Msg, "malformed") {
		t.Fatalf("garbage request: id %d, %v", id, err)
	}
	good := append(appendSessionID(nil, 8), marshal(t, seal(t, ck, g.ChainID(), wire.KindRequest, "good"))...)
	if err := writeFrame(st, good); err != nil {
		t.Fatal(err)
	}
	if id, resp := readResp(st); id != 8 {
		t.Fatalf("response for %d, want 8", id)
	} else if e, err := decodeResponse(resp); err != nil || string(e.Payload) != "good" {
		t.Fatalf("good request after garbage: %v", err)
	}
	if got := replica.Stats().Total(Rejected, ReasonMalformed); got != 1 {
		t.Fatalf("%d malformed counted, want 1", got)
	}
	// Over the client limit (request number included): refused from the header, stream reset.
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], 4096+sessionIDSize+1)
	st.Write(hdr[:])
	waitFor(t, 10*time.Second, "oversized frame counted", func() bool { return replica.Stats().Total(Rejected, ReasonOversized) == 1 })
	_ = st.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := readFrame(st, 1<<20); err == nil {
		t.Fatal("stream still open after an oversized frame")
	}
	st.Reset()
	// An empty frame, and a frame too short to carry a request number.
	for i, frame := range [][]byte{{0, 0, 0, 0}, {0, 0, 0, 3, 1, 2, 3}} {
		st := open()
		st.Write(frame)
		waitFor(t, 10*time.Second, "bad frame counted", func() bool {
			return replica.Stats().Total(Rejected, ReasonMalformed) == uint64(2+i)
		})
		_ = st.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := readFrame(st, 1<<20); err == nil {
			t.Fatal("stream still open after a bad frame")
		}
		st.Reset()
	}
	// A too-large request through a Session is refused by the server (its frame header) and the caller
	// learns it from the reset.
	s := client.NewSession(replica.ID())
	defer s.Close()
	if _, err := s.Send(ctx, seal(t, ck, g.ChainID(), wire.KindRequest, strings.Repeat("x", 5000))); err == nil {
		t.Fatal("oversized request answered")
	}
	waitFor(t, 10*time.Second, "oversized session request counted", func() bool {
		return replica.Stats().Total(Rejected, ReasonOversized) == 2
	})
	if _, err := s.Send(ctx, seal(t, ck, g.ChainID(), wire.KindRequest, "small again")); err != nil {
		t.Fatalf("after the reset, the session did not reopen: %v", err)
	}
}

// TestSessionLimits: a non-replica peer's sessions count against its stream limit, and a session holds
// at most SessionWindow requests in the handler at once (the rest wait, unread, and are served later).
func TestSessionLimits(t *testing.T) {
	const window = 3
	replica, client, rk, ck, g := sessionPair(t, "sess-limits", func(c *Config) {
		c.MaxClientStreamsPerPeer = 1
		c.SessionWindow = window
	})
	release := make(chan struct{})
	var inHandler, peak atomic.Int32
	replica.SetRequestHandler(func(ctx context.Context, d Delivery) (*wire.Envelope, error) {
		n := inHandler.Add(1)
		defer inHandler.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return wire.Seal(rk, g.ChainID(), wire.KindReply, d.Envelope.Payload)
	})
	s := client.NewSession(replica.ID())
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const n = 10
	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Send(ctx, seal(t, ck, g.ChainID(), wire.KindRequest, fmt.Sprint(i))); err != nil {
				t.Errorf("request %d: %v", i, err)
				failed.Add(1)
			}
		}()
	}
	waitFor(t, 10*time.Second, "the window filled", func() bool { return inHandler.Load() == window })
	// A second session from the same peer is over its stream limit.
	s2 := client.NewSession(replica.ID())
	defer s2.Close()
	if _, err := s2.Send(ctx, seal(t, ck, g.ChainID(), wire.KindRequest, "second session")); err == nil {
		t.Fatal("a second session was served over the per-peer stream limit")
	}
	waitFor(t, 10*time.Second, "stream limit counted", func() bool { return replica.Stats().Drops[DropStreamLimit] >= 1 })
	close(release)
	wg.Wait()
	if p := peak.Load(); p != window {
		t.Fatalf("peak of %d requests in the handler, want the window %d", p, window)
	}
	if got := replica.Stats().ForPeer(client.ID(), Accepted); got != n {
		t.Fatalf("%d accepted, want %d", got, n)
	}
}

// TestSessionReconnectsAfterServerRestart: the server host stops and a new one with the same key starts;
// the session notices the broken stream and opens a new one.
func TestSessionReconnectsAfterServerRestart(t *testing.T) {
	replica, client, rk, ck, g := sessionPair(t, "sess-restart", nil)
	handler := func(ctx context.Context, d Delivery) (*wire.Envelope, error) {
		return wire.Seal(rk, g.ChainID(), wire.KindReply, d.Envelope.Payload)
	}
	replica.SetRequestHandler(handler)
	s := client.NewSession(replica.ID())
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Send(ctx, seal(t, ck, g.ChainID(), wire.KindRequest, "before")); err != nil {
		t.Fatal(err)
	}
	if err := replica.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the client noticed", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		select {
		case <-s.cur.dead:
			return true
		default:
			return false
		}
	})
	if _, err := s.Send(ctx, seal(t, ck, g.ChainID(), wire.KindRequest, "while down")); err == nil {
		t.Fatal("a request was answered while the server was down")
	}
	restarted := startHost(t, baseConfig(t, rk, g))
	restarted.SetRequestHandler(handler)
	client.LibP2P().Peerstore().AddAddrs(restarted.ID(), restarted.LibP2P().Addrs(), peerstore.PermanentAddrTTL)
	var resp *wire.Envelope
	waitFor(t, 20*time.Second, "a request answered after the restart", func() bool {
		var err error
		resp, err = s.Send(ctx, seal(t, ck, g.ChainID(), wire.KindRequest, "after"))
		return err == nil
	})
	if string(resp.Payload) != "after" {
		t.Fatalf("response %q", resp.Payload)
	}
}

// TestSessionIdleClose: the server closes a session that sent nothing for StreamIdleTimeout; the next
// Send opens a new stream.
func TestSessionIdleClose(t *testing.T) {
	replica, client, rk, ck, g := sessionPair(t, "sess-idle", func(c *Config) { c.StreamIdleTimeout = 300 * time.Millisecond })
	replica.SetRequestHandler(func(ctx context.Context, d Delivery) (*wire.Envelope, error) {
		return wire.Seal(rk, g.ChainID(), wire.KindReply, d.Envelope.Payload)
	})
	s := client.NewSession(replica.ID())
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := s.Send(ctx, seal(t, ck, g.ChainID(), wire.KindRequest, "one")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "idle session closed by the server", func() bool {
		replica.streamsMu.Lock()
		defer replica.streamsMu.Unlock()
		return replica.clientStreamsPer[client.ID()] == 0
	})
	waitFor(t, 10*time.Second, "the client noticed", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		select {
		case <-s.cur.dead:
			return true
		default:
			return false
		}
	})
	if _, err := s.Send(ctx, seal(t, ck, g.ChainID(), wire.KindRequest, "two")); err != nil {
		t.Fatalf("after the idle close: %v", err)
	}
}

// TestSessionClose: closing a session fails its outstanding requests at once and refuses new ones;
// closing the hosts with requests outstanding ends every goroutine (TestMain checks for leaks).
func TestSessionClose(t *testing.T) {
	replica, client, _, ck, g := sessionPair(t, "sess-close", nil)
	var inHandler atomic.Int32
	replica.SetRequestHandler(func(ctx context.Context, d Delivery) (*wire.Envelope, error) {
		inHandler.Add(1)
		<-ctx.Done()
		return nil, ctx.Err()
	})
	s := client.NewSession(replica.ID())
	ctx := context.Background()
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := s.Send(ctx, seal(t, ck, g.ChainID(), wire.KindRequest, "stuck"))
			errs <- err
		}()
	}
	waitFor(t, 10*time.Second, "requests in the handler", func() bool { return inHandler.Load() == 2 })
	s.Close()
	for range 2 {
		if err := <-errs; !errors.Is(err, ErrSessionClosed) {
			t.Fatalf("outstanding request after Close: %v, want ErrSessionClosed", err)
		}
	}
	if _, err := s.Send(ctx, seal(t, ck, g.ChainID(), wire.KindRequest, "late")); !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
	// The server ends the handlers of a reset session.
	waitFor(t, 10*time.Second, "server session released", func() bool {
		replica.streamsMu.Lock()
		defer replica.streamsMu.Unlock()
		return replica.clientStreamsPer[client.ID()] == 0
	})
	// Host.Close with requests outstanding on a session that is never closed.
	s2 := client.NewSession(replica.ID())
	for range 2 {
		go func() {
			_, err := s2.Send(ctx, seal(t, ck, g.ChainID(), wire.KindRequest, "stuck again"))
			errs <- err
		}()
	}
	waitFor(t, 10*time.Second, "requests in the handler", func() bool { return inHandler.Load() == 4 })
	if err := replica.Close(); err != nil {
		t.Fatal(err)
	}
	if err := client.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-errs; err == nil {
			t.Fatal("a request succeeded across Close")
		}
	}
	if _, err := s2.Send(ctx, seal(t, ck, g.ChainID(), wire.KindRequest, "closed")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send on a closed host: %v", err)
	}
}

// TestSessionDialDoesNotHoldUpOthers: while one caller dials a peer that never completes the handshake,
// another caller of the same session returns when its own context ends.
func TestSessionDialDoesNotHoldUpOthers(t *testing.T) {
	keys := testKeys(t, "sess-dial", 1)
	ck := testKeys(t, "sess-dial-client", 1)[0]
	g := testGenesis(t, "sess-dial-chain", keys)
	// A TCP listener that accepts and says nothing: the libp2p handshake hangs until the dial's context
	// or DialTimeout ends.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	var held []net.Conn
	var heldMu sync.Mutex
	conns.Add(1)
	go func() {
		defer conns.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			heldMu.Lock()
			held = append(held, c)
			heldMu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		conns.Wait()
		heldMu.Lock()
		for _, c := range held {
			c.Close()
		}
		heldMu.Unlock()
	})
	client := startHost(t, baseConfig(t, ck, g))
	addr, err := multiaddr.NewMultiaddr(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", ln.Addr().(*net.TCPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	client.LibP2P().Peerstore().AddAddrs(keys[0].PeerID(), []multiaddr.Multiaddr{addr}, peerstore.PermanentAddrTTL)
	s := client.NewSession(keys[0].PeerID())
	defer s.Close()
	long, cancelLong := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancelLong()
	first := make(chan error, 1)
	go func() {
		_, err := s.Send(long, seal(t, ck, g.ChainID(), wire.KindRequest, "first"))
		first <- err
	}()
	waitFor(t, 10*time.Second, "the first caller dialling", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.opening != nil
	})
	short, cancelShort := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancelShort()
	start := time.Now()
	if _, err := s.Send(short, seal(t, ck, g.ChainID(), wire.KindRequest, "second")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second caller: %v, want its deadline", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the second caller waited %s for the first one's dial", d)
	}
	cancelLong()
	if err := <-first; err == nil {
		t.Fatal("the dial to a silent listener succeeded")
	}
}
