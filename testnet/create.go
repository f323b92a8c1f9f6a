package testnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/multiformats/go-multiaddr"

	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/node/config"
)

// File names inside a testnet folder.
const (
	ManifestFile = "testnet.json"
	GenesisFile  = "genesis.toml"
	ClientDir    = "client"
	ControlFile  = "control.addr"
	LogFile      = "node.log"
	// CLIKeyFile is the client key `p2pbft tx` uses in a home (see cmd/p2pbft).
	CLIKeyFile = "cli_key"
)

// Config describes a testnet to create.
type Config struct {
	// Dir is the testnet folder. Required.
	Dir string
	// N is the number of replicas. Default 4.
	N int
	// ChainID names the chain. Default "p2pbft-testnet".
	ChainID string
	// Host is the IP address replicas listen on. Default 127.0.0.1.
	Host string
	// Hosts, if set, gives each replica its own IP address (replica i listens on Hosts[i]) instead of Host:
	// replicas on hosts of a network lab (internal/netlab), each a network namespace with an address.
	Hosts []string
	// BasePort, if set, gives replica i the ports BasePort+2i (p2p, TCP and UDP) and BasePort+2i+1 (HTTP
	// API) instead of free ports found by listening on the host's address, which this process can only do
	// for addresses of its own network namespace. For hosts where nothing else runs (a netlab host).
	BasePort int
	// Docker lays the folder out for containers instead (see CreateDocker).
	Docker bool
	// AdminAPI turns on every replica's experiment admin API ([experiment] admin_api), which Partition,
	// Isolate and Heal use.
	AdminAPI bool
	// Configure, if set, adjusts each replica's configuration before it is written (tests shorten
	// timeouts, experiments change batching).
	Configure func(i int, c *config.Config)
}

// NodeInfo is one replica of the manifest.
type NodeInfo struct {
	Name    string `json:"name"`
	Home    string `json:"home"` // relative to the testnet folder
	PeerID  string `json:"peer_id"`
	P2PPort int    `json:"p2p_port"`
	// API is the host:port of the replica's HTTP API.
	API string `json:"api"`
	// Addr is the replica's TCP multiaddr with its peer ID: a bootstrap address.
	Addr string `json:"addr"`
	// PID is the process running the replica, 0 if none was started (or it was stopped).
	PID int `json:"pid,omitempty"`
}

// Manifest describes a testnet folder; it is DIR/testnet.json.
type Manifest struct {
	ChainID string     `json:"chain_id"`
	Created time.Time  `json:"created"`
	Docker  bool       `json:"docker,omitempty"`
	Nodes   []NodeInfo `json:"nodes"`
}

// Network is a testnet folder and the replica processes started from it.
type Network struct {
	dir     string
	genesis *identity.Genesis

	mu    sync.Mutex
	man   Manifest
	procs []*proc
	po    ProcessOptions
}

func newNetwork(dir string, g *identity.Genesis, man Manifest) *Network {
	n := &Network{dir: dir, genesis: g, man: man, procs: make([]*proc, len(man.Nodes))}
	n.SetProcessOptions(ProcessOptions{})
	return n
}

// Exists reports whether dir holds a testnet (a manifest).
func Exists(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, ManifestFile))
	return err == nil
}

