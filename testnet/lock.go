package testnet

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// LockFile is the file in a testnet folder that the process running the testnet holds locked.
const LockFile = "testnet.lock"

// ErrInUse is wrapped by Lock's error when another process runs the testnet.
var ErrInUse = errors.New("testnet in use")

// Lock makes this process the one that runs the testnet: it takes an exclusive lock on DIR/testnet.lock
// (flock: released by the kernel when the process dies, however it dies) and records its PID there. A
// second `p2pbft testnet` on the same folder fails at once instead of taking over the first one's
// replicas; replicas left by a runner that died are stopped only by a runner that holds the lock. Call the
// returned function to release it.
func (n *Network) Lock() (release func(), err error) {
	path := filepath.Join(n.dir, LockFile)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("testnet: lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		owner := "another process"
		if b, rerr := os.ReadFile(path); rerr == nil {
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 {
				owner = fmt.Sprintf("process %d", pid)
			}
		}
		f.Close()
		return nil, fmt.Errorf("testnet: %s is run by %s: %w (stop it first, or drive it from here with `p2pbft testnet kill|stop|start|restart|pause|resume|nodes NAME --dir %s`)",
			n.dir, owner, ErrInUse, n.dir)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() {
		_ = f.Truncate(0)
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
