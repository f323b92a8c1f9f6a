package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/node/api/apitypes"
	"github.com/p2pbft/p2pbft/node/config"
	"github.com/p2pbft/p2pbft/testnet"
)

// Node is one replica of a target.
type Node struct {
	Name    string `json:"name"`
	Replica int    `json:"replica"`
	// API is the base URL of the replica's HTTP API.
	API string `json:"api"`
	// PID is the replica's process on this machine, 0 if unknown (a remote replica): then its CPU time
	// comes from process_cpu_seconds_total in its metrics, if it exports it.
	PID int `json:"pid,omitempty"`
}

// Target is the network a load drives: its replica set, how to reach it, and how to observe its
// replicas.
type Target struct {
	Genesis   *identity.Genesis
	Bootstrap []string
	Nodes     []Node
	// Net is the local testnet, if the target is one (nil for replicas given by address).
	Net *testnet.Network
	// Owned: this process started the replicas (and stops them in Close).
	Owned bool
	// Dir is the testnet folder, if any.
	Dir string

	http *http.Client
	// mu guards the PIDs in Nodes, which change as replicas of an owned testnet restart; read them with
	// PIDs or Snapshot. The other fields of Nodes do not change.
	mu sync.Mutex
	// pid, if set, finds replica i's current process (containers).
	pid func(i int) int
	// where says what the replicas are, for reports.
	where string
}

// Where says what the replicas are: "local processes", "docker containers" or "replicas given by address".
func (t *Target) Where() string {
	switch {
	case t.where != "":
		return t.where
	case t.Net != nil:
		return "local processes"
	}
	return "replicas given by address"
}

// N returns the number of replicas.
func (t *Target) N() int { return t.Genesis.N() }

// OpenTestnet targets the local testnet in folder dir, started by `p2pbft testnet --dir DIR` (or any
// process that records its replicas' PIDs in the folder's manifest).
func OpenTestnet(dir string) (*Target, error) {
	net, err := testnet.Open(dir)
	if err != nil {
		return nil, err
	}
	t := &Target{Genesis: net.Genesis(), Bootstrap: net.Bootstrap(), Net: net, Dir: dir, http: newHTTP()}
	for i, ni := range net.Nodes() {
		pid := ni.PID
		if pid > 0 && !isReplicaProcess(pid, net.Home(i)) {
			pid = 0
		}
		t.Nodes = append(t.Nodes, Node{Name: ni.Name, Replica: i, API: net.APIURL(i), PID: pid})
	}
	return t, nil
}

// isReplicaProcess reports whether pid runs `p2pbft start` on home.
func isReplicaProcess(pid int, home string) bool {
	abs, err := filepath.Abs(home)
	if err != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(b), abs) && strings.Contains(string(b), "start")
}

// FromAPIs targets replicas given by the URLs of their HTTP APIs (any order) and the chain's genesis
// file. Each API tells which replica it serves. A replica whose API listens on this machine's loopback
// is looked up by its listening port to read its CPU time from /proc.
func FromAPIs(ctx context.Context, genesisPath string, apis, bootstrap []string) (*Target, error) {
	g, err := identity.LoadGenesis(genesisPath)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	t := &Target{Genesis: g, Bootstrap: bootstrap, http: newHTTP()}
	seen := map[int]bool{}
	for _, a := range apis {
		base, err := normalizeAPI(a)
		if err != nil {
			return nil, err
		}
		st, err := t.statusAt(ctx, base)
		if err != nil {
			return nil, err
		}
		if st.ChainID != g.ChainID() {
			return nil, fmt.Errorf("bench: %s serves chain %q, the genesis is for %q", base, st.ChainID, g.ChainID())
		}
		if seen[st.Replica] {
			return nil, fmt.Errorf("bench: two APIs serve replica %d", st.Replica)
		}
		seen[st.Replica] = true
		name := st.Moniker
		if name == "" {
			name = fmt.Sprintf("replica%d", st.Replica)
		}
		t.Nodes = append(t.Nodes, Node{Name: name, Replica: st.Replica, API: base, PID: localPID(base)})
	}
	return t, nil
}

func normalizeAPI(a string) (string, error) {
	if !strings.Contains(a, "://") {
		a = "http://" + a
	}
	u, err := url.Parse(a)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("bench: API address %q: want HOST:PORT or http://HOST:PORT", a)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// localPID finds the process listening on a loopback API's port, 0 if none or not local.
func localPID(base string) int {
	u, err := url.Parse(base)
	if err != nil {
		return 0
	}
	host, portS, err := net.SplitHostPort(u.Host)
	if err != nil {
		return 0
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		if host != "localhost" {
			return 0
		}
	}
	port, err := strconv.Atoi(portS)
	if err != nil {
		return 0
	}
	pid, _ := listeningPID(port)
	return pid
}

// LocalConfig describes a testnet the bench starts itself.
type LocalConfig struct {
	// Dir is the testnet folder (created). Required.
	Dir string
	// N is the number of replicas. Default 4.
	N int
	// Binary is the p2pbft executable the replicas run. Required.
	Binary string
	// Configure adjusts each replica's configuration.
	Configure func(i int, c *config.Config)
	// Args returns extra `p2pbft start` arguments for replica i.
	Args func(i int) []string
	// ReadyTimeout bounds the start of the replicas. Default 60s.
	ReadyTimeout time.Duration
	// Hosts, BasePort and Command put replica i on an address of its own (testnet.Config.Hosts and
	// BasePort) and run its process there (testnet.ProcessOptions.Command): hosts of a network lab.
	Hosts    []string
	BasePort int
	Command  func(i int, name string, arg ...string) *exec.Cmd
	// Where describes the replicas in reports. Default "local processes".
	Where string
}

// StartLocal creates a testnet folder, starts its replicas as processes of this machine and waits until
// they are connected to each other.
func StartLocal(ctx context.Context, cfg LocalConfig) (*Target, error) {
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 60 * time.Second
	}
	net, err := testnet.Create(testnet.Config{Dir: cfg.Dir, N: cfg.N, ChainID: "p2pbft-bench", Configure: cfg.Configure,
		Hosts: cfg.Hosts, BasePort: cfg.BasePort})
	if err != nil {
		return nil, err
	}
	net.SetProcessOptions(testnet.ProcessOptions{Binary: cfg.Binary, Args: cfg.Args, ReadyTimeout: cfg.ReadyTimeout, StopTimeout: 20 * time.Second,
		Command: cfg.Command})
	t := &Target{Genesis: net.Genesis(), Bootstrap: net.Bootstrap(), Net: net, Owned: true, Dir: cfg.Dir, http: newHTTP(), where: cfg.Where}
	for i, ni := range net.Nodes() {
		t.Nodes = append(t.Nodes, Node{Name: ni.Name, Replica: i, API: net.APIURL(i)})
	}
	if err := net.Start(ctx); err != nil {
		net.Close()
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, cfg.ReadyTimeout)
	defer cancel()
	if err := net.WaitConnected(wctx); err != nil {
		net.Close()
		return nil, err
	}
	t.PIDs()
	return t, nil
}

