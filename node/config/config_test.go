package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestCommentedRoundTrips(t *testing.T) {
	cfg := Default()
	cfg.Moniker = "node-3"
	cfg.P2P.Bootstrap = []string{"/ip4/127.0.0.1/tcp/1/p2p/12D3KooWabc"}
	cfg.Consensus.Tick = 5 * time.Millisecond
	cfg.Experiment.AdminAPI = true
	b, err := Commented(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := Config{}
	if err := Decode(b, &got); err != nil {
		t.Fatalf("decode rendered config: %v\n%s", err, b)
	}
	if !reflect.DeepEqual(got, cfg) {
		t.Fatalf("round trip changed the config:\n got %+v\nwant %+v", got, cfg)
	}
}

// The checked-in example must be exactly what Commented(Default()) renders, so the docs never drift.
func TestExampleFileUpToDate(t *testing.T) {
	want, err := Commented(Default())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("..", "..", "docs", "config.example.toml")
	if os.Getenv("UPDATE_EXAMPLE") == "1" {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (regenerate with UPDATE_EXAMPLE=1 go test ./node/config)", err)
	}
	if string(got) != string(want) {
		t.Fatalf("%s is out of date: regenerate with UPDATE_EXAMPLE=1 go test ./node/config", path)
	}
}

func TestDecodeRejectsUnknownKeys(t *testing.T) {
	cfg := Default()
	err := Decode([]byte("[consensus]\ncheckpoint_intervall = 3\n"), &cfg)
	if err == nil || !strings.Contains(err.Error(), "checkpoint_intervall") {
		t.Fatalf("err = %v, want it to name the unknown key", err)
	}
}

func TestValidateNamesBadField(t *testing.T) {
	cases := map[string]func(c *Config){
		"consensus.window":                func(c *Config) { c.Consensus.Window = 33 },
		"consensus.window ":               func(c *Config) { c.Consensus.Window = 32 }, // a multiple of K, but below 2K
		"consensus.tick":                  func(c *Config) { c.Consensus.Tick = 0 },
		"log.level":                       func(c *Config) { c.Log.Level = "loud" },
		"p2p.listen":                      func(c *Config) { c.P2P.Listen = nil },
		"p2p.listen ":                     func(c *Config) { c.P2P.Listen = []string{"0.0.0.0:26656"} },
		"p2p.listen  ":                    func(c *Config) { c.P2P.Listen = []string{"/dns4/example.com/tcp/1"} },
		"p2p.external":                    func(c *Config) { c.P2P.External = []string{"/ip4/203.0.113.7"} },
		"p2p.external ":                   func(c *Config) { c.P2P.External = []string{"/ip4/203.0.113.7/tcp/1/p2p/12D3KooWA"} },
		"api.http":                        func(c *Config) { c.API.HTTP = "localhost" },
		"consensus.status_interval":       func(c *Config) { c.Consensus.StatusInterval = 0 },
		"consensus.pipeline_min_requests": func(c *Config) { c.Consensus.PipelineMinRequests = -1 },
		"p2p.ping_interval":               func(c *Config) { c.P2P.PingInterval = time.Millisecond },
		"consensus.max_in_flight":         func(c *Config) { c.Consensus.MaxInFlight = 1000 },
		"p2p.broadcast":                   func(c *Config) { c.P2P.Broadcast = "carrier-pigeon" },
		"p2p.conns_per_ip":                func(c *Config) { c.P2P.ConnsPerIP = 0 },
		"p2p.conn_rate_per_ip":            func(c *Config) { c.P2P.ConnRatePerIP = -1 },
		"p2p.conn_burst_per_ip":           func(c *Config) { c.P2P.ConnBurstPerIP = 0 },
		"p2p.allow_networks":              func(c *Config) { c.P2P.AllowNetworks = []string{"10.0.0.0/8", "lan"} },
		"state_sync.chunk_bytes":          func(c *Config) { c.StateSync.ChunkBytes = 10 },
		"state_sync.keep_snapshots":       func(c *Config) { c.StateSync.KeepSnapshots = 1 },
		"consensus.retransmit_timeout":    func(c *Config) { c.Consensus.RetransmitTimeout = 0 },
		"trace.slots":                     func(c *Config) { c.Trace.Slots = 0 },
		"trace.view_changes":              func(c *Config) { c.Trace.ViewChanges = -1 },
		"store.memtable_size":             func(c *Config) { c.Store.MemTableSize = 1000 },
		"experiment.byzantine_mode":       func(c *Config) { c.Experiment.ByzantineMode = "evil" },
		"experiment.byzantine_delay":      func(c *Config) { c.Experiment.ByzantineMode = "delay" },
		"experiment.byzantine_delay ":     func(c *Config) { c.Experiment.ByzantineDelay = -time.Second },
		"experiment.byzantine_drop_rate": func(c *Config) {
			c.Experiment.ByzantineMode, c.Experiment.ByzantineDropRate = "drop", 1.5
		},
	}
	for field, mutate := range cases {
		c := Default()
		mutate(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), strings.TrimSpace(field)) {
			t.Errorf("%s: err = %v", field, err)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	if _, err := Load(""); err == nil {
		t.Fatal("empty home accepted")
	}
	missing := filepath.Join(t.TempDir(), "nope")
	if _, err := Load(missing); err == nil || !strings.Contains(err.Error(), "p2pbft init") {
		t.Fatalf("missing home: %v", err)
	}
	home := t.TempDir()
	if err := os.WriteFile(filepath.Join(home, ConfigFile), []byte("moniker = \"x\"\n[api]\nhttp = \"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(home)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Moniker != "x" || cfg.API.HTTP != "" || cfg.Consensus.Window != 64 || cfg.Home != home {
		t.Fatalf("loaded %+v", cfg)
	}
}

func TestTicks(t *testing.T) {
	c := Default().Consensus
	for _, tc := range []struct {
		d    time.Duration
		want int
	}{{0, 1}, {time.Millisecond, 1}, {10 * time.Millisecond, 1}, {11 * time.Millisecond, 2}, {2 * time.Second, 200}} {
		if got := c.Ticks(tc.d); got != tc.want {
			t.Errorf("Ticks(%s) = %d, want %d", tc.d, got, tc.want)
		}
	}
}

// Announced addresses may be DNS names; listen addresses take TCP or QUIC on an IP address.
func TestTransportAddresses(t *testing.T) {
	c := Default()
	c.P2P.Listen = []string{"/ip4/0.0.0.0/tcp/7000", "/ip6/::/udp/7000/quic-v1"}
	c.P2P.External = []string{"/dns4/node.example.com/tcp/7000", "/ip4/203.0.113.7/udp/7000/quic-v1"}
	c.API.HTTP = "[::1]:26680"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}
