//go:build tools

// Package tools pins modules the project plans on before any package imports them, so that `go mod tidy`
// keeps them in go.mod while several packages are built in parallel. Delete a line once real code imports
// the module.
package tools

import (
	_ "github.com/BurntSushi/toml"
	_ "github.com/cockroachdb/pebble"
	_ "github.com/fxamacker/cbor/v2"
	_ "github.com/libp2p/go-libp2p"
	_ "github.com/libp2p/go-libp2p-pubsub"
	_ "github.com/multiformats/go-multiaddr"
	_ "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/spf13/cobra"
	_ "go.etcd.io/bbolt"
	_ "go.uber.org/goleak"
)
