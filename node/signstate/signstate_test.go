package signstate

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

var (
	genesisA = bytes.Repeat([]byte{0xa}, 32)
	genesisB = bytes.Repeat([]byte{0xb}, 32)
)

func open(t *testing.T, path string, genesis []byte) (*File, bool) {
	t.Helper()
	f, foreign, err := Open(path, genesis, true)
	if err != nil {
		t.Fatal(err)
	}
	return f, foreign
}

// The mark only goes up, is written only when raised, and survives a reopen with the height of the last
// clean stop.
func TestRaiseAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	f, foreign := open(t, path, genesisA)
	if foreign || !f.Mark().IsZero() || f.Height() != 0 {
		t.Fatalf("new file: foreign %v, mark %v, height %d", foreign, f.Mark(), f.Height())
	}
	steps := []struct {
		raise Mark
		wrote bool
		want  Mark
	}{
		{Mark{View: 0, Seq: 5}, true, Mark{0, 5}},
		{Mark{View: 0, Seq: 3}, false, Mark{0, 5}},
		{Mark{View: 1, Seq: 2}, true, Mark{1, 5}},
		{Mark{View: 1, Seq: 5}, false, Mark{1, 5}},
		{Mark{View: 0, Seq: 9}, true, Mark{1, 9}},
	}
	for i, s := range steps {
		wrote, err := f.Raise(s.raise)
		if err != nil {
			t.Fatal(err)
		}
		if wrote != s.wrote || f.Mark() != s.want {
			t.Fatalf("step %d: raise %v wrote %v, mark %v; want %v, %v", i, s.raise, wrote, f.Mark(), s.wrote, s.want)
		}
	}
	if err := f.Stopped(42); err != nil {
		t.Fatal(err)
	}
	if err := f.Stopped(40); err != nil || f.Height() != 42 {
		t.Fatalf("a lower stop height moved the record to %d (%v)", f.Height(), err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	st, ok, err := Read(path)
	if err != nil || !ok || st.Mark != (Mark{1, 9}) || st.Height != 42 {
		t.Fatalf("Read: %+v, %v, %v", st, ok, err)
	}
	g, foreign := open(t, path, genesisA)
	defer g.Close()
	if foreign || g.Mark() != (Mark{1, 9}) || g.Height() != 42 {
		t.Fatalf("reopened: foreign %v, mark %v, height %d", foreign, g.Mark(), g.Height())
	}
	// Raising after a reopen keeps the height.
	if _, err := g.Raise(Mark{2, 10}); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := Read(path); st.Height != 42 || st.Mark != (Mark{2, 10}) {
		t.Fatalf("after a raise: %+v", st)
	}
}

// A write torn by a crash (garbage in the newest slot) leaves the older slot, one raise behind; both
// slots bad is an error that names the file, not a silent zero mark.
func TestTornAndCorruptSlots(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	f, _ := open(t, path, genesisA)
	for seq := uint64(1); seq <= 4; seq++ {
		if _, err := f.Raise(Mark{Seq: seq}); err != nil {
			t.Fatal(err)
		}
	}
	newest := int64(f.gen%2) * slotSize
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	torn := bytes.Clone(raw)
	copy(torn[newest+10:], "\x00garbage\x00")
	if err := os.WriteFile(path, torn, 0o600); err != nil {
		t.Fatal(err)
	}
	g, _ := open(t, path, genesisA)
	if g.Mark() != (Mark{Seq: 3}) {
		t.Fatalf("after a torn write the mark is %v, want the previous one (seq 3)", g.Mark())
	}
	// The next write goes to the torn slot, not over the good one.
	if _, err := g.Raise(Mark{Seq: 7}); err != nil {
		t.Fatal(err)
	}
	g.Close()
	if st, ok, err := Read(path); err != nil || !ok || st.Seq != 7 {
		t.Fatalf("after repairing the torn slot: %+v, %v, %v", st, ok, err)
	}

	// A flipped bit that keeps the JSON valid fails the checksum.
	raw, _ = os.ReadFile(path)
	flipped := bytes.Replace(raw, []byte(`"seq":7`), []byte(`"seq":1`), 1)
	if bytes.Equal(flipped, raw) {
		t.Fatal("test setup: no seq 7 in the file")
	}
	if err := os.WriteFile(path, flipped, 0o600); err != nil {
		t.Fatal(err)
	}
	if st, _, err := Read(path); err != nil || st.Seq == 1 {
		t.Fatalf("a record with a bad checksum was taken: %+v, %v", st, err)
	}

	bad := bytes.Repeat([]byte("x"), 2*slotSize)
	if err := os.WriteFile(path, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Open(path, genesisA, true); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("both slots bad: err = %v, want ErrCorrupt", err)
	}
	if _, _, err := Read(path); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Read of both slots bad: err = %v, want ErrCorrupt", err)
	}
}

