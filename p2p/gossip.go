package p2p

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"runtime"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p-pubsub/timecache"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/p2pbft/p2pbft/wire"
)

// pubsubSlack is what the gossip layer's own size limit adds to MaxMessageSize: room for the RPC framing,
// so that a message somewhat over the limit still reaches the validator, which counts it as oversized
// (far larger RPCs are cut off by the stream reader, which resets the sender's stream).
const pubsubSlack = 64 << 10

// messageID is the gossip message ID: the SHA-256 of the message bytes. Identical bytes are one message
// (the seen cache drops copies); an author who wants to re-publish bumps Envelope.Resend.
func messageID(m *pb.Message) string { return contentID(m.GetData()) }

// contentID is the SHA-256 of a message's bytes, the key of the seen caches.
func contentID(data []byte) string {
	h := sha256.Sum256(data)
	return string(h[:])
}

// gossipOptions returns every gossipsub option the host uses, in one place, sized from the config.
func (h *Host) gossipOptions() []pubsub.Option {
	cfg := h.cfg
	n := h.genesis.N()
	params := pubsub.DefaultGossipSubParams()
	d := cfg.Dissemination.MeshDegree
	params.D = d
	params.Dlo = max(1, d-d/4-1)
	params.Dhi = d + d/2 + 1
	params.Dscore = min(d/2+1, params.Dhi)
	params.Dout = 0
	if d >= 4 {
		params.Dout = min(d/4, params.Dlo-1)
	}
	params.Dlazy = d
	params.HeartbeatInterval = cfg.Dissemination.Heartbeat
	params.HeartbeatInitialDelay = 50 * time.Millisecond
	params.HistoryLength = 5
	params.HistoryGossip = 3
	params.DirectConnectTicks = 30 // a fallback: the host's own redial loop keeps replicas connected
	// No initial delay: gossipsub's direct-connect kick-off goroutine sleeps through it without watching
	// for shutdown, which would outlive Close. Its channel holds every direct peer, so it never blocks.
	params.DirectConnectInitialDelay = 0
	params.MaxPendingConnections = max(128, n)
	// IWANT/IHAVE bounds sized for the burst of n replicas x window messages per heartbeat.
	params.MaxIHaveLength = max(5000, 2*n*cfg.Window)
	params.MaxIDontWantLength = max(10, n*cfg.Window)
	params.IDontWantMessageThreshold = 1024

	protoID := protocol.ID("/p2pbft/" + h.chainID + "/meshsub/1.2.0")
	features := func(feat pubsub.GossipSubFeature, proto protocol.ID) bool {
		if proto != protoID {
			return false
		}
		switch feat {
		case pubsub.GossipSubFeatureMesh, pubsub.GossipSubFeatureIdontwant:
			return true
		}
		return false // no peer exchange (we have our own), no v1.3 extensions
	}

	opts := []pubsub.Option{
		// A protocol ID of our own: never join a public network, and the larger message size is safe.
		pubsub.WithGossipSubProtocols([]protocol.ID{protoID}, features),
		pubsub.WithGossipSubParams(params),
		pubsub.WithMessageIdFn(messageID),
		pubsub.WithMaxMessageSize(cfg.MaxMessageSize + pubsubSlack),
		pubsub.WithSeenMessagesTTL(cfg.SeenTTL),
		// LastSeen: a copy that keeps arriving keeps its ID remembered, so a message circulating in a
		// loop is never accepted a second time (go-libp2p-pubsub issue 573).
		pubsub.WithSeenMessagesStrategy(timecache.Strategy_LastSeen),
		pubsub.WithValidateQueueSize(cfg.QueueSize),
		pubsub.WithValidateThrottle(2 * cfg.QueueSize),
		pubsub.WithValidateWorkers(max(2, runtime.GOMAXPROCS(0))),
		pubsub.WithPeerOutboundQueueSize(cfg.QueueSize),
		pubsub.WithFloodPublish(true),
		pubsub.WithPeerExchange(false),
		pubsub.WithRawTracer(tracer{h.metrics}),
		pubsub.WithLogger(h.log.With("subsystem", "pubsub")),
		pubsub.WithPeerScore(h.scoreParams(), &pubsub.PeerScoreThresholds{
			GossipThreshold:             -500,
			PublishThreshold:            -1000,
			GraylistThreshold:           -2500,
			AcceptPXThreshold:           1e9, // never
			OpportunisticGraftThreshold: 1,
		}),
	}
	if cfg.Dissemination.PubsubSigning {
		opts = append(opts, pubsub.WithMessageSignaturePolicy(pubsub.StrictSign))
	} else {
		// The envelope carries the author's signature; gossipsub adds no author, sequence number or
		// second signature, and rejects messages that carry them.
		opts = append(opts, pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign), pubsub.WithNoAuthor())
	}
	if cfg.Dissemination.Mode == ModeDirect {
		var direct []peer.AddrInfo
		for i := 0; i < n; i++ {
			if id := h.genesis.PeerID(i); id != h.id {
				direct = append(direct, peer.AddrInfo{ID: id}) // addresses are the discovery loop's job
			}
		}
		opts = append(opts, pubsub.WithDirectPeers(direct))
	}
	if !cfg.AllowNonReplicaGossip {
		opts = append(opts, pubsub.WithPeerFilter(func(p peer.ID, _ string) bool {
			return h.replicaIndex(p) >= 0
		}))
	}
	return opts
}

