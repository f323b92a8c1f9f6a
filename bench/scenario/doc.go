// Package scenario runs fault-injection scenarios: a network of replicas, a load, a timeline of faults,
// and checks. It is the engine of `p2pbft scenario run`; scenarios/ holds the examples, which the tests
// run in their short form.
//
// # A scenario
//
// A TOML file (Scenario, spec.go): n, the replicas' settings ([nodes]), Byzantine replicas from the start
// ([byzantine]), the emulated network ([network], below), the load ([load], as package bench takes it),
// the bounds ([expect]) and the timeline ([[events]]). Events run one after the other; each waits (after,
// after_requests), acts on its targets (kill, stop, start, restart, pause, resume, partition, heal,
// byzantine, wait; targets by name or as primary, backup, random, all, previous; and with [network],
// link and heal-links) and then checks, concurrently: that a request issued after the
// action is accepted within resume_within; for start, restart, resume and heal, that the targets reach
// the height the others had within catch_up_within; and, when the primary was hit, when the first block
// of a later view committed (reported, not bounded). A [short] table overrides any field for the short
// form (--short), which the test suite runs.
//
// # Checks after the load
//
// Every correct replica (never Byzantine, running, not paused) reaches the same height; they hold the
// same block hashes at every height any two of them hold (a replica that copied a snapshot lacks the
// blocks below it, and is compared above); Byzantine replicas reported their mode; every request the
// clients saw accepted is in the chain exactly once, by replaying the chain with the client table's rule
// (a request executes iff its timestamp is above the last one executed for its client), each block read
// from a replica that holds it and checked against the agreed hash.
//
// # Where the replicas run
//
// Local processes (package testnet; partitions through each replica's admin API and connection gater),
// docker containers (package bench's Docker; partitions by disconnecting containers from the network),
// or, with [network], processes on hosts of a network lab (internal/netlab): every replica in a network
// namespace of its own with its own address (the genesis lists those addresses), the namespaces joined
// by netlab's link emulator, and the runner (the load generator, and the reads of the replicas' APIs) in
// the root namespace, whose link is the client's (netcluster.go). The cluster interface (cluster.go)
// hides which.
//
// # The emulated network
//
// [network] assigns every replica to a region and gives the region of the client (the load); paths set
// the links between regions, a latency matrix (from/to one way, or between = [a, b] both ways; a region
// to itself for the links within it): delay, jitter, reorder, loss, bandwidth. links override them for
// pairs of endpoints (replica names, client, region names, all). Events change the links mid-run: link
// (from/to or between, with any of those settings and cut = true or false; the endpoints may also be
// primary, resolved when the event runs) and heal-links (every link back to what [network] says). With
// [network], partition cuts the links between the replicas of different sides, both ways, and heal
// restores them. A run needs root (network namespaces); without it, Run fails saying so. run.json records
// the network: hosts and addresses, regions, the matrix, and every link's properties and packet counts.
//
// # The result folder
//
// scenario.toml (as given), run.json (Outcome: verdict, checks, steps with their recovery times, seed,
// binary version, the command that reruns it, and the load's figures and time series), result.txt,
// plot.png and the replicas' logs.
package scenario
