package identity

import (
	stded25519 "crypto/ed25519"
	"fmt"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/wire"
)

// Run: go test -run - -bench . -benchtime 2s ./identity/
// Payloads are 256 bytes; the signed string is fixed-size anyway (it holds the payload's digest).

func benchEnvelopes(b *testing.B, n int) (*Verifier, []*wire.Envelope) {
	b.Helper()
	keys := make([]*Key, 4)
	var pubs [][]byte
	for i := range keys {
		keys[i] = testKey(b, byte(i))
		pubs = append(pubs, keys[i].PublicKey())
	}
	v, err := NewVerifier(pubs, 0)
	if err != nil {
		b.Fatal(err)
	}
	es := make([]*wire.Envelope, n)
	payload := make([]byte, 256)
	for i := range es {
		payload[0], payload[1] = byte(i), byte(i>>8)
		e, err := wire.Seal(keys[i%len(keys)], "bench", wire.KindPrepare, append([]byte(nil), payload...))
		if err != nil {
			b.Fatal(err)
		}
		e.SigningBytes() // warm the digest cache: measure the curve work
		es[i] = e
	}
	return v, es
}

func BenchmarkSign(b *testing.B) {
	k := testKey(b, 1)
	msg := make([]byte, 256)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Sign(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify is the single-envelope path with a pinned (pre-expanded) key.
func BenchmarkVerify(b *testing.B) {
	v, es := benchEnvelopes(b, 64)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := v.Verify(es[i%len(es)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkVerifyStdlib is crypto/ed25519 on the same inputs, for comparison.
func BenchmarkVerifyStdlib(b *testing.B) {
	_, es := benchEnvelopes(b, 64)
	msgs := make([][]byte, len(es))
	for i, e := range es {
		msgs[i] = e.SigningBytes()
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		e := es[i%len(es)]
		if !stded25519.Verify(e.Author, msgs[i%len(es)], e.Sig) {
			b.Fatal("invalid")
		}
		i++
	}
}

// BenchmarkVerifyBatch reports the cost per signature (us/sig) next to the per-batch ns/op.
func BenchmarkVerifyBatch(b *testing.B) {
	for _, n := range []int{2, 4, 8, 16, 64, 256, 1024, 4096} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			v, es := benchEnvelopes(b, n)
			b.ReportAllocs()
			start := time.Now()
			for b.Loop() {
				if err := v.VerifyBatch(es); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N*n), "us/sig")
		})
	}
}

// BenchmarkVerifyBatchOneBad measures the fallback: one invalid signature in the batch.
func BenchmarkVerifyBatchOneBad(b *testing.B) {
	v, es := benchEnvelopes(b, 64)
	bad := *es[10]
	bad.Sig = append([]byte(nil), bad.Sig...)
	bad.Sig[0] ^= 1
	es[10] = &bad
	start := time.Now()
	for b.Loop() {
		if v.VerifyBatch(es) == nil {
			b.Fatal("bad signature accepted")
		}
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N*len(es)), "us/sig")
}
