package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/p2pbft/p2pbft/identity"
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
