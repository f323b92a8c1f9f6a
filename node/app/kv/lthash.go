package kv

import (
	"crypto/sha256"
	"encoding/binary"

	"github.com/p2pbft/p2pbft/wire"
	"lukechampine.com/blake3"
	"lukechampine.com/blake3/guts"
)

// The state digest is LtHash16 (Bellare and Micciancio's lattice-based additive hash, in the parameters Lewi
// et al. chose for Meta's update propagation; Solana's accounts "lattice hash" uses the same 1024 x 16-bit
// shape): each (key, value) pair maps to a vector of 1024 16-bit lanes through BLAKE3's extendable output,
// and the state's checksum is the lane-wise sum mod 2^16 of the vectors of all live pairs. Adding a pair adds
// its vector; removing it subtracts it. See the package documentation for why this hash.
const (
	ltLanes = 1024
	ltBytes = ltLanes * 2 // 2048-byte checksum
	ltWords = ltLanes / 4 // four 16-bit lanes per uint64
	ltHigh  = 0x8000800080008000
	ltLow   = ^uint64(ltHigh)
	// ltContext is the BLAKE3 key-derivation context that separates this use of BLAKE3 from all others.
	ltContext = "p2pbft 2026-11 kv state lthash16 v1"
	// digestTag prefixes the checksum when it is condensed into the 32-byte state digest.
	digestTag = "p2pbft/kv/state/v1\x00"
)

// ltKey is the BLAKE3 key of element hashes, derived from ltContext.
var ltKey = func() (k [8]uint32) {
	var b [32]byte
	blake3.DeriveKey(b[:], ltContext, nil)
	for i := range k {
		k[i] = binary.LittleEndian.Uint32(b[i*4:])
	}
	return k
}()

// ltHash is a checksum: 1024 lanes, lane i in bits 16*(i%4) of word i/4 (the little-endian reading of the
// 2048-byte XOF output).
type ltHash [ltWords]uint64

// add adds o lane-wise mod 2^16 (SWAR: the top bit of each lane is summed separately so that no carry
// crosses into the next lane).
func (h *ltHash) add(o *ltHash) {
	for i := range h {
		a, b := h[i], o[i]
		h[i] = ((a & ltLow) + (b & ltLow)) ^ ((a ^ b) & ltHigh)
	}
}

// sub subtracts o lane-wise mod 2^16 (setting each lane's top bit first keeps borrows inside the lane).
func (h *ltHash) sub(o *ltHash) {
	for i := range h {
		a, b := h[i], o[i]
		h[i] = ((a | ltHigh) - (b & ltLow)) ^ ((a ^ ^b) & ltHigh)
	}
}

// bytes returns the 2048-byte little-endian encoding.
func (h *ltHash) bytes() []byte {
	out := make([]byte, ltBytes)
	for i, w := range h {
		binary.LittleEndian.PutUint64(out[8*i:], w)
	}
	return out
}

// setBytes decodes the 2048-byte encoding.
func (h *ltHash) setBytes(b []byte) bool {
	if len(b) != ltBytes {
		return false
	}
	for i := range h {
		h[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
	return true
}

// digest condenses the checksum into the 32-byte state digest: SHA-256 of digestTag | the 2048-byte
// encoding, hashed from one buffer (2,048 eight-byte writes into a hash.Hash cost twice the hashing).
func (h *ltHash) digest() wire.Digest {
	var buf [len(digestTag) + ltBytes]byte
	copy(buf[:], digestTag)
	for i, w := range h {
		binary.LittleEndian.PutUint64(buf[len(digestTag)+8*i:], w)
	}
	return sha256.Sum256(buf[:])
}

// elemHasher maps (key, value) pairs to lattice vectors. It keeps scratch space, so one elemHasher serves
// one goroutine.
type elemHasher struct {
	in  []byte
	out [guts.MaxSIMD * guts.BlockSize]byte
	big *blake3.Hasher
}

// hash sets v to the vector of (key, value): the first 2048 bytes of BLAKE3-XOF, keyed with ltKey, of
// uvarint(len(key)) | key | value (the length prefix makes the encoding injective).
func (e *elemHasher) hash(v *ltHash, key, value []byte) {
	e.in = binary.AppendUvarint(e.in[:0], uint64(len(key)))
	e.in = append(e.in, key...)
	e.in = append(e.in, value...)
	e.xof(v)
}

// hashString is hash with the key as a string.
func (e *elemHasher) hashString(v *ltHash, key string, value []byte) {
	e.in = binary.AppendUvarint(e.in[:0], uint64(len(key)))
	e.in = append(e.in, key...)
	e.in = append(e.in, value...)
	e.xof(v)
}

// xof sets v to the first 2048 bytes of the keyed BLAKE3-XOF of e.in.
func (e *elemHasher) xof(v *ltHash) {
	var root guts.Node
	if len(e.in) <= guts.ChunkSize {
		// One BLAKE3 chunk: its final node, flagged as the root, is the XOF seed. This is what
		// blake3.Hasher computes for such an input, without the allocation of its output reader.
		root = guts.CompressChunk(e.in, &ltKey, 0, guts.FlagKeyedHash)
		root.Flags |= guts.FlagRoot
	} else {
		e.bigXOF(v)
		clearUpperVectors()
		return
	}
	const perCall = guts.MaxSIMD * guts.BlockSize / 8 // words per CompressBlocks call
	for off := 0; off < ltWords; off += perCall {
		root.Counter = uint64(off * 8 / guts.BlockSize)
		guts.CompressBlocks(&e.out, root)
		for i := 0; i < perCall; i++ {
			v[off+i] = binary.LittleEndian.Uint64(e.out[8*i:])
		}
	}
	clearUpperVectors()
}

// bigXOF handles inputs longer than one chunk through the library's general path.
func (e *elemHasher) bigXOF(v *ltHash) {
	if e.big == nil {
		var key [32]byte
		for i, w := range ltKey {
			binary.LittleEndian.PutUint32(key[4*i:], w)
		}
		e.big = blake3.New(32, key[:])
	}
	e.big.Reset()
	e.big.Write(e.in)
	xof := e.big.XOF()
	// Read one CompressBlocks-sized piece at a time: larger reads make the library fan out to goroutines.
	for off := 0; off < ltWords; off += len(e.out) / 8 {
		if _, err := xof.Read(e.out[:]); err != nil {
			panic("kv: blake3 XOF read: " + err.Error()) // cannot happen below 2^64 bytes
		}
		for i := 0; i < len(e.out)/8; i++ {
			v[off+i] = binary.LittleEndian.Uint64(e.out[8*i:])
		}
	}
}