// Create writes a new testnet folder: keys, genesis, configurations, a client home and the manifest. It
// refuses a folder that already holds a testnet.
func Create(cfg Config) (*Network, error) {
	if cfg.Dir == "" {
		return nil, errors.New("testnet: no folder given")
	}
	if cfg.N == 0 {
		cfg.N = 4
	}
	if cfg.N < 1 || cfg.N > 64 {
		return nil, fmt.Errorf("testnet: %d replicas: want 1 to 64", cfg.N)
	}
	if cfg.ChainID == "" {
		cfg.ChainID = "p2pbft-testnet"
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Hosts != nil && len(cfg.Hosts) != cfg.N {
		return nil, fmt.Errorf("testnet: %d hosts for %d replicas", len(cfg.Hosts), cfg.N)
	}
	hostOf := func(i int) string {
		if cfg.Hosts != nil {
			return cfg.Hosts[i]
		}
		return cfg.Host
	}
	if err := identity.ValidateChainID(cfg.ChainID); err != nil {
		return nil, fmt.Errorf("testnet: %w", err)
	}
	if Exists(cfg.Dir) {
		return nil, fmt.Errorf("testnet: %s already holds a testnet (%s); open it, or remove the folder", cfg.Dir, ManifestFile)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("testnet: %w", err)
	}
	man := Manifest{ChainID: cfg.ChainID, Created: time.Now().UTC().Truncate(time.Second), Docker: cfg.Docker}
	var ports []int
	switch {
	case cfg.Docker:
	case cfg.BasePort > 0:
		if cfg.BasePort+2*cfg.N > 65535 {
			return nil, fmt.Errorf("testnet: base port %d leaves no room for %d replicas", cfg.BasePort, cfg.N)
		}
		for i := range 2 * cfg.N {
			ports = append(ports, cfg.BasePort+i)
		}
	case cfg.Hosts != nil:
		for i := range cfg.N {
			p, err := FreePorts(hostOf(i), 2)
			if err != nil {
				return nil, err
			}
			ports = append(ports, p...)
		}
	default:
		var err error
		if ports, err = FreePorts(cfg.Host, 2*cfg.N); err != nil {
			return nil, err
		}
	}
	keys := make([]*identity.Key, cfg.N)
	reps := make([]identity.Replica, cfg.N)
	for i := range cfg.N {
		name := fmt.Sprintf("node%d", i)
		home := filepath.Join(cfg.Dir, name)
		if err := os.MkdirAll(home, 0o700); err != nil {
			return nil, fmt.Errorf("testnet: %w", err)
		}
		k, _, err := identity.GenerateOrLoadKey(filepath.Join(home, config.KeyFile))
		if err != nil {
			return nil, fmt.Errorf("testnet: %w", err)
		}
		keys[i] = k
		ni := NodeInfo{Name: name, Home: name, PeerID: k.PeerID().String()}
		var tcp multiaddr.Multiaddr
		if cfg.Docker {
			ni.P2PPort = config.DefaultP2PPort
			ni.API = fmt.Sprintf("127.0.0.1:%d", 26680+i) // published by the compose file
			tcp = multiaddr.StringCast(fmt.Sprintf("/dns4/%s/tcp/%d", name, config.DefaultP2PPort))
		} else {
			ni.P2PPort = ports[2*i]
			ni.API = net.JoinHostPort(hostOf(i), strconv.Itoa(ports[2*i+1]))
			tcp = multiaddr.StringCast(fmt.Sprintf("/ip4/%s/tcp/%d", hostOf(i), ni.P2PPort))
		}
		ni.Addr = tcp.String() + "/p2p/" + ni.PeerID
		reps[i] = identity.Replica{Name: name, PeerID: k.PeerID(), Addrs: []multiaddr.Multiaddr{tcp}}
		man.Nodes = append(man.Nodes, ni)
	}
	g, err := identity.NewGenesis(cfg.ChainID, reps)
	if err != nil {
		return nil, fmt.Errorf("testnet: %w", err)
	}
	for i, ni := range man.Nodes {
		home := filepath.Join(cfg.Dir, ni.Home)
		c := config.Default()
		c.Home = home
		c.Moniker = ni.Name
		if cfg.Docker {
			c.P2P.Listen = config.Default().P2P.Listen
			c.API.HTTP = "0.0.0.0:26680"
		} else {
			c.P2P.Listen = []string{
				fmt.Sprintf("/ip4/%s/tcp/%d", hostOf(i), ni.P2PPort),
				fmt.Sprintf("/ip4/%s/udp/%d/quic-v1", hostOf(i), ni.P2PPort),
			}
			c.API.HTTP = ni.API
		}
		if i > 0 {
			// The genesis lists every address; the bootstrap shows how a node joins knowing one peer.
			c.P2P.Bootstrap = []string{man.Nodes[0].Addr}
		}
		c.Experiment.AdminAPI = cfg.AdminAPI
		if cfg.Configure != nil {
			cfg.Configure(i, &c)
		}
		if err := c.Validate(); err != nil {
			return nil, fmt.Errorf("testnet: %s: %w", ni.Name, err)
		}
		b, err := config.Commented(c)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(home, config.ConfigFile), b, 0o644); err != nil {
			return nil, fmt.Errorf("testnet: %w", err)
		}
		if err := g.Save(filepath.Join(home, config.GenesisFile)); err != nil {
			return nil, fmt.Errorf("testnet: %w", err)
		}
	}
	if err := g.Save(filepath.Join(cfg.Dir, GenesisFile)); err != nil {
		return nil, fmt.Errorf("testnet: %w", err)
	}
	clientHome := filepath.Join(cfg.Dir, ClientDir)
	if err := g.Save(filepath.Join(clientHome, config.GenesisFile)); err != nil {
		return nil, fmt.Errorf("testnet: %w", err)
	}
	if _, _, err := identity.GenerateOrLoadKey(filepath.Join(clientHome, CLIKeyFile)); err != nil {
		return nil, fmt.Errorf("testnet: %w", err)
	}
	n := newNetwork(cfg.Dir, g, man)
	if err := n.saveManifest(); err != nil {
		return nil, err
	}
	return n, nil
}

