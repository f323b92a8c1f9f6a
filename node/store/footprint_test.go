//go:build unix

package store

import (
	"io/fs"
	"path/filepath"
	"syscall"
	"testing"
)

// diskUsage is the space the files under dir take on disk (allocated blocks, so preallocation counts).
func diskUsage(t *testing.T, dir string) int64 {
	t.Helper()
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		} else {
			total += info.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

// A store with the default options stays small on disk: its write-ahead logs are preallocated to 110%
// of the memtable (DefaultMemTableSize), not to pebble's usual 64 MiB (a replica used ~490 MB so).
// Several rounds of close and reopen, as a restarted replica does, each start a new log.
func TestDefaultDiskFootprint(t *testing.T) {
	dir := t.TempDir()
	for round := range 3 {
		s, err := Open(dir, Options{Genesis: testGenesis, Logger: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		appendBlocks(t, s, 50)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("after round %d: %.1f MB on disk", round, float64(diskUsage(t, dir))/1e6)
	}
	const limit = 40 << 20
	if used := diskUsage(t, dir); used > limit {
		t.Fatalf("the store takes %.1f MB on disk for 150 small blocks; want at most %d MB", float64(used)/1e6, limit>>20)
	}
}
