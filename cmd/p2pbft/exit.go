package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// Exit statuses. A script can tell what went wrong without reading the message; README.md ("Exit
// status") and `p2pbft --help` list them.
const (
	exitOK          = 0
	exitError       = 1 // any other failure
	exitUsage       = 2 // a bad command line: unknown command or flag, wrong arguments, a bad or missing value
	exitNotFound    = 3 // the key does not exist (tx get, tx del)
	exitConflict    = 4 // a compare-and-set found another value (tx cas)
	exitUnavailable = 5 // the node or the replicas could not be reached or did not answer in time: the outcome is unknown
	exitRejected    = 6 // the replicas or the node's API refused the request as invalid
)

// exitCodes documents the statuses, for --help.
const exitCodes = `Exit status:
  0  success
  1  any other failure
  2  bad command line (unknown command or flag, wrong arguments, bad value)
  3  not found (tx get, tx del: no such key)
  4  conflict (tx cas: the key holds another value)
  5  unavailable (node or replicas unreachable, or no answer in time: the outcome is unknown)
  6  rejected (the replicas or the node's API refused the request as invalid)`

// codeError is an error with the exit status it calls for.
type codeError struct {
	code int
	err  error
}

func (e *codeError) Error() string { return e.err.Error() }
func (e *codeError) Unwrap() error { return e.err }

// withCode gives err an exit status (nil stays nil).
func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &codeError{code: code, err: err}
}

// usagef is a bad command line.
func usagef(format string, args ...any) error {
	return withCode(exitUsage, fmt.Errorf(format, args...))
}

// exitCode is the status the process exits with after err.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ce *codeError
	if errors.As(err, &ce) {
		return ce.code
	}
	return exitError
}

// classifyUsage makes every command-line mistake cobra detects exit with exitUsage: bad flags (the flag
// error function, inherited by every subcommand), wrong arguments (each command's Args wrapped), and an
// unknown subcommand (commands that only group others get a RunE that says so; alone, they print their
// help).
func classifyUsage(root *cobra.Command) {
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return withCode(exitUsage, err) })
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		switch {
		case c.HasSubCommands() && !c.Runnable():
			c.Args = cobra.ArbitraryArgs
			c.RunE = func(c *cobra.Command, args []string) error {
				if len(args) > 0 {
					msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
					if s := c.SuggestionsFor(args[0]); len(s) > 0 {
						msg += "; did you mean " + strings.Join(s, " or ") + "?"
					}
					return withCode(exitUsage, errors.New(msg+" (see --help)"))
				}
				return c.Help()
			}
		case c.Args != nil:
			args := c.Args
			c.Args = func(c *cobra.Command, a []string) error {
				if err := args(c, a); err != nil {
					return withCode(exitUsage, fmt.Errorf("%w (see %s --help)", err, c.CommandPath()))
				}
				return nil
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}
