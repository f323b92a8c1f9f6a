// Package api is a replica's HTTP/JSON API: submit transactions, read the key-value store, watch the
// replica's status, read blocks with their commit certificates, and scrape Prometheus metrics.
//
// It listens on loopback by default (config api.http = "127.0.0.1:26680") and has no authentication:
// whoever reaches it can submit transactions signed with the node's client key. Expose it beyond the
// machine only behind something that authenticates.
//
// # Endpoints
//
//	POST /v1/tx                submit a transaction (JSON operation or signed envelope); ?wait=false: async
//	GET  /v1/kv/{key}          read a key from this replica's committed state (no consensus)
//	GET  /v1/status            chain, replica, view, primary, mode, height, checkpoints, peers
//	GET  /v1/peers             the connected replicas
//	GET  /v1/blocks/{height}   a block with its commit certificate ("latest" for the head)
//	GET  /v1/blocks            block summaries (?from=HEIGHT&limit=N, at most 100)
//	GET  /metrics              Prometheus metrics (the node's registry)
//	GET  /v1/trace             this replica's trace records (?from=SEQ&limit=N)
//	GET  /health               200 while the replica's event loop runs, 503 otherwise
//	GET  /ui/                  the live page of this replica (package ui)
//	GET  /v1/events            the page's server-sent events: status and new trace records (package ui)
//
// With Options.Admin (config [experiment] admin_api), for fault-injection experiments only, and only to
// clients on loopback:
//
//	POST /admin/partition      {"peers": [0, 2]}: also cut this replica off from replicas 0 and 2 (Partitioner)
//	GET  /admin/partition      the replicas it is cut off from
//	POST /admin/heal           undo every partition
//
// Every error is a JSON object {"error": "...", "code": "..."} with an HTTP status that says what went
// wrong: 400 malformed input, 404 no such key or block, 405 wrong method, 413 body too large, 415 wrong
// content type, 422 the replica rejected the request (stale timestamp, bad signature, ...), 501 the
// application does not answer local reads, 503 the replica is not running, 504 the transaction did not
// execute in time (it may still execute).
//
// # Submitting
//
// A JSON operation ({"op": {"type": "put", "key": "k", "value": "v"}}) is signed by the node with its client
// key (node.ClientKey). PBFT lets one client key have one request outstanding (later timestamps supersede
// earlier ones), so the API signs with a pool of session keys derived from the client key
// (package client/session) and holds a session until its request has executed, also in async mode; when
// every session is busy, a submission waits for one until its own deadline. Keys, values and expectations
// are UTF-8 strings, or base64 with "encoding": "base64".
//
// A signed request envelope (deterministic CBOR of wire.Envelope, kind request), either as the body with
// Content-Type application/cbor or base64 in {"envelope": "..."}, is submitted as is: its author manages
// its own key and timestamps.
//
// With wait (the default) the call returns once this replica has executed the transaction, with the
// result and this replica's signed reply. That is one replica's word: a client that must not trust the
// node it talks to uses the Go client (package client), which collects f+1 matching replies over libp2p.
// With ?wait=false the call returns 202 once the replica has accepted the request for ordering.
package api
