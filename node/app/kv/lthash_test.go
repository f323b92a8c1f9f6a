package kv

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"lukechampine.com/blake3"
)

func laneOf(h *ltHash, i int) uint16 { return uint16(h[i/4] >> (16 * (i % 4))) }

func randomLt(r *rand.Rand) *ltHash {
	var h ltHash
	for i := range h {
		h[i] = r.Uint64()
	}
	return &h
}

func TestLtHashLaneArithmetic(t *testing.T) {
	seed := uint64(rand.Int64())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 1))
	for n := 0; n < 200; n++ {
		a, b := randomLt(r), randomLt(r)
		if n%10 == 0 { // extremes: all-ones lanes and zero lanes carry and borrow the most
			for i := range a {
				a[i], b[i] = ^uint64(0), uint64(n/10%2)*^uint64(0)
			}
		}
		sum, diff := *a, *a
		sum.add(b)
		diff.sub(b)
		for i := 0; i < ltLanes; i++ {
			if got, want := laneOf(&sum, i), laneOf(a, i)+laneOf(b, i); got != want {
				t.Fatalf("seed %d: add lane %d = %d, want %d", seed, i, got, want)
			}
			if got, want := laneOf(&diff, i), laneOf(a, i)-laneOf(b, i); got != want {
				t.Fatalf("seed %d: sub lane %d = %d, want %d", seed, i, got, want)
			}
		}
		back := sum
		back.sub(b)
		if back != *a {
			t.Fatalf("seed %d: (a+b)-b != a", seed)
		}
	}
}

// TestElemHashMatchesBlake3 checks the single-chunk fast path (and the long-input path) against the
// library's keyed XOF.
func TestElemHashMatchesBlake3(t *testing.T) {
	var key [32]byte
	for i, w := range ltKey {
		binary.LittleEndian.PutUint32(key[4*i:], w)
	}
	var derived [32]byte
	blake3.DeriveKey(derived[:], ltContext, nil)
	if key != derived {
		t.Fatal("ltKey is not the derived key")
	}
	var e elemHasher
	for _, size := range []int{0, 1, 63, 64, 65, 500, 1021, 1022, 1023, 1024, 1025, 4096, 70000} {
		k := []byte("key")
		v := bytes.Repeat([]byte{byte(size)}, size)
		in := binary.AppendUvarint(nil, uint64(len(k)))
		in = append(append(in, k...), v...)
		h := blake3.New(ltBytes, key[:])
		h.Write(in)
		want := make([]byte, ltBytes)
		h.XOF().Read(want)
		var got ltHash
		e.hash(&got, k, v)
		if !bytes.Equal(got.bytes(), want) {
			t.Fatalf("value of %d bytes: element hash differs from blake3 keyed XOF", size)
		}
	}
}

func TestElemHashInjective(t *testing.T) {
	var e elemHasher
	var a, b ltHash
	e.hash(&a, []byte("ab"), []byte("c"))
	e.hash(&b, []byte("a"), []byte("bc"))
	if a == b {
		t.Fatal("(ab, c) and (a, bc) hash alike")
	}
}
