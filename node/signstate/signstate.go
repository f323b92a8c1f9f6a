// Package signstate keeps a replica's signed high-water mark: the highest view, and the highest sequence
// number, of the consensus votes it has signed and sent (PRE-PREPARE, PREPARE, COMMIT, VIEW-CHANGE,
// NEW-VIEW), in a small file of its own next to the key, apart from the store.
//
// The store's log already holds everything the replica signed, written before the message leaves. The
// mark is there for when the store does not: a write-ahead log whose tail was cut off (the store then
// reopens a few blocks lower and says nothing), a data folder restored from an old backup or wiped. A
// replica that restarts with such a store would vote again in slots where it already voted and, not
// knowing what it said, could contradict itself: an equivocation that a correct replica must never make,
// and that, with f faulty replicas, can break agreement. Comparing the mark with what the store holds at
// start tells a replica that it forgot something; the engine then does not sign a vote at or below the
// mark (pbft.Config.SignedMark) until it has moved past it: it catches up from the others instead.
//
// The file is written after the store's batch for the same messages is durable and before the messages
// leave, and only when a message raises the mark. So with a healthy store the mark never exceeds what the
// store holds (no false alarm after a crash), and it is never below what was sent. Each write is one
// pwrite and one fdatasync of a 256-byte slot; two slots alternate, each with a generation and a
// checksum, so a write torn by a crash leaves the other slot valid.
package signstate

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sync"
)

// FileName is the file's name in the node's home directory.
const FileName = "signed_state"

// slotSize is the size of each of the file's two slots: one JSON line, padded with spaces.
const slotSize = 256

// Mark is a signed high-water mark: every consensus vote the replica signed has a view <= View and, for the
// votes that have one, a sequence number <= Seq.
type Mark struct {
	View uint64 `json:"view"`
	Seq  uint64 `json:"seq"`
}

// Max returns the componentwise maximum of m and o.
func (m Mark) Max(o Mark) Mark {
	return Mark{View: max(m.View, o.View), Seq: max(m.Seq, o.Seq)}
}

// Covers says whether o is at or below m in both components.
func (m Mark) Covers(o Mark) bool { return o.View <= m.View && o.Seq <= m.Seq }

// IsZero says whether the mark records nothing.
func (m Mark) IsZero() bool { return m == Mark{} }

func (m Mark) String() string { return fmt.Sprintf("view %d seq %d", m.View, m.Seq) }

// record is one slot's content.
type record struct {
	// Chain is the hex digest of the genesis the mark belongs to: a mark from another chain means nothing.
	Chain string `json:"chain"`
	Gen   uint64 `json:"gen"`
	Mark
	// Height is a height the store had reached when the file was last written at a clean stop (a lower
	// bound of the store's head from then on).
	Height uint64 `json:"height,omitempty"`
	CRC    uint32 `json:"crc"`
}

func (r record) checksum() uint32 {
	r.CRC = 0
	b, _ := json.Marshal(r)
	return crc32.ChecksumIEEE(b)
}

// ErrCorrupt says that neither slot of the file holds a valid record.
var ErrCorrupt = errors.New("signstate: corrupt file")

// File is an open signed-state file. Its methods are safe for concurrent use.
type File struct {
	mu     sync.Mutex
	f      *os.File
	path   string
	chain  string
	gen    uint64
	mark   Mark
	height uint64
	sync   bool
}

// Open opens (creating it if missing) the file at path for the chain whose genesis digest is genesis. A
// file written for another genesis is reported by foreign and reset to a zero mark. sync says whether
// each raise is fsynced (a replica that does not fsync its store, store.sync = false, need not either).
func Open(path string, genesis []byte, sync bool) (f *File, foreign bool, err error) {
	fh, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("signstate: open %s: %w", path, err)
	}
	f = &File{f: fh, path: path, chain: hex.EncodeToString(genesis), sync: sync}
	rec, empty, err := f.read()
	switch {
	case err != nil:
		fh.Close()
		return nil, false, err
	case empty:
		// A new file: write a zero record, so that a later corruption is not mistaken for a new file.
		if err := f.write(Mark{}); err != nil {
			fh.Close()
			return nil, false, err
		}
	case rec.Chain != f.chain:
		foreign = true
		f.gen = rec.Gen
		if err := f.write(Mark{}); err != nil {
			fh.Close()
			return nil, false, err
		}
	default:
		f.gen, f.mark, f.height = rec.Gen, rec.Mark, rec.Height
	}
	return f, foreign, nil
}

