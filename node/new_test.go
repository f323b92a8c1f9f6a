package node

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/node/app"
	"github.com/p2pbft/p2pbft/node/app/kv"
	"github.com/p2pbft/p2pbft/node/config"
)

// New says clearly what is wrong with a home directory, and starts nothing.
func TestNewErrors(t *testing.T) {
	c := newCluster(t, 4, nil)
	cfg := c.cfgs[0]
	try := func(name string, cfg config.Config, want string) {
		t.Helper()
		n, err := New(cfg, Options{Logger: testLogger(t)})
		if err == nil {
			n.Close()
			t.Fatalf("%s: New succeeded", name)
		}
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: error %q does not say %q", name, err, want)
		}
	}

	missing := cfg
	missing.Home = filepath.Join(t.TempDir(), "nope")
	try("missing home", missing, "p2pbft init")

	loose := c.cfgs[1]
	if err := os.Chmod(loose.Path(loose.Key), 0o644); err != nil {
		t.Fatal(err)
	}
	try("loose key permissions", loose, "chmod 600")

	stranger := c.cfgs[2]
	stranger.Key = "other_key"
	if err := identity.SaveKey(stranger.Path("other_key"), testKey(t, "stranger")); err != nil {
		t.Fatal(err)
	}
	try("genesis without this node", stranger, "does not list this node")

	noGenesis := c.cfgs[3]
	noGenesis.Genesis = "absent.toml"
	try("missing genesis", noGenesis, "no genesis")

	noKey := c.cfgs[3]
	noKey.Key = "absent_key"
	try("missing key", noKey, "no node key")

	// An address in use: replica 0 runs; replica 3 is told to listen on replica 0's port.
	n0 := c.start(0)
	busy := c.cfgs[3]
	busy.P2P.Listen = []string{n0.host.LibP2P().Addrs()[0].String()}
	try("address in use", busy, "address already in use")

	// After those failures the replica still starts from its home (start waits for Started).
	c.start(3)
}

// After Run returns, the node refuses work with ErrStopped instead of touching its closed store; Run runs
// once; Close on a node never run releases it.
func TestLifecycle(t *testing.T) {
	c := newCluster(t, 4, nil)
	n := c.start(0)
	c.stop(0)
	if err := n.Run(t.Context()); !errors.Is(err, ErrStopped) {
		t.Fatalf("second Run: %v", err)
	}
	if _, err := n.Block(1); !errors.Is(err, ErrStopped) {
		t.Fatalf("Block after stop: %v", err)
	}
	q, _ := kv.EncodeOp(kv.Get([]byte("k")))
	if _, _, err := n.Query(q); !errors.Is(err, ErrStopped) {
		t.Fatalf("Query after stop: %v", err)
	}
	cl := c.client("late")
	if _, err := n.Submit(t.Context(), cl.request(putOp(t, "k", "v"))); !errors.Is(err, ErrStopped) {
		t.Fatalf("Submit after stop: %v", err)
	}
	if st := n.Status(); st.Replica != 0 || st.ChainID != testChain {
		t.Fatalf("status after stop: %+v", st)
	}
	// A node that is never run: Close releases its store, so the home can be opened again.
	m, err := New(c.cfgs[1], Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Run(t.Context()); !errors.Is(err, ErrStopped) {
		t.Fatalf("Run after Close: %v", err)
	}
	m2, err := New(c.cfgs[1], Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("reopen after Close: %v", err)
	}
	m2.Close()
}

// OpenApp hands a custom application the node's storage namespace (durable state shared with the blocks'
// batches); its error stops New and says so.
func TestOpenApp(t *testing.T) {
	c := newCluster(t, 4, nil)
	boom := errors.New("boom")
	_, err := New(c.cfgs[0], Options{Logger: testLogger(t), OpenApp: func(app.Storage) (app.Application, error) { return nil, boom }})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "open the application") {
		t.Fatalf("OpenApp error: %v", err)
	}
	var opened app.Application
	n, err := New(c.cfgs[0], Options{Logger: testLogger(t), OpenApp: func(s app.Storage) (app.Application, error) {
		if s == nil {
			return nil, errors.New("no storage")
		}
		a, err := kv.Open(s)
		opened = a
		return a, err
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if opened == nil || n.app != opened {
		t.Fatal("the node does not run the application OpenApp returned")
	}
}
