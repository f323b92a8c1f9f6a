// Package layers holds no code: its test checks the import rules between the project's packages, so that
// the layering described in docs/design/architecture.md cannot erode one convenient import at a time.
//
// The rule is cmd -> node -> {pbft, p2p, identity} -> wire. The engine (pbft) and the network (p2p) never
// see each other or the replica; the replica (node) never imports the tools built on it (client, bench,
// testnet, cmd, the HTTP API); and the tools that only speak HTTP to replicas (bench, testnet, ui,
// internal/timeline) decode the API's answers with node/api/apitypes, which pulls in no network or storage
// code, instead of importing the replica. Every package of the module must be listed in the test's table:
// a new package is placed in the layering on purpose, not by accident. The test also checks that README's
// layout table has a row for every package.
package layers
