//go:build !linux

package testnet

import "syscall"

// replicaAttr puts a replica in its own process group. Other systems have no Pdeathsig: there a runner
// that dies without stopping its replicas (SIGKILL) leaves them running, and they must be stopped by
// hand (their PIDs are in the manifest; stopStale, which reads /proc, cannot check them there).
func replicaAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