// A file of another chain (another genesis) is reported and starts afresh: its mark means nothing here.
func TestForeignChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	f, _ := open(t, path, genesisA)
	if _, err := f.Raise(Mark{View: 3, Seq: 30}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	g, foreign := open(t, path, genesisB)
	defer g.Close()
	if !foreign || !g.Mark().IsZero() {
		t.Fatalf("other genesis: foreign %v, mark %v", foreign, g.Mark())
	}
	if st, _, _ := Read(path); st.Chain == "" || !st.Mark.IsZero() {
		t.Fatalf("after the reset the file holds %+v", st)
	}
}

// A missing file reads as nothing, not an error.
func TestReadMissing(t *testing.T) {
	st, ok, err := Read(filepath.Join(t.TempDir(), FileName))
	if err != nil || ok || !st.Mark.IsZero() {
		t.Fatalf("missing file: %+v, %v, %v", st, ok, err)
	}
}

// Concurrent raises end at the maximum of all of them.
func TestConcurrentRaise(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	f, _, err := Open(path, genesisA, false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				if _, err := f.Raise(Mark{View: uint64(g), Seq: uint64(i*4 + g)}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if f.Mark() != (Mark{View: 3, Seq: 199}) {
		t.Fatalf("mark %v", f.Mark())
	}
	if st, _, _ := Read(path); st.Mark != (Mark{View: 3, Seq: 199}) {
		t.Fatalf("file holds %+v", st)
	}
}

// Whatever bytes the file holds, reading it gives a record with a valid checksum or an error, never a
// panic; and Open never takes a corrupt file for a new one.
func FuzzRead(f *testing.F) {
	dir := f.TempDir()
	seed := filepath.Join(dir, "seed")
	sf, _, err := Open(seed, genesisA, false)
	if err != nil {
		f.Fatal(err)
	}
	if _, err := sf.Raise(Mark{1, 2}); err != nil {
		f.Fatal(err)
	}
	sf.Close()
	good, err := os.ReadFile(seed)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte("{}"))
	f.Add(bytes.Repeat([]byte{' '}, 2*slotSize))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), FileName)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		st, ok, err := Read(path)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("read error that is not ErrCorrupt: %v", err)
			}
			if _, _, oerr := Open(path, genesisA, false); !errors.Is(oerr, ErrCorrupt) {
				t.Fatalf("Read said corrupt, Open said %v", oerr)
			}
			return
		}
		if !ok {
			if len(data) != 0 {
				t.Fatalf("non-empty file (%d bytes) read as no file", len(data))
			}
			return
		}
		// A record that passed its checksum opens to the same mark for its own chain.
		if g, err := hex.DecodeString(st.Chain); err == nil {
			f, foreign, err := Open(path, g, false)
			if err != nil || foreign || f.Mark() != st.Mark || f.Height() != st.Height {
				t.Fatalf("Read gave %+v; Open gave foreign %v, err %v", st, foreign, err)
			}
			f.Close()
		}
	})
}