// Open reads an existing testnet folder.
func Open(dir string) (*Network, error) {
	data, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("testnet: %s holds no testnet (no %s); create one with `p2pbft testnet --dir %s`", dir, ManifestFile, dir)
		}
		return nil, fmt.Errorf("testnet: %w", err)
	}
	var man Manifest
	if err := json.Unmarshal(data, &man); err != nil {
		return nil, fmt.Errorf("testnet: %s: %w", filepath.Join(dir, ManifestFile), err)
	}
	if len(man.Nodes) == 0 {
		return nil, fmt.Errorf("testnet: %s lists no replicas", filepath.Join(dir, ManifestFile))
	}
	g, err := identity.LoadGenesis(filepath.Join(dir, GenesisFile))
	if err != nil {
		return nil, fmt.Errorf("testnet: %w", err)
	}
	if g.N() != len(man.Nodes) || g.ChainID() != man.ChainID {
		return nil, fmt.Errorf("testnet: %s and %s disagree (chain or replica count)", ManifestFile, GenesisFile)
	}
	for i, ni := range man.Nodes {
		if g.PeerID(i).String() != ni.PeerID {
			return nil, fmt.Errorf("testnet: %s: replica %d is %s in the manifest and %s in the genesis", dir, i, ni.PeerID, g.PeerID(i))
		}
	}
	return newNetwork(dir, g, man), nil
}

func (n *Network) saveManifest() error {
	b, err := json.MarshalIndent(n.man, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(n.dir, "."+ManifestFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("testnet: write manifest: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(n.dir, ManifestFile)); err != nil {
		return fmt.Errorf("testnet: write manifest: %w", err)
	}
	return nil
}

// Dir returns the testnet folder.
func (n *Network) Dir() string { return n.dir }

// Genesis returns the replica set.
func (n *Network) Genesis() *identity.Genesis { return n.genesis }

// N returns the number of replicas.
func (n *Network) N() int { return len(n.man.Nodes) }

// Nodes returns the manifest's replicas (with the PIDs of running ones).
func (n *Network) Nodes() []NodeInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]NodeInfo(nil), n.man.Nodes...)
}

// Home returns replica i's home directory.
func (n *Network) Home(i int) string { return filepath.Join(n.dir, n.man.Nodes[i].Home) }

// ClientHome returns the client home (genesis and cli_key) for `p2pbft tx --home`.
func (n *Network) ClientHome() string { return filepath.Join(n.dir, ClientDir) }

// LogPath returns replica i's log file.
func (n *Network) LogPath(i int) string { return filepath.Join(n.Home(i), LogFile) }

// APIURL returns replica i's HTTP API base URL.
func (n *Network) APIURL(i int) string { return "http://" + n.man.Nodes[i].API }

// Index returns the index of the replica named name ("node2", or "2").
func (n *Network) Index(name string) (int, bool) {
	for i, ni := range n.man.Nodes {
		if ni.Name == name {
			return i, true
		}
	}
	if i, err := strconv.Atoi(name); err == nil && i >= 0 && i < len(n.man.Nodes) {
		return i, true
	}
	return 0, false
}

// Bootstrap returns every replica's bootstrap multiaddr.
func (n *Network) Bootstrap() []string {
	out := make([]string, len(n.man.Nodes))
	for i, ni := range n.man.Nodes {
		out[i] = ni.Addr
	}
	return out
}

// FreePorts returns k distinct ports on host that are free for both TCP and UDP right now.
//
// They are drawn at random below the kernel's ephemeral port range (ip_local_port_range), not taken from
// a listener on port 0: the kernel hands out ephemeral ports to every outgoing connection's source port
// and every other listener on port 0, so a port chosen that way could be taken by another program between
// this choice and the replica's bind (it happened in the test suite, where many packages start testnets
// and connections at once). Below the range only programs that choose a port themselves compete.
func FreePorts(host string, k int) ([]int, error) {
	lo, hi := portPool()
	var ports []int
	var hold []func()
	defer func() {
		for _, h := range hold {
			h()
		}
	}()
	taken := map[int]bool{}
	for attempts := 0; len(ports) < k; attempts++ {
		if attempts > 50*k {
			return nil, fmt.Errorf("testnet: could not find %d free ports on %s in [%d, %d]", k, host, lo, hi)
		}
		port := lo + rand.IntN(hi-lo+1)
		if taken[port] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			if attempts == 0 && !isAddrInUse(err) {
				return nil, fmt.Errorf("testnet: find a free port on %s: %w", host, err)
			}
			continue
		}
		u, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			l.Close()
			continue
		}
		// Keep both open until every port is chosen, so none is handed out twice.
		hold = append(hold, func() { l.Close(); u.Close() })
		taken[port] = true
		ports = append(ports, port)
	}
	return ports, nil
}

// portPool returns the ports FreePorts draws from: from 10000 to just below the kernel's ephemeral range
// (Linux's default range starts at 32768), or 20000-29999 where the range cannot be read or leaves too
// little below it.
func portPool() (lo, hi int) {
	lo, hi = 20000, 29999
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return lo, hi
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return lo, hi
	}
	first, err := strconv.Atoi(f[0])
	if err != nil || first-1 < 10000+1000 {
		return lo, hi
	}
	return 10000, first - 1
}

func isAddrInUse(err error) bool { return errors.Is(err, syscall.EADDRINUSE) }
