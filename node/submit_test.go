package node

import (
	"testing"

	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// requestTimestamp agrees with the full decoder on every timestamp size and refuses what is not a request.
func TestRequestTimestamp(t *testing.T) {
	for _, ts := range []uint64{1, 23, 24, 255, 256, 65535, 65536, 1<<32 - 1, 1 << 32, 1<<64 - 1} {
		p, err := wire.Marshal(&pbft.Request{Timestamp: ts, Op: []byte("op")})
		if err != nil {
			t.Fatal(err)
		}
		got, ok := requestTimestamp(p)
		if !ok || got != ts {
			t.Fatalf("timestamp %d read as %d, %v", ts, got, ok)
		}
	}
	for _, p := range [][]byte{nil, {0x82}, {0x83, 0x01}, {0x82, 0x00}, {0x82, 0x1b, 1}, {0x82, 0x40}, {0xa1, 0x01}} {
		if _, ok := requestTimestamp(p); ok {
			t.Fatalf("%x accepted", p)
		}
	}
}

func FuzzRequestTimestamp(f *testing.F) {
	p, _ := wire.Marshal(&pbft.Request{Timestamp: 1 << 40, Op: []byte("x")})
	f.Add(p)
	f.Fuzz(func(t *testing.T, b []byte) {
		ts, ok := requestTimestamp(b)
		if r, err := pbft.DecodeRequest(b); err == nil && (!ok || r.Timestamp != ts) {
			t.Fatalf("decoder reads %d, fast path %d, %v", r.Timestamp, ts, ok)
		}
	})
}
