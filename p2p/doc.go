// Package p2p moves signed envelopes between the replicas (and clients) of one p2pbft chain over libp2p,
// and says who sent them. It knows nothing of PBFT: it checks envelopes (wire.Envelope) without
// understanding their payloads, and hands verified ones to the node on one channel.
//
// # Shape
//
// A Host (New, Close) wraps a go-libp2p host: TCP and QUIC, Noise and TLS, yamux, a resource manager
// with generous per-peer limits for the replicas of the genesis and tight ones for everyone else, per-IP
// limits of its own on inbound connections (ConnsPerIP, ConnRatePerIP, ConnBurstPerIP; the replicas'
// genesis addresses and AllowNetworks exempt; every refusal logged and counted under the limit's name:
// limits.go), and a connection manager that protects replica connections. Configuration is one typed struct, Config, whose
// operator settings carry TOML tags; every zero field has a default (Config.WithDefaults).
//
//   - Multicast publishes on the chain's gossipsub topic (TopicName). Every gossipsub option is set in one
//     place (gossipOptions), sized from the replica count n and Config.Window.
//   - SendTo / SendToReplica / BroadcastDirect write to a per-peer direct stream ("/p2pbft/<chain>/msg/
//     1.0.0"), and Request does request/response ("/p2pbft/<chain>/req/1.0.0", see SetRequestHandler).
//     Frames are a 4-byte length and the encoded envelope, bounded by MaxMessageSize from replicas and
//     MaxClientMessageSize from anyone else, with deadlines per frame and an idle timeout. Peers outside
//     the genesis (clients) may open streams too, within MaxClientStreams / MaxClientStreamsPerPeer.
//   - A Link (NewLink) is a client host's long-lived stream to one replica ("/p2pbft/<chain>/link/
//     1.0.0", link.go), reopened with backoff whenever it breaks: the client writes request envelopes on
//     it, and the replica pushes whatever the driver has for the client's keys (reply bundles, notices),
//     unasked. Routing rests on hellos (SignHello: a client key names the host its answers go to, checked
//     against the stream's authenticated peer); LinkFor finds the link of a key. Requests on links are
//     checked like every other path, verified in batches (read-ahead), and handed to the driver a batch
//     at a time (SetLinkHandler).
//   - Deliveries returns verified envelopes from every path: the envelope, the author's replica index (-1
//     for a client key), the peer that handed it over and the path.
//   - Events reports peers coming and going; Stats (and, with Config.Registerer, Prometheus) counts
//     accepted, rejected-by-reason and ignored messages per source and peer, and every drop. Peers are
//     the replicas, each by its index, and "client" for all others together: a counter per client key or
//     client peer would grow without bound on a public network (and the Prometheus series with it).
//     Every rejected message is also logged at debug, with a summary at info at most every 10 s
//     (internal/logs.Rejections).
//
// # Validation
//
// One pipeline checks gossip and direct messages, cheapest first: size, decode, chain ID, kind and field
// sizes, membership (replica kinds must be authored by a replica of the genesis; client requests only on
// direct streams unless AcceptClientRequests), the driver's Filter (stale, far-future or duplicate ->
// Ignore, without cryptography), then the ed25519 signature, skipped when the same signed content with the
// same signature was verified before (a bounded wire.SigCache: the driver's when its verifier has one, so
// that the node's verifier pool, the host and the engine share one). Provably invalid messages are rejected
// (gossipsub penalises the forwarder); what our own lag could explain is only ever ignored, by the driver's
// filter. On gossip the decoded envelope travels to the subscriber in pubsub's ValidatorData, so nothing is
// decoded or verified twice; the host's own multicasts are not verified again.
//
// # Measured choices
//
// The cost of each dissemination path (CPU per delivery, latency and rates for 256 B to 256 KiB messages,
// 4 hosts on 127.0.0.1, all publishing) is measured by `go test -run - -bench 'Multicast|BroadcastDirect'
// -benchtime 3s ./p2p/` (bench_test.go says what each metric is); the figures, and what they cost in a
// whole replica set, are in the repository's docs/design/measured-limits.md, and docs/design/gossip.md
// describes the design of the gossip path.
//
// The choices these figures support:
//
//   - Signature policy: StrictNoSign with the envelope's own signature and a content-hash message ID.
//     StrictSign adds gossipsub's own signature and a verification per hop: 40-100% more CPU per delivery
//     in every run (and an author field that the envelope already carries).
//   - Message ID: SHA-256 of the message bytes. Identical bytes are one message for SeenTTL (2 minutes by
//     default; gossipsub sweeps its seen cache once a minute, so a replay is dropped for between SeenTTL
//     and SeenTTL + 1 min). The host keeps a second seen cache across paths, so the same bytes arriving by
//     gossip and by a direct stream are delivered once. A replica that re-publishes a message for
//     liveness bumps Envelope.Resend (new bytes, same Envelope.ID). Replays older than the window are the
//     engine's business: it drops messages outside its view and sequence window and duplicates by
//     (kind, view, sequence, author); its windows must expire well within SeenTTL.
//   - Dissemination: mesh mode by default. Replicas form a gossipsub mesh (D = min(n-1, 6)), preferred by
//     a high application score; publishers flood their own messages to every replica; messages over 1 KiB
//     use IDONTWANT. At n = 4 the two modes cost about the same for small messages (each within the other's
//     run-to-run noise); for 256 KiB mesh mode was cheaper in both runs, in CPU per delivery and in
//     duplicate copies per delivery. Direct mode forwards every message to every
//     replica, so its duplicates grow as n-2 per delivery, and gossipsub never graylists a direct peer;
//     in mesh mode a peer that keeps forwarding rejected messages loses score quadratically and is
//     graylisted. Direct mode stays available (Dissemination.Mode) for small fixed sets.
//   - Queues: the validation queue, per-peer outbound queues, subscription buffer, delivery channel and
//     send queues hold max(256, 3 x n x Window) messages (gossipsub's default of 32 lost messages with
//     four publishers). No benchmark run dropped a message; drops are counted (Drop* reasons), never silent.
//   - Direct streams carry the same all-to-all load for about half the CPU per delivery of gossip (no
//     forwarding, no duplicates), but a broken link loses what is sent on it. Which path a replica's
//     broadcasts take is the node's choice (node/config: p2p.broadcast, p2p.gossip_kinds): Multicast, the
//     gossip topic, by default, because it relays around a broken link; BroadcastDirect when the operator
//     sets p2p.broadcast = "direct", except for the kinds listed in p2p.gossip_kinds (view changes and new
//     views by default). A message to one replica always takes a direct stream (SendToReplica).
//
// # Discovery and churn
//
// Addresses come from the genesis, the bootstrap list (/ip4, /ip6, /dns4, /dns6, /dns; TCP or QUIC; each
// must end in /p2p/<peer-id>), identify, peer exchange of signed peer records, and optionally mDNS (see
// discovery.go). Peer exchange rather than a DHT: the replica set is small, closed and listed in the
// genesis, so only addresses are unknown, and one round trip over a connection we already have finds
// them; a DHT would add a routing table, refresh traffic and provider records for nothing. The records
// are libp2p signed peer records, checked against the replica's key, so a peer can withhold addresses but
// cannot point us at an impostor (and the Noise/TLS handshake checks the peer ID anyway). A host that knows one bootstrap peer finds every replica: in the tests, 4 hosts that
// each know only the previous one form a full mesh in 30-450 ms and 10 hosts in 0.4-4.5 s (race detector
// on, machine shared). A replica killed and restarted on another port with one bootstrap address is
// reconnected, and the mesh delivers both ways again, 40-340 ms after it starts; restarted on its old
// port with no bootstrap, the others' redial (backoff RedialMin..RedialMax) brings it back within the
// current backoff step (90-190 ms in the test, whose RedialMax is 1 s; at most RedialMax, 30 s by
// default, after a long outage).
//
// # Shutdown
//
// Close cancels the host's context, which resets every stream it owns (so a write blocked on a stalled
// peer returns at once), waits for all of its goroutines, and only then closes the libp2p host; the tests
// check with go.uber.org/goleak that nothing is left running.
//
// go-libp2p logs through its own global logger (GOLOG_LOG_LEVEL sets its level); this package logs
// through Config.Logger.
package p2p
