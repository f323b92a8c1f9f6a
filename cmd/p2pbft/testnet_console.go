package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/p2pbft/p2pbft/testnet"
)

// The console of `p2pbft testnet`: what it prints while the testnet runs (endpoints, live progress) and
// the commands it reads from stdin.

// openBrowser tries to open url in the desktop's browser; failing that it only says so (the URL is
// printed anyway).
func openBrowser(url string, say func(string, ...any)) {
	opener := "xdg-open"
	if runtime.GOOS == "darwin" {
		opener = "open"
	}
	if err := exec.Command(opener, url).Start(); err != nil {
		say("could not open a browser (%v): open %s yourself", err, url)
	}
}

func printEndpoints(w io.Writer, net *testnet.Network, dir string) {
	self := selfCommand()
	abs, _ := filepath.Abs(dir)
	fmt.Fprintf(w, "\ntestnet %q: %d replicas (f=%d), files in %s\n", net.Genesis().ChainID(), net.N(), net.Genesis().F(), abs)
	for i, ni := range net.Nodes() {
		fmt.Fprintf(w, "  %-6s pid %-7d api %-28s log %s\n", ni.Name, net.PID(i), net.APIURL(i), net.LogPath(i))
		fmt.Fprintf(w, "         p2p %s\n", ni.Addr)
	}
	fmt.Fprintf(w, "\ntry, in another terminal:\n")
	fmt.Fprintf(w, "  %s tx --home %s put hello world\n", self, net.ClientHome())
	fmt.Fprintf(w, "  %s tx --home %s get hello\n", self, net.ClientHome())
	fmt.Fprintf(w, "  %s status --api %s\n", self, net.APIURL(0))
	fmt.Fprintf(w, "  curl -s %s/v1/blocks/latest\n", net.APIURL(0))
	fmt.Fprintf(w, "  %s testnet kill node0 --dir %s      (or type: kill node0)\n", self, dir)
	fmt.Fprintf(w, "type help for commands; Ctrl-C stops the testnet\n\n")
}

// readCommands applies the commands typed on standard input.
func readCommands(ctx context.Context, net *testnet.Network, say func(string, ...any), quit func()) {
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		switch fields[0] {
		case "help", "?":
			say("commands: %s NAME; status; quit   (NAME: node0 ... node%d)", strings.Join(testnet.Actions, "|"), net.N()-1)
		case "quit", "exit":
			quit()
			return
		case "status":
			for i, st := range net.Statuses(ctx) {
				if st == nil {
					say("  node%d  down", i)
					continue
				}
				say("  node%d  view %d primary %d mode %-11s height %-6d stable %-6d peers %d pending %d", i, st.View, st.Primary, st.Mode, st.Height, st.StableCheckpoint, len(st.Peers), st.Pending)
			}
		case testnet.ActionHeal:
			go func() {
				if err := net.Do(ctx, testnet.ActionHeal, "all"); err != nil {
					say("heal: %v", err)
					return
				}
				say("heal: done")
			}()
		default:
			if !slices.Contains(testnet.Actions, fields[0]) || len(fields) != 2 {
				say("unknown command %q: type help", sc.Text())
				continue
			}
			go func() {
				start := time.Now()
				if err := net.Do(ctx, fields[0], fields[1]); err != nil {
					say("%s %s: %v", fields[0], fields[1], err)
					return
				}
				say("%s %s: done in %s", fields[0], fields[1], time.Since(start).Round(time.Millisecond))
			}()
		}
	}
}

// live prints a line per second until ctx ends or quit closes.
func live(ctx context.Context, quit <-chan struct{}, net *testnet.Network, load *testnet.Load, say func(string, ...any)) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	// Per replica: the executed-requests counter and when it was read, so a replica that missed a poll
	// (or restarted, resetting its counter) does not distort the rate.
	prev := make([]float64, net.N())
	prevAt := make([]time.Time, net.N())
	start := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-quit:
			return
		case <-t.C:
		}
		qctx, cancel := context.WithTimeout(ctx, 900*time.Millisecond)
		sts := net.Statuses(qctx)
		rate := 0.0
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range net.N() {
			if sts[i] == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				m, err := net.Metrics(qctx, i)
				if err != nil {
					return
				}
				v, now := m["p2pbft_requests_executed_total"], time.Now()
				mu.Lock()
				if d, dt := v-prev[i], now.Sub(prevAt[i]).Seconds(); !prevAt[i].IsZero() && d >= 0 && dt >= 0.5 {
					rate = max(rate, d/dt)
				}
				prev[i], prevAt[i] = v, now
				mu.Unlock()
			}()
		}
		wg.Wait()
		cancel()
		var height, view uint64
		primary, up := -1, 0
		peers := make([]string, net.N())
		modes := map[string]int{}
		for i, st := range sts {
			if st == nil {
				peers[i] = "-"
				continue
			}
			up++
			peers[i] = fmt.Sprint(len(st.Peers))
			modes[st.Mode]++
			if st.Height > height {
				height = st.Height
			}
			if st.View >= view {
				view, primary = st.View, st.Primary
			}
		}
		line := fmt.Sprintf("[%s] height %-6d view %-3d primary node%-2d committed %6.1f req/s  peers %s  up %d/%d",
			fmtElapsed(time.Since(start)), height, view, primary, rate, strings.Join(peers, " "), up, net.N())
		if modes["view-change"] > 0 || modes["syncing"] > 0 {
			line += fmt.Sprintf("  (view-change %d, syncing %d)", modes["view-change"], modes["syncing"])
		}
		if load != nil {
			n, d, p50, p99 := load.Interval()
			line += fmt.Sprintf("  | load %5.1f ok/s p50 %s p99 %s", float64(n)/d.Seconds(), fmtMs(p50), fmtMs(p99))
		}
		say("%s", line)
	}
}

func fmtElapsed(d time.Duration) string {
	s := int(d.Seconds())
	return fmt.Sprintf("%02d:%02d", s/60, s%60)
}

func fmtMs(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000)
}
