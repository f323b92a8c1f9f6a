// Package bench measures a p2pbft network under load: the engine of `p2pbft bench` and of the fault
// scenarios (package bench/scenario).
//
// # Parts
//
//   - Target (target.go, docker.go): the network driven. StartLocal starts replicas as processes of this
//     machine (package testnet), StartDocker as containers on a private docker network, OpenTestnet
//     targets a running `p2pbft testnet`, FromAPIs replicas given by their HTTP APIs. A target reads its
//     replicas' status, metrics and blocks, and knows their processes when it can (for CPU figures).
//   - Generator (load.go, workload.go): the load. Closed loop (C clients, each with one request
//     outstanding, as PBFT allows per client key) or open loop (a fixed offered rate; latency counts from
//     the due time, so a backlog is visible). Requests are key-value puts of a chosen size over a uniform
//     or zipf key space, signed and encoded ahead of time on every core (presign, client.Prepare), so that
//     the generator leaves the CPU to the replicas. They go out through package client (one host and one
//     link per replica for all the sessions; DoPrepared), which is what a user's client does: every
//     replica replies, f+1 matching replies accept, each reply header's signature is checked once per batch
//     and replica.
//   - Run (run.go): a load against a target, with a progress line, the replicas sampled every second
//     (height, view, executed requests) and snapshots at both ends of the measurement window (metrics,
//     /proc/PID/stat CPU, TCP byte counters read with ss). Events (faults) are marked on it.
//   - Result (report.go, plot.go): the figures over the window (throughput, latency percentiles, batch
//     size, view changes, messages, bytes and CPU per request), the time series, a table, JSON, and a
//     plot drawn with gonum/plot: latency over time above throughput over time, events as vertical lines.
//
// Every figure and how it is measured is described in BENCHMARKS.md at the root of the repository.
package bench
