package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// walFiles returns the store's write-ahead log files, largest first.
func walFiles(t *testing.T, dir string) []string {
	t.Helper()
	logs, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	var best int64 = -1
	for _, l := range logs {
		st, err := os.Stat(l)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > best {
			out = append([]string{l}, out...)
			best = st.Size()
		} else {
			out = append(out, l)
		}
	}
	return out
}

// Garbage in the middle of the write-ahead log is reported as ErrCorrupt (the caller can say what to
// do), and Wipe, refused while the store is open, clears it for a fresh start.
func TestCorruptLogAndWipe(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s, err := Open(dir, Options{Genesis: testGenesis, Logger: quiet(), MemTableSize: 4 << 20, CacheSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	appendBlocks(t, s, 50)
	if _, _, err := Wipe(dir); !errors.Is(err, ErrInUse) {
		t.Fatalf("Wipe of an open store: err = %v, want ErrInUse", err)
	}
	if s.Head().Height != 50 {
		t.Fatalf("a refused wipe changed the store: head %d", s.Head().Height)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Garbage in the last write-ahead log reads as a torn tail: pebble opens the store at the last
	// record before it, lower than it was. The store cannot tell this from a crash; the node's signed
	// state (node/signstate) records the height of its last clean stop and says so.
	logs := walFiles(t, dir)
	if len(logs) == 0 {
		t.Fatal("no write-ahead log in the store")
	}
	b, err := os.ReadFile(logs[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 4096 {
		t.Fatalf("log %s is only %d bytes", logs[0], len(b))
	}
	orig := append([]byte(nil), b...)
	copy(b[len(b)/3:], strings.Repeat("\xa5garbage", 64))
	if err := os.WriteFile(logs[0], b, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{Genesis: testGenesis, Logger: quiet()})
	if err == nil {
		h := s.Head().Height
		s.Close()
		if h >= 50 {
			t.Fatalf("garbage a third into the log left the head at %d", h)
		}
		t.Logf("garbage in the log's middle: the store reopened at height %d of 50", h)
	} else if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open with garbage in the log: err = %v, want ErrCorrupt or a lower head", err)
	}
	if err := os.WriteFile(logs[0], orig, 0o600); err != nil {
		t.Fatal(err)
	}

	// A damaged manifest cannot be read past: ErrCorrupt, which the node turns into advice.
	manifests, err := filepath.Glob(filepath.Join(dir, "MANIFEST-*"))
	if err != nil || len(manifests) == 0 {
		t.Fatalf("no manifest: %v", err)
	}
	for _, m := range manifests {
		b, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		for i := 7; i < len(b); i += 13 {
			b[i] ^= 0x5a
		}
		if err := os.WriteFile(m, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, err = Open(dir, Options{Genesis: testGenesis, Logger: quiet()})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open with a damaged manifest: err = %v, want ErrCorrupt", err)
	}
	t.Logf("damaged manifest: %v", err)

	files, size, err := Wipe(dir)
	if err != nil || files == 0 || size == 0 {
		t.Fatalf("Wipe: %d files, %d bytes, %v", files, size, err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after Wipe the folder is still there: %v", err)
	}
	if n, _, err := Wipe(dir); n != 0 || err != nil {
		t.Fatalf("Wipe of a missing store: %d files, %v", n, err)
	}
	s2 := openTest(t, dir)
	if s2.Head().Height != 0 {
		t.Fatalf("after a wipe the store starts at height %d", s2.Head().Height)
	}
}
