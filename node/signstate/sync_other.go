//go:build !linux

package signstate

import "os"

func fdatasync(f *os.File) error { return f.Sync() }