// scoreParams: replicas get a large application score (preferred in the mesh, never graylisted for a
// few bad messages); invalid messages cost any peer quadratically, so a peer that keeps forwarding
// rejected messages is soon graylisted (its RPCs ignored). Direct peers are exempt from graylisting by
// design of gossipsub; the per-peer rejection counters show a misbehaving replica.
func (h *Host) scoreParams() *pubsub.PeerScoreParams {
	return &pubsub.PeerScoreParams{
		SkipAtomicValidation: true,
		Topics: map[string]*pubsub.TopicScoreParams{
			h.topicName: {
				SkipAtomicValidation: true,
				TopicWeight:          1,
				// P1 is off (weight 0), but gossipsub divides by the quantum whenever a peer is in the mesh.
				TimeInMeshQuantum:              time.Second,
				InvalidMessageDeliveriesWeight: -10,
				InvalidMessageDeliveriesDecay:  0.9,
			},
		},
		AppSpecificScore: func(p peer.ID) float64 {
			if h.replicaIndex(p) >= 0 {
				return 1000
			}
			return 0
		},
		AppSpecificWeight: 1,
		DecayInterval:     time.Second,
		DecayToZero:       0.01,
		RetainScore:       10 * time.Minute,
		SeenMsgTTL:        h.cfg.SeenTTL,
	}
}

// startGossip creates the gossipsub router, joins the chain's topic and starts delivering.
func (h *Host) startGossip() error {
	ps, err := pubsub.NewGossipSub(h.ctx, h.lh, h.gossipOptions()...)
	if err != nil {
		return fmt.Errorf("p2p: gossipsub: %w", err)
	}
	h.ps = ps
	// Inline: the validation workers (WithValidateWorkers, one per core) run the validator themselves.
	// Otherwise pubsub starts a goroutine per message, whose small stack the signature check grows each
	// time (no difference measured in throughput; less churn in the profiles).
	if err := ps.RegisterTopicValidator(h.topicName, h.validateGossip,
		pubsub.WithValidatorInline(true)); err != nil {
		return fmt.Errorf("p2p: topic validator: %w", err)
	}
	topic, err := ps.Join(h.topicName)
	if err != nil {
		return fmt.Errorf("p2p: join topic %s: %w", h.topicName, err)
	}
	h.topic = topic
	sub, err := topic.Subscribe(pubsub.WithBufferSize(h.cfg.QueueSize))
	if err != nil {
		return fmt.Errorf("p2p: subscribe to %s: %w", h.topicName, err)
	}
	h.sub = sub
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.deliverGossip(sub)
	}()
	return nil
}

