package testnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/p2pbft/p2pbft/ui"
)

// findChromium returns the path of a Chromium (or Chrome) binary: $P2PBFT_CHROMIUM, else the first of the
// usual names on $PATH. Without one the test skips, unless P2PBFT_REQUIRE_CHROMIUM=1 (CI), where it fails.
func findChromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("P2PBFT_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless_shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "no chromium binary on $PATH (apt-get install chromium, or set P2PBFT_CHROMIUM): the browser test of the live page does not run"
	if os.Getenv("P2PBFT_REQUIRE_CHROMIUM") == "1" {
		t.Fatal(msg + ", and P2PBFT_REQUIRE_CHROMIUM=1 requires it")
	}
	t.Skip(msg)
	return ""
}

// TestUIBrowser loads the live page of a running 4-replica testnet in headless Chromium: it shows the 4
// replicas up and new slots arriving under a small load; a click on the primary's kill button (through the
// control endpoint and Network.Do) kills its process, and the page shows the view change, complete with
// its first commit, and the replica down; a backup paused and resumed from the page stops (and is shown
// not answering) and comes back; a backup's own page (on its HTTP API) shows it in the new view.
// Screenshots of the end state are kept in the test's artifact
// folder (go test -artifacts -outputdir DIR keeps it; the path is logged).
func TestUIBrowser(t *testing.T) {
	needE2E(t)
	chrome := findChromium(t)
	start := time.Now()
	net := newNet(t, 4)
	if err := net.Start(ctxFor(t, 90*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := net.WaitConnected(ctxFor(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}

	ln, err := listenLoopback()
	if err != nil {
		t.Fatal(err)
	}
	uiCtx, stopUI := context.WithCancel(context.Background())
	uiDone := make(chan error, 1)
	go func() {
		uiDone <- net.ServeUI(uiCtx, ln, UIOptions{Stream: ui.Options{Interval: 250 * time.Millisecond}})
	}()
	t.Cleanup(func() {
		stopUI()
		if err := <-uiDone; err != nil {
			t.Errorf("page server: %v", err)
		}
	})
	url := "http://" + ln.Addr().String() + "/ui/"

	c := newClient(t, net, 2, 4)
	// A slow load: the swimlane shows the last 32 slots, and the new view's first slot must still be among
	// them when the page is checked, however fast the backlog of the view change is ordered.
	load, err := StartLoad(ctxFor(t, 3*time.Minute), LoadConfig{Client: c, Workers: 2, Rate: 3, Prefix: "ui", OpTimeout: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer load.Stop()

	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome),
		chromedp.NoSandbox, // Chromium refuses to run as root with its sandbox (CI runs as root)
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.DisableGPU,
		chromedp.WindowSize(1366, 1000),
	)...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()
	// Every wait below has its own deadline; this one bounds the whole browser session.
	bctx, cancel := context.WithTimeout(bctx, 2*time.Minute)
	defer cancel()

	shoot := func(name string) {
		sctx, cancel := context.WithTimeout(bctx, 20*time.Second)
		defer cancel()
		png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100)) // quality 100: PNG
		if err != nil {
			t.Logf("screenshot: %v", err)
			return
		}
		p := filepath.Join(t.ArtifactDir(), name)
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Logf("screenshot: %v", err)
			return
		}
		t.Logf("screenshot of the page: %s", p)
	}
	// waitJS waits until the expression is true in the page, within d.
	waitJS := func(what, expr string, d time.Duration) {
		t.Helper()
		began := time.Now()
		wctx, cancel := context.WithTimeout(bctx, d)
		defer cancel()
		if _, err := chromedp.Run(wctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(100*time.Millisecond))); err != nil {
			shoot("failure.png")
			lctx, cancel := context.WithTimeout(bctx, 10*time.Second)
			defer cancel()
			log, _ := chromedp.Run(lctx, chromedp.Text("#log"))
			t.Fatalf("the page did not show %s within %s: %v\npage's event log:\n%s", what, d, err, log)
		}
		t.Logf("the page shows %s (after %s)", what, time.Since(began).Round(time.Millisecond))
	}
	evalInt := func(expr string) int {
		t.Helper()
		v, err := chromedp.Run(bctx, chromedp.Evaluate[int](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		return v
	}

	if err := chromedp.Do(bctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("load %s: %v", url, err)
	}
	waitJS("4 replicas up", `document.querySelectorAll('#replicas li[data-up="true"]').length === 4`, 30*time.Second)
	// Every action the page offers but heal (one button for all) has a button per replica; this testnet
	// has no admin API, so there is no partition button.
	perReplica := len(slices.DeleteFunc(net.PageActions(), func(a string) bool { return a == ActionHeal }))
	if n := evalInt(`document.querySelectorAll('#replicas button[data-action="partition"]').length`); n != 0 {
		t.Fatalf("%d partition buttons on a testnet without the admin API", n)
	}
	// Keyboard and screen reader: the actions are real buttons, each named with its replica; the event log
	// and the connection status are live regions.
	waitJS("named buttons and live regions", fmt.Sprintf(`document.querySelectorAll('#replicas button[aria-label]').length === %d && `+
		`[...document.querySelectorAll('#replicas button')].every(b => b.tagName === 'BUTTON' && b.type === 'button' && b.getAttribute('aria-label').includes(b.dataset.replica)) && `+
		`document.querySelector('#log').getAttribute('aria-live') === 'polite' && document.querySelector('#conn').getAttribute('role') === 'status'`,
		4*perReplica), 5*time.Second)
	const maxSeq = `Math.max(0, ...[...document.querySelectorAll('#lanes td[data-phase="executed"]')].map(td => +td.dataset.seq))`
	seq0 := evalInt(maxSeq)
	waitJS("new executed slots", fmt.Sprintf("%s >= %d", maxSeq, seq0+3), 30*time.Second)
	waitJS("one primary", `document.querySelectorAll('#replicas li[data-role="primary"]').length === 1`, 10*time.Second)
	primary := evalInt(`+document.querySelector('#replicas li[data-role="primary"]').dataset.replica`)
	view := evalInt(`+document.querySelector('#replicas li[data-role="primary"] [data-field="view"]').textContent`)
	t.Logf("slots up to %d executed; primary node%d in view %d: clicking its kill button", evalInt(maxSeq), primary, view)

	kill := fmt.Sprintf(`#replicas li[data-replica="%d"] button[data-action="kill"]`, primary)
	if err := chromedp.Do(bctx, chromedp.Click(kill)); err != nil {
		t.Fatalf("click %s: %v", kill, err)
	}
	waitJS(fmt.Sprintf("node%d down", primary), fmt.Sprintf(`document.querySelector('#replicas li[data-replica="%d"]').dataset.up === "false"`, primary), 30*time.Second)
	if net.Running(primary) {
		t.Fatalf("node%d still runs after its kill button was clicked", primary)
	}
	// The backups' request timers (3 s) expire, they change view and commit the pending requests there.
	waitJS("the view change with its first commit", fmt.Sprintf(`[...document.querySelectorAll('#view-changes li[data-complete="true"]')].some(li => +li.dataset.view > %d)`, view), 45*time.Second)
	waitJS("the new view's first slot marked in the swimlane", `document.querySelector('#lanes thead th.vc') !== null`, 15*time.Second)
	shoot("live-page.png")

	// Pause and resume a backup from the page: its process stops (state T), the page shows it not
	// answering, and after resume up again.
	paused := (primary + 2) % net.N()
	click := func(action string, i int) {
		t.Helper()
		sel := fmt.Sprintf(`#replicas li[data-replica="%d"] button[data-action="%s"]`, i, action)
		if err := chromedp.Do(bctx, chromedp.Click(sel)); err != nil {
			t.Fatalf("click %s: %v", sel, err)
		}
	}
	click("pause", paused)
	waitJS(fmt.Sprintf("node%d not answering", paused), fmt.Sprintf(`document.querySelector('#replicas li[data-replica="%d"]').dataset.up === "false"`, paused), 30*time.Second)
	if st := procState(t, net.PID(paused)); st != "T" {
		t.Fatalf("node%d is in state %q after its pause button was clicked, want T (stopped)", paused, st)
	}
	click("resume", paused)
	waitJS(fmt.Sprintf("node%d up again", paused), fmt.Sprintf(`document.querySelector('#replicas li[data-replica="%d"]').dataset.up === "true"`, paused), 30*time.Second)

	// A replica's own page (its HTTP API's /ui/) shows that replica, up, in the new view, with its lane.
	backup := (primary + 1) % net.N()
	if err := chromedp.Do(bctx, chromedp.Navigate(net.APIURL(backup)+"/ui/")); err != nil {
		t.Fatalf("load node%d's page: %v", backup, err)
	}
	waitJS(fmt.Sprintf("node%d's own page with itself up in view > %d and executed slots", backup, view),
		fmt.Sprintf(`document.querySelectorAll('#replicas li').length === 1 && document.querySelector('#replicas li[data-replica="%d"][data-up="true"]') !== null && +document.querySelector('#replicas [data-field="view"]').textContent > %d && document.querySelector('#lanes td[data-phase="executed"]') !== null`, backup, view),
		30*time.Second)
	shoot("replica-page.png")
	t.Logf("browser test done in %s (testnet start included)", time.Since(start).Round(time.Millisecond))
}

// procState returns the state letter of process pid (/proc/PID/stat: R running, S sleeping, T stopped, ...).
func procState(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("state of process %d: %v", pid, err)
	}
	// pid (comm) state ...: comm may hold spaces and parentheses, so the state follows the last ')'.
	rest := string(b[bytes.LastIndexByte(b, ')')+1:])
	if f := strings.Fields(rest); len(f) > 0 {
		return f[0]
	}
	t.Fatalf("state of process %d: cannot parse %q", pid, b)
	return ""
}

func listenLoopback() (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, errors.Join(errors.New("listen for the page"), err)
	}
	return ln, nil
}
