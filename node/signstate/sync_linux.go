package signstate

import (
	"os"

	"golang.org/x/sys/unix"
)

// fdatasync flushes the file's data (the slots never change its size, so its metadata need not follow).
func fdatasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }
