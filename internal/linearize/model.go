// Package linearize checks that key-value histories recorded against a p2pbft chain are linearizable,
// with porcupine (github.com/anishathalye/porcupine).
//
// A Recorder collects a history from concurrent clients: every operation's call time, return time,
// input and output. An operation whose outcome is unknown (the client gave up waiting, the network
// failed after the request left) is kept as indeterminate, as Jepsen does: it may have taken effect at
// any point after its call, or never, so its return time is the end of the history and its output
// matches anything. An operation that certainly did not take effect (refused by the replicas) is
// dropped.
//
// Model is the sequential specification of the kv application (package node/app/kv): put, get, delete
// and compare-and-set on independent keys. It partitions a history by key, since operations on
// different keys never constrain one another, which keeps the check fast on long histories.
package linearize

import (
	"fmt"
	"strings"

	"github.com/anishathalye/porcupine"
)

// Kind is what an operation does.
type Kind uint8

// The operations of the kv application.
const (
	// Put sets Key to Value.
	Put Kind = iota + 1
	// Get reads Key.
	Get
	// Del removes Key.
	Del
	// CAS sets Key to Value if it holds Expect (or, with ExpectAbsent, if it does not exist).
	CAS
)

func (k Kind) String() string {
	switch k {
	case Put:
		return "put"
	case Get:
		return "get"
	case Del:
		return "del"
	case CAS:
		return "cas"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Input is an operation as a client invoked it (porcupine.Operation.Input).
type Input struct {
	Kind  Kind
	Key   string
	Value string // Put, CAS: the value to write
	// Expect is the value CAS requires; ExpectAbsent makes CAS require that the key does not exist.
	Expect       string
	ExpectAbsent bool
}

// Output is what an operation returned (porcupine.Operation.Output).
type Output struct {
	// Unknown marks an indeterminate operation: it matches any result.
	Unknown bool
	// Found: Get found the key; Del removed something; a failed CAS found the key existing.
	Found bool
	// Value: the value Get read, or the current value a failed CAS reported.
	Value string
	// Swapped: CAS applied its write.
	Swapped bool
}

// state is the value of one key (the model is checked one key at a time, see Model.Partition).
type state struct {
	exists bool
	value  string
}

func (s state) String() string {
	if !s.exists {
		return "∅"
	}
	return fmt.Sprintf("%q", s.value)
}

// step is the sequential specification of one operation on one key's state. It reports whether the
// operation could have returned out in state s, and the state after it.
func step(s state, in Input, out Output) (bool, state) {
	switch in.Kind {
	case Put:
		return true, state{exists: true, value: in.Value}
	case Get:
		if out.Unknown {
			return true, s
		}
		return out.Found == s.exists && (!s.exists || out.Value == s.value), s
	case Del:
		return out.Unknown || out.Found == s.exists, state{}
	case CAS:
		match := !s.exists && in.ExpectAbsent || s.exists && !in.ExpectAbsent && s.value == in.Expect
		next := s
		if match {
			next = state{exists: true, value: in.Value}
		}
		if out.Unknown {
			return true, next
		}
		if out.Swapped {
			return match, next
		}
		// A failed CAS reports what it found.
		return !match && out.Found == s.exists && (!s.exists || out.Value == s.value), s
	}
	return false, s
}

// Model is the porcupine model of the kv application. Its states are one key's value: Partition and
// PartitionEvent split a history by key, and each part is checked alone.
var Model = porcupine.Model{
	Partition:      partitionOps,
	PartitionEvent: partitionEvents,
	Init:           func() interface{} { return state{} },
	Step: func(s, in, out interface{}) (bool, interface{}) {
		return step(s.(state), in.(Input), out.(Output))
	},
	Equal:             func(a, b interface{}) bool { return a.(state) == b.(state) },
	DescribeOperation: func(in, out interface{}) string { return Describe(in.(Input), out.(Output)) },
	DescribeState:     func(s interface{}) string { return s.(state).String() },
}

// partitionOps splits a history into one history per key, in the order of first appearance.
func partitionOps(history []porcupine.Operation) [][]porcupine.Operation {
	index := map[string]int{}
	var parts [][]porcupine.Operation
	for _, op := range history {
		k := op.Input.(Input).Key
		i, ok := index[k]
		if !ok {
			i = len(parts)
			index[k] = i
			parts = append(parts, nil)
		}
		parts[i] = append(parts[i], op)
	}
	return parts
}

// partitionEvents splits an event history by key: a call event carries the Input, and its return
// event (same Id) goes to the same part.
func partitionEvents(history []porcupine.Event) [][]porcupine.Event {
	keyOf := map[int]string{}
	for _, e := range history {
		if e.Kind == porcupine.CallEvent {
			keyOf[e.Id] = e.Value.(Input).Key
		}
	}
	index := map[string]int{}
	var parts [][]porcupine.Event
	for _, e := range history {
		k := keyOf[e.Id]
		i, ok := index[k]
		if !ok {
			i = len(parts)
			index[k] = i
			parts = append(parts, nil)
		}
		parts[i] = append(parts[i], e)
	}
	return parts
}

// Describe renders an operation for the visualization and for failure messages.
func Describe(in Input, out Output) string {
	var b strings.Builder
	switch in.Kind {
	case Put:
		fmt.Fprintf(&b, "put(%s, %s)", in.Key, in.Value)
	case Get:
		fmt.Fprintf(&b, "get(%s)", in.Key)
	case Del:
		fmt.Fprintf(&b, "del(%s)", in.Key)
	case CAS:
		expect := in.Expect
		if in.ExpectAbsent {
			expect = "∅"
		}
		fmt.Fprintf(&b, "cas(%s, %s→%s)", in.Key, expect, in.Value)
	default:
		fmt.Fprintf(&b, "%s(%s)", in.Kind, in.Key)
	}
	switch {
	case out.Unknown:
		b.WriteString(" → ?")
	case in.Kind == Get && out.Found:
		fmt.Fprintf(&b, " → %s", out.Value)
	case in.Kind == Get:
		b.WriteString(" → ∅")
	case in.Kind == Del:
		fmt.Fprintf(&b, " → existed=%t", out.Found)
	case in.Kind == CAS && out.Swapped:
		b.WriteString(" → ok")
	case in.Kind == CAS && out.Found:
		fmt.Fprintf(&b, " → ✗ (holds %s)", out.Value)
	case in.Kind == CAS:
		b.WriteString(" → ✗ (absent)")
	}
	return b.String()
}
