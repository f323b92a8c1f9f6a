package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat's CPU times: 100 on every Linux architecture Go
// supports (the kernel fixes it for user space whatever its internal HZ).
const clockTicks = 100

// ProcessCPU returns the CPU time (user and system) process pid used so far, from /proc/PID/stat.
func ProcessCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces: fields restart after the last ')'.
	s := string(b)
	j := strings.LastIndexByte(s, ')')
	if j < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(s[j+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad CPU times", pid)
	}
	return float64(ut+st) / clockTicks, nil
}

// tcpCounters are the kernel's byte counters of one TCP connection.
type tcpCounters struct {
	sent, received uint64
}

// TCPBytes returns, for each of the given processes, the byte counters of its TCP connections keyed by
// "local peer" address, read with ss(8) from the kernel's tcp_info (bytes_acked, bytes_received). It
// returns an error if ss is not installed. Connections closed before the call are not seen.
func TCPBytes(pids []int) (map[int]map[string]tcpCounters, error) {
	want := map[int]bool{}
	for _, p := range pids {
		if p > 0 {
			want[p] = true
		}
	}
	out := make(map[int]map[string]tcpCounters)
	if len(want) == 0 {
		return out, nil
	}
	b, err := exec.Command("ss", "-tinpH").Output()
	if err != nil {
		return nil, fmt.Errorf("ss: %w", err)
	}
	lines := strings.Split(string(b), "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if line == "" || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		// State is omitted with -H when a filter is given; without one: State Recv-Q Send-Q Local Peer users.
		local, peer := f[3], f[4]
		var pidsHere []int
		for _, part := range strings.Split(line, "pid=")[1:] {
			end := strings.IndexAny(part, ",)")
			if end < 0 {
				continue
			}
			if p, err := strconv.Atoi(part[:end]); err == nil && want[p] {
				pidsHere = append(pidsHere, p)
			}
		}
		if len(pidsHere) == 0 || i+1 >= len(lines) {
			continue
		}
		info := lines[i+1]
		if info == "" || (info[0] != ' ' && info[0] != '\t') {
			continue
		}
		i++
		c := tcpCounters{sent: fieldUint(info, "bytes_acked:"), received: fieldUint(info, "bytes_received:")}
		for _, p := range pidsHere {
			if out[p] == nil {
				out[p] = make(map[string]tcpCounters)
			}
			out[p][local+" "+peer] = c
		}
	}
	return out, nil
}

func fieldUint(s, key string) uint64 {
	j := strings.Index(s, key)
	if j < 0 {
		return 0
	}
	rest := s[j+len(key):]
	end := strings.IndexAny(rest, " \t")
	if end >= 0 {
		rest = rest[:end]
	}
	v, _ := strconv.ParseUint(rest, 10, 64)
	return v
}

// tcpDelta is what the connections of one process sent and received between two TCPBytes readings;
// connections opened in between count from zero.
func tcpDelta(before, after map[string]tcpCounters) (sent, received uint64) {
	for k, a := range after {
		b := before[k]
		if a.sent >= b.sent {
			sent += a.sent - b.sent
		}
		if a.received >= b.received {
			received += a.received - b.received
		}
	}
	return sent, received
}

// listeningPID returns the process that listens on TCP port (on any address), from /proc/net/tcp{,6}
// and the processes' file descriptors.
func listeningPID(port int) (int, error) {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) < 10 || fs[3] != "0A" { // 0A: LISTEN
				continue
			}
			c := strings.LastIndexByte(fs[1], ':')
			p, err := strconv.ParseUint(fs[1][c+1:], 16, 32)
			if err == nil && int(p) == port {
				inodes[fs[9]] = true
			}
		}
	}
	if len(inodes) == 0 {
		return 0, fmt.Errorf("no process listens on port %d", port)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range procs {
		l, err := os.Readlink(fd)
		if err != nil || !strings.HasPrefix(l, "socket:[") {
			continue
		}
		if inodes[l[len("socket:["):len(l)-1]] {
			pid, err := strconv.Atoi(strings.Split(fd, "/")[2])
			if err == nil {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("the process listening on port %d is not visible", port)
}

// NetnsTXBytes returns the bytes sent by the network interfaces (loopback excluded) of process pid's
// network namespace, if that namespace is not this process's: for a replica in a container, what the
// replica sent. ok is false for a process in this namespace (the counters would be the machine's).
func NetnsTXBytes(pid int) (tx uint64, ok bool) {
	self, err1 := os.Readlink("/proc/self/ns/net")
	theirs, err2 := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err1 != nil || err2 != nil || self == theirs {
		return 0, false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/dev", pid))
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n")[2:] {
		name, rest, found := strings.Cut(line, ":")
		if !found || strings.TrimSpace(name) == "lo" {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 9 {
			continue
		}
		v, err := strconv.ParseUint(f[8], 10, 64) // the 9th field is transmitted bytes
		if err == nil {
			tx += v
		}
	}
	return tx, true
}