// validateGossip is the topic validator. The decoded envelope travels to the subscriber in ValidatorData,
// so nothing is decoded or verified twice.
func (h *Host) validateGossip(_ context.Context, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	if from == h.id {
		// Our own publication: Multicast put the envelope in ValidatorData and marked it verified.
		e, ok := msg.ValidatorData.(*wire.Envelope)
		if !ok {
			return pubsub.ValidationReject
		}
		author, _ := h.genesis.IndexOfKey(e.Author)
		if !h.val.verify(e) {
			return pubsub.ValidationReject
		}
		msg.ValidatorData = &Delivery{Envelope: e, Author: author, From: from, FromReplica: h.self, Via: ViaGossip}
		return pubsub.ValidationAccept
	}
	start := time.Now()
	e, author, r, reason := h.val.check(msg.GetData(), from, ViaGossip)
	h.val.observe(h.topicName, from, r, reason, start)
	switch r {
	case Accepted:
		msg.ValidatorData = &Delivery{Envelope: e, Author: author, From: from, FromReplica: h.replicaIndex(from), Via: ViaGossip}
		return pubsub.ValidationAccept
	case Ignored:
		return pubsub.ValidationIgnore
	default:
		if reason != ReasonFilter {
			h.log.Debug("rejected gossip message", "from", from, "reason", reason, "bytes", len(msg.GetData()))
		}
		return pubsub.ValidationReject
	}
}

// deliverGossip moves validated messages from the subscription to the delivery channel. It blocks when the
// application is slow; gossipsub then drops at the subscription buffer and counts it (DropSlowSubscriber).
func (h *Host) deliverGossip(sub *pubsub.Subscription) {
	for {
		msg, err := sub.Next(h.ctx)
		if err != nil {
			return // closed
		}
		if msg.ReceivedFrom == h.id {
			continue // our own multicast; the engine handles its own messages itself
		}
		d, ok := msg.ValidatorData.(*Delivery)
		id := msg.ID // gossipsub's message ID, computed once by messageID
		if id == "" {
			id = messageID(msg.Message)
		}
		if !ok || !h.firstDelivery(id) {
			continue
		}
		select {
		case h.deliveries <- *d:
		case <-h.ctx.Done():
			return
		}
	}
}

// ErrTooLarge is returned for an envelope larger than the configured MaxMessageSize.
var ErrTooLarge = errors.New("p2p: message too large")

// ErrNoGossip is returned by Multicast on a host that is not on the gossip topic: a client, unless
// AllowNonReplicaGossip is set.
var ErrNoGossip = errors.New("p2p: this host does not gossip (not a replica)")

// ErrClosed is returned by operations on a closed Host.
var ErrClosed = errors.New("p2p: host closed")

// Multicast publishes a signed envelope on the chain's gossip topic. It returns once the message is handed
// to gossipsub; delivery is best effort (the engine retransmits what matters). The host does not deliver
// its own multicasts back to itself.
func (h *Host) Multicast(ctx context.Context, e *wire.Envelope) error {
	if h.ctx.Err() != nil {
		return ErrClosed
	}
	if h.topic == nil {
		return ErrNoGossip
	}
	if e.ChainID != h.chainID {
		return fmt.Errorf("p2p: multicast: envelope for chain %q, host is on %q", e.ChainID, h.chainID)
	}
	if _, member := h.genesis.IndexOfKey(e.Author); !member && !h.cfg.AcceptClientRequests {
		return errors.New("p2p: multicast: envelope by a client key, and accept_client_requests is off")
	}
	data, err := e.Marshal()
	if err != nil {
		return fmt.Errorf("p2p: multicast: %w", err)
	}
	if len(data) > h.cfg.MaxMessageSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), h.cfg.MaxMessageSize)
	}
	h.val.trustOwn(e)
	if err := h.topic.Publish(ctx, data, pubsub.WithValidatorData(e)); err != nil {
		return fmt.Errorf("p2p: multicast %s: %w", e.Kind, err)
	}
	return nil
}