// read returns the valid slot with the highest generation; empty if the file has no content at all.
func (f *File) read() (rec record, empty bool, err error) {
	buf := make([]byte, 2*slotSize)
	n, err := f.f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return record{}, false, fmt.Errorf("signstate: read %s: %w", f.path, err)
	}
	if n == 0 {
		return record{}, true, nil
	}
	found := false
	var reasons []string
	for i := 0; i < 2; i++ {
		if (i+1)*slotSize > n {
			reasons = append(reasons, fmt.Sprintf("slot %d missing", i))
			continue
		}
		slot := bytes.TrimRight(buf[i*slotSize:(i+1)*slotSize], " \n")
		var r record
		if err := json.Unmarshal(slot, &r); err != nil {
			reasons = append(reasons, fmt.Sprintf("slot %d: %v", i, err))
			continue
		}
		if r.CRC != r.checksum() {
			reasons = append(reasons, fmt.Sprintf("slot %d: checksum mismatch", i))
			continue
		}
		if !found || r.Gen > rec.Gen {
			rec, found = r, true
		}
	}
	if !found {
		return record{}, false, fmt.Errorf("%w: %s (%v)", ErrCorrupt, f.path, reasons)
	}
	return rec, false, nil
}

// write stores m in the next slot, with the current height.
func (f *File) write(m Mark) error {
	r := record{Chain: f.chain, Gen: f.gen + 1, Mark: m, Height: f.height}
	r.CRC = r.checksum()
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("signstate: encode: %w", err)
	}
	if len(b) >= slotSize {
		return fmt.Errorf("signstate: record of %d bytes does not fit a slot", len(b))
	}
	slot := bytes.Repeat([]byte{' '}, slotSize)
	copy(slot, b)
	slot[slotSize-1] = '\n'
	if _, err := f.f.WriteAt(slot, int64(r.Gen%2)*slotSize); err != nil {
		return fmt.Errorf("signstate: write %s: %w", f.path, err)
	}
	if f.sync {
		if err := fdatasync(f.f); err != nil {
			return fmt.Errorf("signstate: sync %s: %w", f.path, err)
		}
	}
	f.gen, f.mark = r.Gen, m
	return nil
}

// Mark returns the current mark.
func (f *File) Mark() Mark {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mark
}

// Raise makes the mark cover m, writing (and syncing) the file if it did not. It returns whether it wrote.
func (f *File) Raise(m Mark) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mark.Covers(m) {
		return false, nil
	}
	return true, f.write(f.mark.Max(m))
}

// Height returns the store height recorded at the last clean stop (0 if none).
func (f *File) Height() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.height
}

// Stopped records, at a clean stop, the height the store has reached (durably): the next start checks
// that the store still has it.
func (f *File) Stopped(height uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.f == nil || height <= f.height {
		return nil
	}
	old := f.height
	f.height = height
	if err := f.write(f.mark); err != nil {
		f.height = old
		return err
	}
	return nil
}

// Close closes the file.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.f == nil {
		return nil
	}
	err := f.f.Close()
	f.f = nil
	return err
}

// State is what the file holds.
type State struct {
	Mark
	// Chain is the hex digest of the genesis the mark belongs to.
	Chain string
	// Height is the store's height at the last clean stop.
	Height uint64
}

// Read returns what the file at path holds without opening it for writing (for the reset command). A
// missing or empty file gives ok false.
func Read(path string) (st State, ok bool, err error) {
	fh, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return State{}, false, nil
	}
	if err != nil {
		return State{}, false, fmt.Errorf("signstate: open %s: %w", path, err)
	}
	defer fh.Close()
	f := &File{f: fh, path: path}
	rec, empty, err := f.read()
	if err != nil || empty {
		return State{}, false, err
	}
	return State{Mark: rec.Mark, Chain: rec.Chain, Height: rec.Height}, true, nil
}