// PIDs returns the current process of every node (0 for unknown or stopped), re-read for a testnet this
// process runs.
func (t *Target) PIDs() []int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]int, len(t.Nodes))
	for i := range t.Nodes {
		switch {
		case t.pid != nil:
			t.Nodes[i].PID = t.pid(i)
		case t.Net != nil && t.Owned:
			t.Nodes[i].PID = t.Net.PID(i)
		}
		out[i] = t.Nodes[i].PID
	}
	return out
}

// Snapshot returns a copy of the nodes with their current processes.
func (t *Target) Snapshot() []Node {
	t.PIDs()
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.Nodes)
}

// Close stops the replicas if this process started them.
func (t *Target) Close() error {
	if t.Owned && t.Net != nil {
		return t.Net.Close()
	}
	return nil
}

func newHTTP() *http.Client { return &http.Client{Timeout: 5 * time.Second} }

func (t *Target) get(ctx context.Context, base, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := t.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var er apitypes.ErrorResponse
		if json.Unmarshal(b, &er) == nil && er.Error != "" {
			return nil, &httpError{code: resp.StatusCode, msg: fmt.Sprintf("%s%s: %s", base, path, er.Error)}
		}
		return nil, &httpError{code: resp.StatusCode, msg: fmt.Sprintf("%s%s: %s", base, path, resp.Status)}
	}
	return b, nil
}

type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

// isNotFound reports whether err is an API 404.
func isNotFound(err error) bool {
	var he *httpError
	return errors.As(err, &he) && he.code == http.StatusNotFound
}

func (t *Target) statusAt(ctx context.Context, base string) (apitypes.Status, error) {
	var st apitypes.Status
	b, err := t.get(ctx, base, "/v1/status")
	if err != nil {
		return st, fmt.Errorf("bench: status: %w", err)
	}
	return st, json.Unmarshal(b, &st)
}

// Status reads node i's status.
func (t *Target) Status(ctx context.Context, i int) (apitypes.Status, error) {
	return t.statusAt(ctx, t.Nodes[i].API)
}

// Metrics reads node i's Prometheus metrics.
func (t *Target) Metrics(ctx context.Context, i int) (testnet.Metrics, error) {
	b, err := t.get(ctx, t.Nodes[i].API, "/metrics")
	if err != nil {
		return nil, err
	}
	return testnet.ParseMetrics(b), nil
}

// Blocks reads up to limit block summaries of node i from height from.
func (t *Target) Blocks(ctx context.Context, i int, from uint64, limit int) ([]apitypes.BlockSummary, error) {
	b, err := t.get(ctx, t.Nodes[i].API, fmt.Sprintf("/v1/blocks?from=%d&limit=%d", from, limit))
	if err != nil {
		return nil, err
	}
	var out struct {
		Blocks []apitypes.BlockSummary `json:"blocks"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("bench: blocks: %w", err)
	}
	return out.Blocks, nil
}

// Block reads block h of node i with its raw encoding; h = 0 reads the latest block (without it).
func (t *Target) Block(ctx context.Context, i int, h uint64) (*apitypes.Block, error) {
	path := fmt.Sprintf("/v1/blocks/%d", h)
	if h == 0 {
		path = "/v1/blocks/latest?raw=false"
	}
	b, err := t.get(ctx, t.Nodes[i].API, path)
	if err != nil {
		return nil, err
	}
	var out apitypes.Block
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("bench: block %d: %w", h, err)
	}
	return &out, nil
}

// Post sends a JSON body to node i's API and decodes the JSON answer into out (if not nil).
func (t *Target) Post(ctx context.Context, i int, path string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.Nodes[i].API+path, strings.NewReader(string(b)))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := t.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		var er apitypes.ErrorResponse
		if json.Unmarshal(rb, &er) == nil && er.Error != "" {
			return &httpError{code: resp.StatusCode, msg: fmt.Sprintf("%s %s: %s", t.Nodes[i].Name, path, er.Error)}
		}
		return &httpError{code: resp.StatusCode, msg: fmt.Sprintf("%s %s: %s", t.Nodes[i].Name, path, resp.Status)}
	}
	if out != nil {
		return json.Unmarshal(rb, out)
	}
	return nil
}
