// Package sim is a seeded, deterministic simulator for package pbft: n replicas (some Byzantine), clients and
// a network in one process, driven by one event queue on a virtual clock and one random source per run, so a
// seed always replays the same run.
//
// A run (Plan derives its Options from the seed) injects, during a fault period: message loss, duplication,
// long delays that reorder messages, symmetric partitions and one-way link failures that heal, crashes with
// restarts from the persisted state (sometimes between persisting a Ready and sending it), restarts of a
// correct replica from an empty disk with only its signed mark (pbft.Config.SignedMark, the highest view and
// sequence number it signed in earlier lives, which the node keeps in a file of its own), and up to f
// Byzantine replicas: silent; equivocating (different batches and votes to different replicas, and, as a new
// primary, NEW-VIEWs built from the view changes with the fewest prepared certificates, and wrong results to
// clients); forging (another replica's name on its signature, VIEW-CHANGEs with fabricated prepared
// certificates, replies with a wrong result of the right size, stalling as primary to force the view changes
// where a fabricated certificate would win); stale (replays of recorded messages, votes outside the window
// and for far-future views, checkpoints far ahead); and twins (two honest instances with the same key, each
// talking to part of the network). The certsplit fault is a targeted schedule of deliveries (certsplit.go): a
// batch prepares at one replica only in view v, another batch commits at its sequence number in view v+1
// without that replica, and the NEW-VIEW of v+2 holds both prepared certificates, so that the rule choosing
// the certificate of the highest view decides which batch survives. Replicas catch up by fetch, by snapshot,
// or by committed blocks handed in with ApplyCommitted. Forging and equivocating replicas serve tampered
// catch-up data of the right size (tamper.go), and a replica transferring state asks one of them first half
// of the time: certified batches in fetch replies and blocks with their requests reordered or replaced, under
// the real commit certificate or under COMMITs they sign themselves with the certificate's names on them, and
// snapshots with a changed application digest, a changed client-table row or another checkpoint's state.
//
// In half the seeds (the asyncpersist fault, persist.go) the replicas persist as the node does, under the
// asynchronous-persist variant of pbft.Ready's contract: a round's writes are applied and the engine
// advanced at once, and the round's messages and Executed reports wait until a simulated disk sync (a
// latency drawn per round within the seed's bounds, in commit order) makes it and every earlier round
// durable; a crash loses the rounds not yet durable, whole, and power cuts crash a replica while such a
// round with messages waits and restart it within ten ticks, while the cluster is still where it was.
//
// After the fault period the network heals and crashed replicas restart. In one seed in twenty (the slow
// fault, slow.go) the network then stays slow: every message takes 1.5 to 3 times the base view-change
// timeout until a correct replica executes a new request, which it must do within a bound derived from the
// engine's timeout backoff (an engine whose timeout stays at the base never does). The observer checks,
// during and after the run: agreement (no two correct replicas deliver different batches at one sequence number; dense
// chains; commit certificates valid); checkpoint agreement (stable checkpoints and held states); exactly-once
// (a reference replay of the agreed chain executes every request at most once, matches every replica's
// filtering, and produces every result a client accepted, which f+1 correct replicas computed);
// non-equivocation (no correct replica, in any of its lives, signs two different PRE-PREPAREs, PREPAREs or
// COMMITs for one view and sequence number, or two different VIEW-CHANGEs for one view: judged from the
// messages it sent, not from what it stored, so a driver that sends before its writes are durable shows); no
// safety alarm or state divergence at a correct replica; the memory bounds and that nothing outside (h, H]
// enters a log; and liveness (in a slow run, a new request executes within the bound; every request completes
// and every correct replica, wiped ones included, reaches the same point within LivenessTicks after the faults
// heal).
//
// `go test ./pbft/sim` runs 1000 seeds at n=4 and n=7 (150 under the race detector) plus targeted scenarios,
// and fails if too few NEW-VIEWs held prepared certificates for different batches at one sequence number from
// different views, or too few slow runs and tampered catch-up answers came up, or the engine accepted a
// tampered block or snapshot, or too few asyncpersist seeds and crashes losing rounds with messages (runs and
// campaigns count them); the pbftsim command runs long campaigns and replays a failing seed with a trace:
//
//	go run ./pbft/sim/cmd/pbftsim --seeds 100000 -n 4,7,10 --faults all
//	go run ./pbft/sim/cmd/pbftsim --replay 1234 -n 4,7 --faults all --trace
package sim
