// Package client is the Go client of a p2pbft chain: it signs requests with a client key, sends them to
// the replicas over libp2p, and returns a result once f+1 replicas agree on it, so that no coalition of f
// faulty replicas can make it accept a wrong answer.
//
// # Protocol
//
// A request is a signed wire.KindRequest envelope (pbft.NewRequest: the operation and a timestamp). The
// client sends it on its session stream to each replica it asks (p2p.Session: one long-lived stream per
// replica, on which the requests of all its sessions are pipelined) and each replica that received it
// answers on that stream, once it has executed the request, with its signed wire.KindReply envelope (pbft.OpenReply). A
// replica answers only the requests it was sent, so the client sends each request to f+1 replicas at
// first: the primary it believes in, which orders it, and f backups, whose replies make the quorum when
// everyone is correct. The backups pass the request on to the primary and start their request timers,
// which is what PBFT asks of a backup that hears from a client. Backups are chosen by recent behaviour
// (replicas that failed or sent a reply that did not match lose their turn), then at random.
//
// If f+1 matching replies are not in after RetryTimeout, or at once if the request to the primary fails or
// every first target has answered without a quorum, the client sends the same envelope (same timestamp)
// to every replica that has no answer pending. That is PBFT's broadcast on timeout: every correct replica
// then knows the request, forwards it to the primary and, if the primary does not order it, votes for a
// view change. Retransmissions repeat every RetryTimeout, doubling up to MaxRetryTimeout, until the
// caller's context ends. Because the timestamp is the same, a replica that already executed the request
// answers with its cached reply: a retried request executes once.
//
// Replies are verified (signature by a replica of the genesis, the replica index in the reply matching
// the signer, the Merkle proof of the result, the client key and timestamp of the awaited request) and
// counted per distinct replica (pbft.ReplyCollector). The client learns the view from the replies: the
// (f+1)-th highest view among them, which at least one correct replica has reached, so a faulty replica
// cannot steer the client to an arbitrary primary. The next request goes to that view's primary.
//
// # Sessions: one outstanding request per key
//
// PBFT's exactly-once rule gives each client key at most one request in flight: replicas keep, per key,
// the last executed timestamp and drop anything older, so a second request under the same key could make
// the first one be dropped unanswered. A Client therefore owns a pool of Sessions keys, derived
// deterministically from its key (DeriveSessionKey; session 0 is the key itself), and Do takes a free
// session for the duration of one request. Concurrency is the number of sessions; Do blocks while all are
// busy. Deriving the keys keeps the set of client identities the replicas track bounded and the same
// across restarts.
//
// # Timestamps
//
// Timestamps are time-based: a session's next timestamp is max(previous+1, wall clock in Unix
// nanoseconds). Within a process they strictly increase; a restarted client starts above everything it
// sent before as long as the clock has not been set back by more than the time the restart took. Nothing
// is written to disk, so a client key can be used from any machine. If a clock does step back, replicas
// reject the requests as stale until the clock passes the last timestamp they executed for the key; the
// client keeps retrying until its context ends. A request that is abandoned (its context ended) has an
// unknown outcome: it may still execute, and Do says so in its error.
//
// # Connections
//
// The client runs its own libp2p host in client mode (its key is not in the genesis): it dials every
// replica from the genesis addresses and the bootstrap multiaddrs, and finds the rest through peer
// exchange. Each host keeps one request stream per replica, opened on first use and reopened after it
// breaks; a replica handles at most p2p.Config.SessionWindow requests of one stream at once and stops
// reading it beyond that (backpressure, not an error). A Client with more than SessionsPerHost sessions
// runs one host per SessionsPerHost sessions, each with its own throwaway identity.
package client
