// Package ui is the live page of a replica set: an HTML page (embedded in the binary, no build step, no
// asset from the internet) that shows the replicas (up, view, height, role, reachable peers), a swimlane
// of the last slots across replicas (node/trace records, phases coloured), the view changes, throughput
// and latency, updated live through server-sent events.
//
// Two servers use it:
//
//   - a replica's HTTP API (node/api) serves the page at /ui/ and the stream at /v1/events, for itself
//     only: a replica knows its peers' p2p addresses, not their HTTP APIs, so its page shows its own
//     records and which peers it reaches;
//   - `p2pbft testnet --ui` (package testnet) serves the same page with a stream of every replica of the
//     testnet, which it polls over their HTTP APIs, and a control endpoint behind the page's buttons
//     (kill, pause, partition, ...).
//
// The stream is built by polling (a Source) rather than by hooks in the replica: the trace records and
// the status are already there to be read, polling costs the replica nothing when nobody watches, and
// one stream per client bounds the work by the number of clients (Options.MaxClients).
package ui
