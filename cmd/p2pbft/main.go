// Command p2pbft runs and operates p2pbft replicas: create a node's home directory and keys, build a
// genesis, start a replica, query it, send transactions, and start a local testnet.
//
// Every subcommand explains itself with --help. The exit status says what went wrong (exit.go; README.md,
// "Exit status").
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmdWith(installLibp2pLogs()).ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(exitCode(err))
	}
}
