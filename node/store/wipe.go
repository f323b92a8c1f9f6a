package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cockroachdb/pebble/vfs"
)

// ErrInUse says that another process has the store open.
var ErrInUse = errors.New("store: in use by another process")

// Wipe deletes the store in dir and everything in it, and returns how many files and bytes it removed.
// It takes the store's lock first (the one Open takes), so it refuses, with ErrInUse, while a running
// replica has the store open. A missing dir is not an error (nothing to remove).
func Wipe(dir string) (files int, bytes int64, err error) {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return 0, 0, nil
	} else if err != nil {
		return 0, 0, fmt.Errorf("store: wipe %s: %w", dir, err)
	}
	lock, err := vfs.Default.Lock(filepath.Join(dir, "LOCK"))
	if err != nil {
		return 0, 0, fmt.Errorf("%w: %s (%v): stop the replica first", ErrInUse, dir, err)
	}
	werr := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if info, err := d.Info(); err == nil {
			files++
			bytes += info.Size()
		}
		return nil
	})
	// The lock is released after the removal: nothing may open the store halfway through.
	rerr := os.RemoveAll(dir)
	cerr := lock.Close()
	if err := errors.Join(werr, rerr, cerr); err != nil {
		return files, bytes, fmt.Errorf("store: wipe %s: %w", dir, err)
	}
	return files, bytes, nil
}
