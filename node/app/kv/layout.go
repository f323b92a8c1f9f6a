package kv

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/p2pbft/p2pbft/wire"
)

// Storage layout (inside the namespace the node lends the app):
//
//	"M"                                   meta: generation, committed height, checksum
//	"G" gen | "V" esc(key) | ^height      a version of key written at height: 1|value, or 0 (a tombstone)
//	"G" gen | "P" height                  a kept snapshot at height -> its digest
//	"G" gen | "Q" height | esc(key)       garbage: versions of key (u64 heights) that may go once no kept
//	                                      snapshot is older than height
//
// A generation is one complete state; a restore builds the next generation beside the current one and
// switches the meta record to it in one write. esc(key) escapes 0x00 as 0x00 0xFF and ends with 0x00 0x01,
// so it is prefix-free and keeps key order; the bitwise-complemented height makes the newest version of a
// key sort first, so "the value of key at height h" is one seek to esc(key)|^h.
var keyMeta = []byte("M")

const (
	tagTombstone = 0
	tagValue     = 1
)

func genPrefix(gen uint64) []byte { return binary.BigEndian.AppendUint64([]byte{'G'}, gen) }

// genBounds returns the key range of a generation.
func genBounds(gen uint64) (lo, hi []byte) {
	if gen == ^uint64(0) {
		return genPrefix(gen), []byte{'H'}
	}
	return genPrefix(gen), genPrefix(gen + 1)
}

// escape appends esc(key) to dst.
func escape[K ~string | ~[]byte](dst []byte, key K) []byte {
	for i := 0; i < len(key); i++ {
		if c := key[i]; c == 0 {
			dst = append(dst, 0, 0xff)
		} else {
			dst = append(dst, c)
		}
	}
	return append(dst, 0, 1)
}

// unescape decodes an escaped key at the start of b and returns it and the rest of b.
func unescape(b []byte) (key, rest []byte, err error) {
	return appendUnescaped(make([]byte, 0, len(b)), b)
}

// appendUnescaped is unescape appending the key to dst.
func appendUnescaped(dst, b []byte) (key, rest []byte, err error) {
	key = dst
	for i := 0; i < len(b); i++ {
		if b[i] != 0 {
			key = append(key, b[i])
			continue
		}
		if i+1 >= len(b) {
			break
		}
		switch b[i+1] {
		case 0xff:
			key = append(key, 0)
			i++
		case 1:
			return key, b[i+2:], nil
		default:
			return nil, nil, fmt.Errorf("kv: bad key escape %x", b[i+1])
		}
	}
	return nil, nil, fmt.Errorf("kv: unterminated key")
}

// versionPrefix is the prefix of all versions of key.
func versionPrefix(gen uint64, key []byte) []byte { return appendVersionPrefix(nil, gen, key) }

// appendVersionPrefix appends versionPrefix(gen, key) to dst.
func appendVersionPrefix[K ~string | ~[]byte](dst []byte, gen uint64, key K) []byte {
	dst = binary.BigEndian.AppendUint64(append(dst, 'G'), gen)
	return escape(append(dst, 'V'), key)
}

func versionKey(gen uint64, key []byte, height uint64) []byte {
	return binary.BigEndian.AppendUint64(versionPrefix(gen, key), ^height)
}

func versionsStart(gen uint64) []byte { return append(genPrefix(gen), 'V') }
func versionsEnd(gen uint64) []byte   { return append(genPrefix(gen), 'W') }

// parseVersionKey splits a version key of generation gen.
func parseVersionKey(gen uint64, k []byte) (key []byte, height uint64, err error) {
	p := versionsStart(gen)
	if !bytes.HasPrefix(k, p) {
		return nil, 0, fmt.Errorf("kv: %x is not a version key", k)
	}
	key, rest, err := unescape(k[len(p):])
	if err != nil {
		return nil, 0, err
	}
	if len(rest) != 8 {
		return nil, 0, fmt.Errorf("kv: version key %x: bad height", k)
	}
	return key, ^binary.BigEndian.Uint64(rest), nil
}

func pinKey(gen, height uint64) []byte {
	return binary.BigEndian.AppendUint64(append(genPrefix(gen), 'P'), height)
}
func pinsStart(gen uint64) []byte { return append(genPrefix(gen), 'P') }
func pinsEnd(gen uint64) []byte   { return append(genPrefix(gen), 'Q') }

func garbageKey(gen, height uint64, key []byte) []byte {
	return appendGarbageKey(nil, gen, height, key)
}

// appendGarbageKey appends garbageKey(gen, height, key) to dst.
func appendGarbageKey[K ~string | ~[]byte](dst []byte, gen, height uint64, key K) []byte {
	dst = binary.BigEndian.AppendUint64(append(dst, 'G'), gen)
	dst = binary.BigEndian.AppendUint64(append(dst, 'Q'), height)
	return escape(dst, key)
}
func garbageStart(gen uint64) []byte { return append(genPrefix(gen), 'Q') }

// garbageEnd is the exclusive end of the garbage entries with height <= upTo.
func garbageEnd(gen, upTo uint64) []byte {
	if upTo == ^uint64(0) {
		return append(genPrefix(gen), 'R')
	}
	return binary.BigEndian.AppendUint64(append(genPrefix(gen), 'Q'), upTo+1)
}

// meta is the record that names the committed state.
type meta struct {
	_       struct{} `cbor:",toarray"`
	Version uint8
	Gen     uint64
	Height  uint64
	Sum     []byte // the 2048-byte checksum
}

const metaVersion = 1

func encodeMeta(gen, height uint64, sum *ltHash) ([]byte, error) {
	return wire.Marshal(&meta{Version: metaVersion, Gen: gen, Height: height, Sum: sum.bytes()})
}

func decodeMeta(b []byte) (gen, height uint64, sum ltHash, err error) {
	var m meta
	if err := wire.Unmarshal(b, &m); err != nil {
		return 0, 0, sum, fmt.Errorf("kv: meta record: %w", err)
	}
	if m.Version != metaVersion {
		return 0, 0, sum, fmt.Errorf("kv: meta record version %d, this build reads %d", m.Version, metaVersion)
	}
	if !sum.setBytes(m.Sum) {
		return 0, 0, sum, fmt.Errorf("kv: meta record: checksum of %d bytes", len(m.Sum))
	}
	return m.Gen, m.Height, sum, nil
}
