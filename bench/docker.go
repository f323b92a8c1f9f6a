package bench

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/p2pbft/p2pbft/node/config"
	"github.com/p2pbft/p2pbft/testnet"
)

// DockerConfig describes a network of replicas run as docker containers on a private docker network, one
// container per replica, each with its home folder mounted. Their HTTP APIs and p2p ports are published on
// the host's loopback, so that a load generator on the host reaches them.
type DockerConfig struct {
	// Dir is the testnet folder (created): the replicas' homes and their logs.
	Dir string
	// N is the number of replicas. Default 4.
	N int
	// Image is the replica image. Default "p2pbft:scenario".
	Image string
	// Binary, if set, is a static p2pbft binary the image is built from (FROM scratch) before the
	// replicas start.
	Binary string
	// Configure adjusts each replica's configuration.
	Configure func(i int, c *config.Config)
	// Args returns extra `p2pbft start` arguments for replica i (read at every start).
	Args func(i int) []string
	// ReadyTimeout bounds the start of the replicas. Default 60s.
	ReadyTimeout time.Duration
}

// Docker is a network of replica containers; its methods act on them by replica index.
type Docker struct {
	cfg      DockerConfig
	net      *testnet.Network
	prefix   string // of container and network names
	network  string
	apiPorts []int
	p2pPorts []int
	uid, gid int

	mu       sync.Mutex
	isolated map[int]bool
}

