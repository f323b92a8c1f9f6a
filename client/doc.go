// Package client is the Go client of a p2pbft chain: it signs requests with a client key, sends them to
// the replicas over libp2p, and returns a result once f+1 replicas agree on it, so that no coalition of f
// faulty replicas can make it accept a wrong answer.
//
// # Protocol
//
// A request is a signed wire.KindRequest envelope (pbft.NewRequest: the operation and a timestamp). Each
// client host keeps a link to every replica (p2p.Link: one long-lived stream, reopened when it breaks) and
// greets each with a hello per session key, which routes that replica's answers for the key to the link.
// The client sends a request to the primary it believes in; the primary orders it, and every replica that
// executes it pushes its reply on the client's link, as PBFT has it: all replicas reply, and the client
// accepts a result once f+1 distinct replicas sent matching replies. So a backup that is slow, paused or cut
// off costs the client nothing as long as f+1 others answer.
//
// If f+1 matching replies are not in after RetryTimeout, or at once if the primary's link is down or the
// primary refused the request (a notice), the client sends the same envelope (same timestamp) to every
// replica that has not replied. That is PBFT's broadcast on timeout: every correct replica then knows the
// request, forwards it to the primary and, if the primary does not order it, votes for a view change.
// Retransmissions repeat every RetryTimeout, doubling up to MaxRetryTimeout, until the caller's context
// ends. Because the timestamp is the same, a replica that already executed the request answers with its
// cached reply: a retried request executes once.
//
// A replica answers the requests of one executed batch for the keys of one link with one bundle
// (pbft.ReplyBundle): the signed reply header once, then a leaf and Merkle path per request. The client
// checks the header's signature once per batch and replica (a cache) and the path of each reply it still
// waits for, that the header names the replica whose link it came on, and counts replies per distinct
// replica. The client learns the view from the replies: the (f+1)-th highest view among them, which at least
// one correct replica has reached, so a faulty replica cannot steer the client to an arbitrary primary. The
// next request goes to that view's primary.
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
// exchange. By default all sessions share one host (one connection and one link per replica);
// SessionsPerHost > 0 spreads them over several hosts, each with its own throwaway identity, to model
// several client machines. Requests signed ahead of time go through DoSigned (the load generator of
// package bench does so).
package client
