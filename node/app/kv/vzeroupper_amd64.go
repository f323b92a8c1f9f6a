package kv

import "golang.org/x/sys/cpu"

// haveAVX says whether VZEROUPPER exists on this CPU.
var haveAVX = cpu.X86.HasAVX

// clearUpperVectors ends a stretch of AVX-512 code. The BLAKE3 library's AVX-512 routines
// (compressBlocksAVX512, compressChunksAVX512) return without VZEROUPPER, leaving the upper halves of the
// vector registers dirty; until something clears them, every legacy-SSE instruction the thread runs pays
// a transition penalty. Go code and the standard library's SHA-256 (SHA-NI) are legacy SSE: measured on
// a Xeon with AVX-512 (BenchmarkDigestAfterHash), condensing the state digest right after an element hash
// took ~280-500 us instead of ~4 us.
func clearUpperVectors() {
	if haveAVX {
		vzeroupper()
	}
}

// vzeroupper executes VZEROUPPER (vzeroupper_amd64.s).
//
//go:noescape
func vzeroupper()
