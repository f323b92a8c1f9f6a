// Package testnet starts and drives local p2pbft networks made of real processes: one `p2pbft start`
// process per replica, on 127.0.0.1 with free ports, with every key, genesis, configuration and log under
// one folder. It is the engine of `p2pbft testnet`, of the end-to-end tests, and of tools that drive a
// network from outside (benchmarks, fault scenarios).
//
// # Layout of a testnet folder
//
//	DIR/testnet.json          the manifest: chain, replicas, ports, PIDs of the running processes
//	DIR/genesis.toml          the replica set (every replica lists its 127.0.0.1 address)
//	DIR/node0 ... nodeN-1     replica homes: node_key, config.toml, genesis.toml, data/, node.log
//	DIR/client                a client home: genesis.toml and cli_key, for `p2pbft tx --home DIR/client`
//	DIR/control.addr          while `p2pbft testnet` runs: the unix socket it takes commands on
//
// Config.Hosts puts each replica on an address of its own instead of 127.0.0.1 (with Config.BasePort for
// addresses this process cannot listen on), and ProcessOptions.Command runs its process elsewhere: the
// end-to-end tests run replicas and clients on hosts of a network lab (internal/netlab), network
// namespaces with their own addresses, to load the replicas from a real address (remote_test.go).
//
// Create writes a new folder; Open reads an existing one, so a stopped testnet can be started again with
// its chain intact. Ports are chosen free when the folder is created and kept in the configurations, so
// the addresses in the genesis stay valid across restarts.
//
// # Processes
//
// Every replica runs as a child process of the caller in its own process group (an interactive Ctrl-C
// reaches only the parent, which then stops the children in order). Stop sends SIGTERM and waits (then
// SIGKILL after a grace period); Kill sends SIGKILL at once, the crash the store must survive; Start and
// Restart start a replica again on the same home. Standard output and error of a replica append to its
// node.log. The PIDs are recorded in the manifest, and a process left over from an earlier run whose
// parent died is stopped, by PID and only if its command line is this folder's, before a replica is
// started again.
//
// # Observing
//
// Status, Metric and Block read a replica's HTTP API; WaitFor polls a condition with a deadline; NewClient
// returns a Go client (package client) that waits for f+1 matching replies. Load drives a closed-loop
// key-value load at a target rate and records what was acknowledged, so a test can check afterwards that
// every acknowledged write is in the chain.
//
// # The live page
//
// ServeUI (`p2pbft testnet --ui`) serves the live page of package ui for every replica: it polls their
// /v1/status and /v1/trace for the page's event stream, and applies the page's buttons (POST /v1/control,
// {"action": "kill", "replica": "node0"}) through Do, as the commands of standard input and the control
// socket are.
package testnet
