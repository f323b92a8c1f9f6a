package testnet

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Actions a running testnet takes on a replica, through Do (stdin commands, the control socket).
const (
	ActionStop    = "stop"    // SIGTERM: a clean shutdown
	ActionKill    = "kill"    // SIGKILL: a crash
	ActionStart   = "start"   // start a stopped replica
	ActionRestart = "restart" // stop (cleanly, if it runs) and start
	ActionPause   = "pause"   // SIGSTOP
	ActionResume  = "resume"  // SIGCONT
	// ActionPartition cuts the replica off from every other replica (both ways), and ActionHeal (with
	// any replica name, or "all") undoes every partition; both go through the replicas' experiment admin
	// API, so the testnet must have been created with it (Config.AdminAPI).
	ActionPartition = "partition"
	ActionHeal      = "heal"
)

// Actions lists the actions Do accepts.
var Actions = []string{ActionStop, ActionKill, ActionStart, ActionRestart, ActionPause, ActionResume, ActionPartition, ActionHeal}

// Do applies an action to the replica named name.
func (n *Network) Do(ctx context.Context, action, name string) error {
	if action == ActionHeal {
		return n.HealAll(ctx)
	}
	i, ok := n.Index(name)
	if !ok {
		return fmt.Errorf("no replica %q (replicas are node0 to node%d)", name, n.N()-1)
	}
	switch action {
	case ActionStop:
		return n.Stop(i)
	case ActionKill:
		return n.Kill(i)
	case ActionStart:
		return n.StartNode(ctx, i)
	case ActionRestart:
		return n.Restart(ctx, i)
	case ActionPause:
		return n.Pause(i)
	case ActionResume:
		return n.Resume(i)
	case ActionPartition:
		return n.Isolate(ctx, i)
	}
	return fmt.Errorf("unknown action %q (want one of %s)", action, strings.Join(Actions, ", "))
}

// socketPath picks the control socket's path: inside the folder if the path fits a unix socket address,
// else in the temporary directory, named after the folder.
func socketPath(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	p := filepath.Join(abs, "control.sock")
	if len(p) < 100 {
		return p
	}
	h := sha256.Sum256([]byte(abs))
	return filepath.Join(os.TempDir(), fmt.Sprintf("p2pbft-testnet-%x.sock", h[:6]))
}

// NodeState is a replica as the control socket reports it.
type NodeState struct {
	NodeInfo
	Running bool `json:"running"`
}

// ServeControl listens on the testnet's control socket and applies the actions sent to it (see Control)
// until ctx ends. Its address is written to DIR/control.addr while it runs.
func (n *Network) ServeControl(ctx context.Context) error {
	path := socketPath(n.dir)
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return fmt.Errorf("testnet: another `p2pbft testnet` runs this folder (%s answers)", path)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("testnet: control socket: %w", err)
	}
	addrFile := filepath.Join(n.dir, ControlFile)
	if err := os.WriteFile(addrFile, []byte(path+"\n"), 0o644); err != nil {
		ln.Close()
		return fmt.Errorf("testnet: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /nodes", func(w http.ResponseWriter, _ *http.Request) {
		var out []NodeState
		for i, ni := range n.Nodes() {
			out = append(out, NodeState{NodeInfo: ni, Running: n.Running(i)})
		}
		json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("POST /nodes/{name}/{action}", func(w http.ResponseWriter, r *http.Request) {
		if err := n.Do(r.Context(), r.PathValue("action"), r.PathValue("name")); err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		fmt.Fprintf(w, "%s %s: done\n", r.PathValue("action"), r.PathValue("name"))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	os.Remove(addrFile)
	os.Remove(path)
	return nil
}

// ErrNotRunning is returned by Control when no `p2pbft testnet` serves the folder.
var ErrNotRunning = errors.New("no running testnet serves this folder")

func controlClient(dir string) (*http.Client, error) {
	b, err := os.ReadFile(filepath.Join(dir, ControlFile))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("testnet: %s: %w (start it with `p2pbft testnet --dir %s`)", dir, ErrNotRunning, dir)
		}
		return nil, err
	}
	path := strings.TrimSpace(string(b))
	return &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "unix", path)
			if err != nil {
				return nil, fmt.Errorf("%w (%v)", ErrNotRunning, err)
			}
			return c, nil
		},
	}}, nil
}

// Control asks the `p2pbft testnet` running the folder dir to apply action to replica name.
func Control(ctx context.Context, dir, action, name string) (string, error) {
	hc, err := controlClient(dir)
	if err != nil {
		return "", err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://testnet/nodes/"+name+"/"+action, nil)
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("testnet: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("testnet: %s %s: %s", action, name, strings.TrimSpace(string(b)))
	}
	return strings.TrimSpace(string(b)), nil
}

// ControlNodes asks the `p2pbft testnet` running the folder dir for its replicas.
func ControlNodes(ctx context.Context, dir string) ([]NodeState, error) {
	hc, err := controlClient(dir)
	if err != nil {
		return nil, err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://testnet/nodes", nil)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("testnet: %w", err)
	}
	defer resp.Body.Close()
	var out []NodeState
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("testnet: %w", err)
	}
	return out, nil
}