// DockerAvailable reports whether a docker engine answers.
func DockerAvailable() error {
	out, err := exec.Command("docker", "version", "--format", "{{.Server.Version}}").CombinedOutput()
	if err != nil {
		return fmt.Errorf("docker: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

func docker(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// StartDocker creates the testnet folder, builds the image if asked, creates the docker network and
// starts one container per replica; it returns the target (APIs and bootstrap addresses on the host's
// loopback, processes found through docker) once every replica is healthy and connected.
func StartDocker(ctx context.Context, cfg DockerConfig) (*Target, *Docker, error) {
	if cfg.N == 0 {
		cfg.N = 4
	}
	if cfg.Image == "" {
		cfg.Image = "p2pbft:scenario"
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 60 * time.Second
	}
	if err := DockerAvailable(); err != nil {
		return nil, nil, err
	}
	if cfg.Binary != "" {
		if err := BuildImage(ctx, cfg.Binary, cfg.Image); err != nil {
			return nil, nil, err
		}
	}
	net, err := testnet.Create(testnet.Config{Dir: cfg.Dir, N: cfg.N, ChainID: "p2pbft-bench", Docker: true, Configure: cfg.Configure})
	if err != nil {
		return nil, nil, err
	}
	ports, err := testnet.FreePorts("127.0.0.1", 2*cfg.N)
	if err != nil {
		return nil, nil, err
	}
	id := rand.Uint32()
	d := &Docker{cfg: cfg, net: net, prefix: fmt.Sprintf("p2pbft-%08x", id), uid: os.Getuid(), gid: os.Getgid(), isolated: map[int]bool{}}
	d.network = d.prefix
	for i := range cfg.N {
		d.apiPorts = append(d.apiPorts, ports[2*i])
		d.p2pPorts = append(d.p2pPorts, ports[2*i+1])
	}
	if _, err := docker(ctx, "network", "create", "--driver", "bridge", "--label", "p2pbft.bench="+d.prefix, d.network); err != nil {
		return nil, nil, err
	}
	t := &Target{Genesis: net.Genesis(), Net: net, Dir: cfg.Dir, http: newHTTP(), pid: d.PID,
		where: "docker containers on network " + d.network}
	for i := range cfg.N {
		t.Nodes = append(t.Nodes, Node{Name: d.name(i), Replica: i, API: fmt.Sprintf("http://127.0.0.1:%d", d.apiPorts[i])})
		t.Bootstrap = append(t.Bootstrap, fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s", d.p2pPorts[i], net.Genesis().PeerID(i)))
	}
	for i := range cfg.N {
		if err := d.run(ctx, i); err != nil {
			d.Close()
			return nil, nil, err
		}
	}
	for i := range cfg.N {
		if err := d.waitHealthy(ctx, t, i); err != nil {
			d.Close()
			return nil, nil, err
		}
	}
	wctx, cancel := context.WithTimeout(ctx, cfg.ReadyTimeout)
	defer cancel()
	if err := waitConnected(wctx, t); err != nil {
		d.Close()
		return nil, nil, err
	}
	t.PIDs()
	return t, d, nil
}

// BuildImage builds a FROM-scratch image around a static p2pbft binary.
func BuildImage(ctx context.Context, binary, image string) error {
	f, err := elf.Open(binary)
	if err != nil {
		return fmt.Errorf("bench: image: %s: %w", binary, err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			f.Close()
			return fmt.Errorf("bench: image: %s is dynamically linked; build it with CGO_ENABLED=0", binary)
		}
	}
	f.Close()
	dir, err := os.MkdirTemp("", "p2pbft-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	src, err := os.ReadFile(binary)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "p2pbft"), src, 0o755); err != nil {
		return err
	}
	dockerfile := "FROM scratch\nCOPY p2pbft /p2pbft\nVOLUME [\"/home/node\"]\nENTRYPOINT [\"/p2pbft\"]\nCMD [\"start\", \"--home\", \"/home/node\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		return err
	}
	_, err = docker(ctx, "build", "-q", "-t", image, dir)
	return err
}

func (d *Docker) name(i int) string { return fmt.Sprintf("node%d", i) }

func (d *Docker) container(i int) string { return fmt.Sprintf("%s-node%d", d.prefix, i) }

// Network returns the docker network's name.
func (d *Docker) Network() string { return d.network }

// run creates and starts replica i's container with the current arguments.
func (d *Docker) run(ctx context.Context, i int) error {
	home, err := filepath.Abs(d.net.Home(i))
	if err != nil {
		return err
	}
	args := []string{"run", "-d", "--name", d.container(i), "--hostname", d.name(i),
		"--network", d.network, "--network-alias", d.name(i),
		"--label", "p2pbft.bench=" + d.prefix,
		"--user", fmt.Sprintf("%d:%d", d.uid, d.gid),
		"-v", home + ":/home/node",
		"-p", fmt.Sprintf("127.0.0.1:%d:26680/tcp", d.apiPorts[i]),
		"-p", fmt.Sprintf("127.0.0.1:%d:%d/tcp", d.p2pPorts[i], config.DefaultP2PPort),
		"--stop-timeout", "20",
		d.cfg.Image, "start", "--home", "/home/node"}
	if d.cfg.Args != nil {
		args = append(args, d.cfg.Args(i)...)
	}
	_, err = docker(ctx, args...)
	return err
}

func (d *Docker) waitHealthy(ctx context.Context, t *Target, i int) error {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.ReadyTimeout)
	defer cancel()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, t.Nodes[i].API+"/health", nil)
		resp, err := t.http.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("health: %s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			logs, _ := d.logs(context.Background(), i)
			return fmt.Errorf("bench: %s not healthy: %v; last lines of its log:\n%s", d.container(i), last, lastLines(logs, 15))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

// waitConnected waits until every replica reports every other as a peer.
func waitConnected(ctx context.Context, t *Target) error {
	for {
		ok := true
		var last string
		for i := range t.Nodes {
			st, err := t.Status(ctx, i)
			if err != nil || len(st.Peers) < t.N()-1 {
				ok = false
				if err != nil {
					last = err.Error()
				} else {
					last = fmt.Sprintf("%s connected to %d of %d", t.Nodes[i].Name, len(st.Peers), t.N()-1)
				}
				break
			}
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bench: waiting for a connected network: %w (last: %s)", ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// PID returns the host process of replica i's container (0 if it does not run).
func (d *Docker) PID(i int) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := docker(ctx, "inspect", "-f", "{{.State.Pid}}", d.container(i))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(out)
	return pid
}

// Kill kills replica i's container (SIGKILL).
func (d *Docker) Kill(ctx context.Context, i int) error {
	_, err := docker(ctx, "kill", d.container(i))
	return err
}

// Stop stops replica i's container cleanly (SIGTERM, SIGKILL after 20s).
func (d *Docker) Stop(ctx context.Context, i int) error {
	_, err := docker(ctx, "stop", "-t", "20", d.container(i))
	return err
}

// Start starts replica i again: its stopped container is replaced by a new one with the current
// arguments (its log is kept in the home's node.log), and waits until it is healthy.
func (d *Docker) Start(ctx context.Context, t *Target, i int) error {
	d.saveLogs(ctx, i)
	if _, err := docker(ctx, "rm", "-f", d.container(i)); err != nil {
		return err
	}
	d.mu.Lock()
	delete(d.isolated, i) // a new container joins the network
	d.mu.Unlock()
	if err := d.run(ctx, i); err != nil {
		return err
	}
	return d.waitHealthy(ctx, t, i)
}

// Restart stops replica i cleanly and starts it again.
func (d *Docker) Restart(ctx context.Context, t *Target, i int) error {
	if err := d.Stop(ctx, i); err != nil {
		return err
	}
	return d.Start(ctx, t, i)
}

// Pause freezes replica i's container (cgroup freezer: like SIGSTOP, connections stay open).
func (d *Docker) Pause(ctx context.Context, i int) error {
	_, err := docker(ctx, "pause", d.container(i))
	return err
}

// Resume unfreezes replica i's container.
func (d *Docker) Resume(ctx context.Context, i int) error {
	_, err := docker(ctx, "unpause", d.container(i))
	return err
}

// Isolate disconnects replica i's container from the docker network: no peer, and no client, reaches it.
func (d *Docker) Isolate(ctx context.Context, i int) error {
	if _, err := docker(ctx, "network", "disconnect", d.network, d.container(i)); err != nil {
		return err
	}
	d.mu.Lock()
	d.isolated[i] = true
	d.mu.Unlock()
	return nil
}

// Reconnect connects every isolated container to the network again.
func (d *Docker) Reconnect(ctx context.Context) error {
	d.mu.Lock()
	var is []int
	for i := range d.isolated {
		is = append(is, i)
	}
	d.mu.Unlock()
	var errs []error
	for _, i := range is {
		if _, err := docker(ctx, "network", "connect", "--alias", d.name(i), d.network, d.container(i)); err != nil {
			errs = append(errs, err)
			continue
		}
		d.mu.Lock()
		delete(d.isolated, i)
		d.mu.Unlock()
	}
	return errors.Join(errs...)
}

func (d *Docker) logs(ctx context.Context, i int) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", "logs", d.container(i))
	b, err := cmd.CombinedOutput()
	return string(b), err
}

// saveLogs appends the container's log to the replica's node.log.
func (d *Docker) saveLogs(ctx context.Context, i int) {
	s, err := d.logs(ctx, i)
	if err != nil || s == "" {
		return
	}
	f, err := os.OpenFile(d.net.LogPath(i), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "=== container %s ===\n", d.container(i))
	io.WriteString(f, s)
}

// LogPath returns replica i's log file (complete once Close has run).
func (d *Docker) LogPath(i int) string { return d.net.LogPath(i) }

// Close saves every container's log and removes the containers and the network.
func (d *Docker) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	for i := range d.cfg.N {
		docker(ctx, "unpause", d.container(i)) // a frozen container cannot be stopped
		docker(ctx, "stop", "-t", "20", d.container(i))
		d.saveLogs(ctx, i)
		if _, err := docker(ctx, "rm", "-f", d.container(i)); err != nil && !strings.Contains(err.Error(), "No such container") {
			errs = append(errs, err)
		}
	}
	if _, err := docker(ctx, "network", "rm", d.network); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
