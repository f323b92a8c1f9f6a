package bench

// Hot-path micro-benchmarks that no other package covers: a batch's digest, a client request's signing
// and decoding, a reply's check by a client (signature, Merkle proof, f+1 quorum), and the load
// generator's own per-request work. BENCHMARKS.md lists these with every other benchmark of the tree.
//
//	go test -run '^$' -bench . -benchmem ./bench/

import (
	"crypto/sha256"
	"fmt"
	"testing"

	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/node/app/kv"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

func benchKey(b *testing.B, name string) *identity.Key {
	b.Helper()
	seed := sha256.Sum256([]byte(name))
	k, err := identity.NewKeyFromSeed(seed[:])
	if err != nil {
		b.Fatal(err)
	}
	return k
}

// BenchmarkBatchDigest: the digest a pre-prepare and every COMMIT carry, over the IDs of a batch's
// requests (the IDs themselves are computed once per request when it arrives).
func BenchmarkBatchDigest(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		ids := make([]wire.Digest, n)
		for i := range ids {
			ids[i] = sha256.Sum256([]byte{byte(i), byte(i >> 8)})
		}
		b.Run(fmt.Sprintf("requests=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = pbft.BatchDigest(ids)
			}
		})
	}
}

// BenchmarkEnvelopeID: the ID (sha256 of the signed string) of a fresh 100-byte-payload envelope, as a
// receiver computes it once per message.
func BenchmarkEnvelopeID(b *testing.B) {
	k := benchKey(b, "id")
	e, _ := wire.Seal(k, "chain", wire.KindPrepare, make([]byte, 100))
	data, _ := e.Marshal()
	b.ReportAllocs()
	for b.Loop() {
		d, err := wire.DecodeEnvelope(data)
		if err != nil {
			b.Fatal(err)
		}
		_ = d.ID()
	}
}

// BenchmarkRequestSign: a client signs a 100-byte key-value put (what the bench does ahead of a run).
func BenchmarkRequestSign(b *testing.B) {
	k := benchKey(b, "client")
	op, err := buildOp(keyName(7), "s0-r0", 100)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	ts := uint64(1)
	for b.Loop() {
		ts++
		if _, err := pbft.NewRequest(k, "chain", ts, op); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRequestDecode: a replica decodes a request envelope and its payload, and the operation.
func BenchmarkRequestDecode(b *testing.B) {
	k := benchKey(b, "client")
	op, _ := buildOp(keyName(7), "s0-r0", 100)
	env, _ := pbft.NewRequest(k, "chain", 42, op)
	data, _ := env.Marshal()
	b.ReportAllocs()
	for b.Loop() {
		e, err := wire.DecodeEnvelope(data)
		if err != nil {
			b.Fatal(err)
		}
		r, err := pbft.DecodeRequest(e.Payload)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := kv.DecodeOp(r.Op); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBuildOp: the load generator builds one padded 100-byte put.
func BenchmarkBuildOp(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := buildOp(keyName(12345), "s12-r345", 100); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkKeyChooser: drawing a key index, uniform and zipf.
func BenchmarkKeyChooser(b *testing.B) {
	for _, dist := range []string{KeysUniform, KeysZipf} {
		k := newKeyChooser(Workload{Keys: dist}.withDefaults(), 1)
		b.Run(dist, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = k.next()
			}
		})
	}
}
