package p2p

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/wire"
)

// rogue is a bare libp2p host speaking our gossip protocol without any validation: it publishes whatever
// bytes a test gives it. It plays a Byzantine replica (it holds a replica's key, so the honest hosts
// accept it as a gossip peer).
type rogue struct {
	h     host.Host
	ps    *pubsub.PubSub
	topic *pubsub.Topic
	sub   *pubsub.Subscription
	stop  context.CancelFunc
}

func newRogue(t *testing.T, key *identity.Key, chain string, direct []peer.ID) *rogue {
	t.Helper()
	lh, err := libp2p.New(libp2p.Identity(key.LibP2P()), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.DisableRelay(), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	protoID := protocol.ID("/p2pbft/" + chain + "/meshsub/1.2.0")
	var dp []peer.AddrInfo
	for _, p := range direct {
		dp = append(dp, peer.AddrInfo{ID: p})
	}
	params := pubsub.DefaultGossipSubParams()
	params.DirectConnectInitialDelay = 0
	ps, err := pubsub.NewGossipSub(ctx, lh,
		pubsub.WithGossipSubProtocols([]protocol.ID{protoID}, func(f pubsub.GossipSubFeature, p protocol.ID) bool {
			return p == protoID && f == pubsub.GossipSubFeatureMesh
		}),
		pubsub.WithGossipSubParams(params),
		pubsub.WithMessageIdFn(messageID),
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign), pubsub.WithNoAuthor(),
		pubsub.WithMaxMessageSize(8<<20),
		pubsub.WithDirectPeers(dp))
	if err != nil {
		t.Fatal(err)
	}
	topic, err := ps.Join(TopicName(chain))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := topic.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	r := &rogue{h: lh, ps: ps, topic: topic, sub: sub, stop: cancel}
	t.Cleanup(r.close)
	return r
}

func (r *rogue) close() {
	r.sub.Cancel()
	r.topic.Close()
	r.stop()
	r.h.Close()
}

func (r *rogue) connect(t *testing.T, h *Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.h.Connect(ctx, peer.AddrInfo{ID: h.ID(), Addrs: h.LibP2P().Addrs()}); err != nil {
		t.Fatal(err)
	}
}

func (r *rogue) publish(t *testing.T, data []byte) {
	t.Helper()
	if err := r.topic.Publish(context.Background(), data); err != nil {
		t.Fatalf("rogue publish: %v", err)
	}
}

