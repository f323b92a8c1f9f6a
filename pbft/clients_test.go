package pbft

import "testing"

// The exactly-once rule: newer executes, the last executed again is a repeat, older is stale; along a
// chain, a client's request executes once, and only if newer than the last one executed.
func TestExactlyOnceRule(t *testing.T) {
	for _, c := range []struct {
		ts, last uint64
		want     RequestAge
	}{{1, 0, RequestNew}, {5, 4, RequestNew}, {4, 4, RequestRepeat}, {3, 4, RequestStale}} {
		if got := ClassifyRequest(c.ts, c.last); got != c.want {
			t.Errorf("ClassifyRequest(%d, %d) = %d, want %d", c.ts, c.last, got, c.want)
		}
	}
	x := ExactlyOnce{}
	a, b := []byte("a"), []byte("b")
	steps := []struct {
		client []byte
		ts     uint64
		want   bool
	}{{a, 1, true}, {a, 1, false}, {b, 1, true}, {a, 3, true}, {a, 2, false}, {a, 3, false}, {a, 4, true}}
	for i, s := range steps {
		if got := x.Admit(s.client, s.ts); got != s.want {
			t.Errorf("step %d: Admit(%s, %d) = %v", i, s.client, s.ts, got)
		}
	}
}
