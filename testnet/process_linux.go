package testnet

import "syscall"

// replicaAttr puts a replica in its own process group and asks the kernel to send it SIGTERM when the
// runner dies (Pdeathsig, Linux only): a runner killed by SIGKILL, or by a write to a closed pipe, has no
// chance to stop its replicas itself.
//
// Pdeathsig fires when the thread that started the child exits, not only the process; the Go runtime
// does not end its threads while the process lives (unless a goroutine that locked its thread exits), so
// for this program the two are the same.
func replicaAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