func marshal(t testing.TB, e *wire.Envelope) []byte {
	t.Helper()
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// badMessages returns, by the reason the hosts must reject them for, messages a Byzantine replica might
// send. key is the rogue's (replica) key; outsider is a key outside the genesis.
func badMessages(t *testing.T, chain string, key, outsider *identity.Key, maxSize int) map[Reason][][]byte {
	good := seal(t, key, chain, wire.KindPrepare, "good")
	badSig := seal(t, key, chain, wire.KindPrepare, "bad signature")
	badSig.Sig = bytes.Clone(badSig.Sig)
	badSig.Sig[5] ^= 0x10
	forgedAuthor := seal(t, outsider, chain, wire.KindPrepare, "forged")
	forgedAuthor.Author = key.PublicKey() // claims to be the replica, signed by someone else
	goodBytes := marshal(t, good)
	unknownKind, _ := wire.Marshal([]any{chain, uint16(999), key.PublicKey(), []byte("x"), make([]byte, 64), []byte(nil), uint32(0)})
	random := make([]byte, 300)
	for i := range random {
		random[i] = byte(i*7 + 3)
	}
	big := seal(t, key, chain, wire.KindPrepare, string(make([]byte, maxSize+1000)))
	return map[Reason][][]byte{
		ReasonSignature: {marshal(t, badSig), marshal(t, forgedAuthor)},
		ReasonNonMember: {marshal(t, seal(t, outsider, chain, wire.KindCommit, "non-member"))},
		ReasonChain:     {marshal(t, seal(t, key, "other-chain", wire.KindPrepare, "other chain"))},
		ReasonMalformed: {goodBytes[:len(goodBytes)-10], random, append(bytes.Clone(goodBytes), 0)},
		ReasonKind:      {unknownKind},
		ReasonOversized: {marshal(t, big)},
	}
}

// TestGossipRejectsBadMessages has a Byzantine replica publish malformed, forged, foreign and oversized
// messages on the topic. The honest hosts must reject each one with the right reason, count it against
// the rogue's peer ID, and deliver none of them; a valid message from the same rogue still gets through.
func TestGossipRejectsBadMessages(t *testing.T) {
	keys := testKeys(t, "reject", 4)
	outsider := testKeys(t, "outsider", 1)[0]
	g := testGenesis(t, "reject-chain", keys)
	const maxSize = 64 << 10
	hosts := startChain(t, keys[:3], g, func(i int, c *Config) { c.MaxMessageSize = maxSize; c.MaxClientMessageSize = 16 << 10 })
	inboxes := []*inbox{collect(t, hosts[0]), collect(t, hosts[1]), collect(t, hosts[2])}
	waitMesh(t, hosts, 20*time.Second)

	r := newRogue(t, keys[3], g.ChainID(), peerIDs(hosts))
	r.connect(t, hosts[0])
	waitFor(t, 20*time.Second, "rogue in every host's topic", func() bool {
		for _, h := range hosts {
			if len(h.MeshPeers()) != 3 {
				return false
			}
		}
		return len(r.topic.ListPeers()) == 3
	})

	bad := badMessages(t, g.ChainID(), keys[3], outsider, maxSize)
	want := map[Reason]uint64{}
	for reason, msgs := range bad {
		for _, m := range msgs {
			r.publish(t, m)
			want[reason]++
		}
	}
	r.publish(t, marshal(t, seal(t, keys[3], g.ChainID(), wire.KindPrepare, "valid")))

	for i, h := range hosts {
		waitFor(t, 10*time.Second, "valid rogue message delivered", func() bool { return inboxes[i].count(payloadIs("valid")) == 1 })
		waitFor(t, 10*time.Second, "every bad message counted", func() bool {
			s := h.Stats()
			for reason, n := range want {
				if s.Total(Rejected, reason) < n {
					return false
				}
			}
			return true
		})
		s := h.Stats()
		for reason, n := range want {
			if got := s.Total(Rejected, reason); got != n {
				t.Errorf("host %d: %d rejected for %s, want %d", i, got, reason, n)
			}
		}
		var total uint64
		for _, n := range want {
			total += n
		}
		if got := s.ForPeer(r.h.ID(), Rejected); got != total {
			t.Errorf("host %d: %d rejections counted against the rogue, want %d", i, got, total)
		}
		// The valid message may reach a host first through another honest host: count it from anyone.
		if got := s.Total(Accepted, ReasonNone); got != 1 {
			t.Errorf("host %d: %d accepted, want 1", i, got)
		}
		if n := inboxes[i].count(nil); n != 1 {
			t.Errorf("host %d: %d deliveries, want only the valid one: %+v", i, n, inboxes[i].all())
		}
	}
}

// TestDirectStreamRejectsBadMessages sends the same bad messages as frames on a direct stream, plus
// frames that break the framing itself.
func TestDirectStreamRejectsBadMessages(t *testing.T) {
	keys := testKeys(t, "direct-reject", 4)
	outsider := testKeys(t, "outsider", 1)[0]
	g := testGenesis(t, "direct-chain", keys)
	const maxSize = 64 << 10
	h := startHost(t, func() Config {
		c := baseConfig(t, keys[0], g)
		c.MaxMessageSize = maxSize
		c.MaxClientMessageSize = 16 << 10
		return c
	}())
	in := collect(t, h)
	r := newRogue(t, keys[3], g.ChainID(), nil)
	r.connect(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := r.h.NewStream(ctx, h.ID(), h.msgProto)
	if err != nil {
		t.Fatal(err)
	}
	bad := badMessages(t, g.ChainID(), keys[3], outsider, maxSize)
	want := map[Reason]uint64{}
	for reason, msgs := range bad {
		if reason == ReasonOversized {
			continue // below: it ends the stream
		}
		for _, m := range msgs {
			if err := writeFrame(s, m); err != nil {
				t.Fatal(err)
			}
			want[reason]++
		}
	}
	if err := writeFrame(s, marshal(t, seal(t, keys[3], g.ChainID(), wire.KindCommit, "valid"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "valid direct message", func() bool { return in.count(payloadIs("valid")) == 1 })
	// An oversized frame is refused from its header and the stream is reset.
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], maxSize+1)
	s.Write(hdr[:])
	want[ReasonOversized]++
	waitFor(t, 10*time.Second, "oversized frame counted", func() bool { return h.Stats().Total(Rejected, ReasonOversized) == 1 })
	s.Reset()

	// An empty frame is malformed.
	s2, err := r.h.NewStream(ctx, h.ID(), h.msgProto)
	if err != nil {
		t.Fatal(err)
	}
	s2.Write([]byte{0, 0, 0, 0})
	want[ReasonMalformed]++
	waitFor(t, 10*time.Second, "empty frame counted", func() bool {
		return h.Stats().Total(Rejected, ReasonMalformed) == want[ReasonMalformed]
	})
	s2.Reset()

	st := h.Stats()
	for reason, n := range want {
		if got := st.Total(Rejected, reason); got != n {
			t.Errorf("%d rejected for %s, want %d", got, reason, n)
		}
	}
	for _, c := range st.Messages {
		if c.Source != string(h.msgProto) || c.Peer != r.h.ID() {
			t.Errorf("counter under the wrong source or peer: %+v", c)
		}
	}
	if n := in.count(nil); n != 1 {
		t.Errorf("%d deliveries, want 1: %+v", n, in.all())
	}
}

// TestFilterIgnores checks the driver's cheap filter: Ignore drops without delivery or penalty, Reject
// drops and counts a rejection, and the filter runs before the signature check.
func TestFilterIgnores(t *testing.T) {
	keys := testKeys(t, "filter", 2)
	g := testGenesis(t, "filter-chain", keys)
	var sawBadSig bool
	filter := func(e *wire.Envelope, author int) Verdict {
		switch string(e.Payload) {
		case "stale":
			return Ignore
		case "garbage":
			return Reject
		case "stale-bad-sig":
			sawBadSig = true
			return Ignore
		}
		return Pass
	}
	hosts := startChain(t, keys, g, func(i int, c *Config) {
		if i == 1 {
			c.Filter = filter
		}
	})
	in := collect(t, hosts[1])
	waitMesh(t, hosts, 20*time.Second)
	ctx := context.Background()
	for _, p := range []string{"stale", "garbage", "fresh"} {
		if err := hosts[0].Multicast(ctx, seal(t, keys[0], g.ChainID(), wire.KindCommit, p)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "fresh delivered", func() bool { return in.count(payloadIs("fresh")) == 1 })
	waitFor(t, 10*time.Second, "filter verdicts counted", func() bool {
		s := hosts[1].Stats()
		return s.Total(Ignored, ReasonFilter) == 1 && s.Total(Rejected, ReasonFilter) == 1
	})
	if n := in.count(nil); n != 1 {
		t.Fatalf("%d deliveries, want 1", n)
	}
	// The filter sees messages before the signature check: a bad signature it ignores is never verified.
	e := seal(t, keys[0], g.ChainID(), wire.KindCommit, "stale-bad-sig")
	e.Sig = bytes.Clone(e.Sig)
	e.Sig[0] ^= 1
	if err := hosts[1].SendTo(hosts[0].ID(), seal(t, keys[1], g.ChainID(), wire.KindCommit, "warm")); err != nil {
		t.Fatal(err)
	}
	s, err := hosts[0].LibP2P().NewStream(ctx, hosts[1].ID(), hosts[1].msgProto)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := writeFrame(s, marshal(t, e)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "ignored bad-signature message counted", func() bool {
		return hosts[1].Stats().Total(Ignored, ReasonFilter) == 2
	})
	if !sawBadSig || hosts[1].Stats().Total(Rejected, ReasonSignature) != 0 {
		t.Fatal("the filter did not run before the signature check")
	}
}

// TestClientsUseDirectStreams: a host whose key is not in the genesis (a client) can send requests and
// receive replies over direct streams, but cannot author replica messages, and is not a gossip peer.
func TestClientsUseDirectStreams(t *testing.T) {
	keys := testKeys(t, "client", 2)
	clientKey := testKeys(t, "the-client", 1)[0]
	g := testGenesis(t, "client-chain", keys)
	hosts := startChain(t, keys, g, nil)
	waitMesh(t, hosts, 20*time.Second)
	in := collect(t, hosts[0])
	ccfg := baseConfig(t, clientKey, g)
	ccfg.Bootstrap = []string{hosts[1].Addrs()[0].String()}
	client := startHost(t, ccfg)
	if client.Self() != -1 {
		t.Fatal("client thinks it is a replica")
	}
	waitFor(t, 20*time.Second, "client connected to every replica", func() bool { return len(client.ConnectedReplicas()) == 2 })
	if err := client.SendToReplica(0, seal(t, clientKey, g.ChainID(), wire.KindRequest, "req")); err != nil {
		t.Fatal(err)
	}
	if err := client.SendToReplica(0, seal(t, clientKey, g.ChainID(), wire.KindPrepare, "fake prepare")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "client request delivered", func() bool {
		return in.count(func(d Delivery) bool { return d.Author == -1 && d.Via == ViaDirect && d.FromReplica == -1 }) == 1
	})
	waitFor(t, 10*time.Second, "client prepare rejected", func() bool {
		return hosts[0].Stats().Total(Rejected, ReasonNonMember) == 1
	})
	// Replies go back over the client's connection.
	cin := collect(t, client)
	if err := hosts[0].SendTo(client.ID(), seal(t, keys[0], g.ChainID(), wire.KindReply, "reply")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "reply at the client", func() bool {
		return cin.count(func(d Delivery) bool { return d.Author == 0 && string(d.Envelope.Payload) == "reply" }) == 1
	})
	if got := len(client.MeshPeers()); got != 0 {
		t.Fatalf("client is a gossip peer of %d replicas", got)
	}
	if err := client.Multicast(context.Background(), seal(t, clientKey, g.ChainID(), wire.KindRequest, "x")); !errors.Is(err, ErrNoGossip) {
		t.Fatalf("client multicast: %v, want ErrNoGossip", err)
	}
	for i, h := range hosts {
		for _, p := range h.topic.ListPeers() {
			if p == client.ID() {
				t.Fatalf("replica %d gossips with the client", i)
			}
		}
	}
}
