package p2p

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/multiformats/go-multiaddr"

	"github.com/p2pbft/p2pbft/identity"
)

func TestParseNetwork(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.0/8":             "10.0.0.0/8",
		"10.1.2.3/8":             "10.0.0.0/8",
		"10.1.2.3":               "10.1.2.3/32",
		"fd00::/8":               "fd00::/8",
		"fd00::1":                "fd00::1/128",
		"/ip4/10.1.2.3":          "10.1.2.3/32",
		"/ip4/10.0.0.0/ipcidr/8": "10.0.0.0/8",
		"/ip6/fd00::/ipcidr/16":  "fd00::/16",
	} {
		p, err := ParseNetwork(in)
		if err != nil || p.String() != want {
			t.Errorf("ParseNetwork(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
	for _, in := range []string{"", "10.0.0.0/33", "example.com", "/dns4/example.com", "/ip4/10.0.0.1/ipcidr/40"} {
		if p, err := ParseNetwork(in); err == nil {
			t.Errorf("ParseNetwork(%q) = %v, want an error", in, p)
		}
	}
}

func TestConnLimitDefaultsAndValidation(t *testing.T) {
	keys := testKeys(t, "limits-cfg", 1)
	g := testGenesis(t, "limits-cfg", keys)
	c := Config{Key: keys[0], Genesis: g}.WithDefaults()
	if c.ConnsPerIP != DefaultConnsPerIP || c.ConnRatePerIP != DefaultConnRatePerIP || c.ConnBurstPerIP != DefaultConnBurstPerIP {
		t.Fatalf("defaults %d %g %d", c.ConnsPerIP, c.ConnRatePerIP, c.ConnBurstPerIP)
	}
	// What the defaults must allow: one client host running 512 bench clients (64 libp2p hosts, each with
	// a connection to every replica) at once, and 200 `p2pbft tx` processes in a row within the burst.
	if c.ConnsPerIP < 2*(512/8) || c.ConnBurstPerIP < 512/8 {
		t.Fatalf("defaults too tight for 512 bench clients: conns %d burst %d", c.ConnsPerIP, c.ConnBurstPerIP)
	}
	if c.ConnBurstPerIP < 200 {
		t.Fatalf("defaults may refuse 200 tx processes in a row (if they run faster than the refill): burst %d", c.ConnBurstPerIP)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := c
	bad.ConnRatePerIP = -1
	bad.AllowNetworks = []string{"10.0.0.0/8", "nonsense"}
	err := bad.Validate()
	if err == nil || !strings.Contains(err.Error(), "conn_rate_per_ip") || !strings.Contains(err.Error(), `allow_networks: "nonsense"`) {
		t.Fatalf("validate: %v", err)
	}
}

// scopeLimit names the scope from the resource manager's real errors (their format is libp2p's; this
// test notices if it changes).
func TestScopeLimitNamesRealErrors(t *testing.T) {
	ep := multiaddr.StringCast("/ip4/10.9.9.9/tcp/1")
	secondConn := func(system, transient rcmgr.LimitVal) (first network.ConnManagementScope, err error) {
		limits := rcmgr.PartialLimitConfig{
			System:      rcmgr.ResourceLimits{ConnsInbound: system},
			Transient:   rcmgr.ResourceLimits{ConnsInbound: transient},
			PeerDefault: rcmgr.ResourceLimits{ConnsInbound: rcmgr.BlockAllLimit},
		}.Build(rcmgr.DefaultLimits.AutoScale())
		rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits),
			rcmgr.WithLimitPerSubnet([]rcmgr.ConnLimitPerSubnet{}, []rcmgr.ConnLimitPerSubnet{}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rm.Close() })
		c1, err := rm.OpenConnection(network.DirInbound, true, ep)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c1.Done)
		if c2, err := rm.OpenConnection(network.DirInbound, true, ep); err == nil {
			c2.Done()
			t.Fatal("the second connection was admitted")
		} else {
			return c1, err
		}
		return nil, nil
	}
	if _, err := secondConn(10, 1); scopeLimit(err) != LimitTransient {
		t.Errorf("transient: %v -> %q", err, scopeLimit(err))
	}
	c1, err := secondConn(1, 10)
	if scopeLimit(err) != LimitSystem {
		t.Errorf("system: %v -> %q", err, scopeLimit(err))
	}
	if err := c1.SetPeer(testKeys(t, "scope", 1)[0].PeerID()); scopeLimit(err) != LimitPeer {
		t.Errorf("peer: %v -> %q", err, scopeLimit(err))
	}
	if got := scopeLimit(fmt.Errorf("something else")); got != LimitOther {
		t.Errorf("other: %q", got)
	}
}

// localIP returns a non-loopback IPv4 address of this machine that a listener can bind, so that
// connections between hosts of this process come from an address libp2p does not exempt (it exempts
// loopback from every per-IP limit, which is why tests on 127.0.0.1 never see them).
func localIP(t testing.TB) netip.Addr {
	t.Helper()
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Skipf("no interfaces: %v", err)
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || ipn.IP.To4() == nil || ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast() {
				continue
			}
			ip, _ := netip.AddrFromSlice(ipn.IP.To4())
			l, err := net.Listen("tcp", netip.AddrPortFrom(ip, 0).String())
			if err != nil {
				continue
			}
			l.Close()
			return ip
		}
	}
	t.Skip("this machine has no non-loopback IPv4 address to test per-IP limits on")
	return netip.Addr{}
}

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// limitsNet is one replica listening on a non-loopback address of this machine and client hosts that
// reach it from that same address.
type limitsNet struct {
	ip      netip.Addr
	replica *Host
	log     *syncBuffer
	g       *identity.Genesis
}

func newLimitsNet(t *testing.T, name string, mutate func(*Config)) *limitsNet {
	ip := localIP(t)
	keys := testKeys(t, name, 1)
	g := testGenesis(t, name, keys) // no addresses: the replica's IP is not exempt
	buf := &syncBuffer{}
	cfg := baseConfig(t, keys[0], g)
	cfg.ListenAddrs = []string{fmt.Sprintf("/ip4/%s/tcp/0", ip)}
	cfg.Logger = slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if mutate != nil {
		mutate(&cfg)
	}
	return &limitsNet{ip: ip, replica: startHost(t, cfg), log: buf, g: g}
}

func (n *limitsNet) client(t *testing.T) *Host {
	k, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(t, k, n.g)
	cfg.ListenAddrs = []string{fmt.Sprintf("/ip4/%s/tcp/0", n.ip)}
	cfg.Bootstrap = []string{n.replica.Addrs()[0].String()}
	return startHost(t, cfg)
}

func connectedTo(hosts []*Host, p peer.ID) int {
	k := 0
	for _, h := range hosts {
		if h != nil && h.LibP2P().Network().Connectedness(p) == network.Connected {
			k++
		}
	}
	return k
}

// ConnsPerIP: the replica admits that many client hosts of one address, refuses the next (counted and
// logged under the limit's name) and admits it once a place is free.
func TestConnsPerIPRefusesThenAdmits(t *testing.T) {
	n := newLimitsNet(t, "conns-per-ip", func(c *Config) { c.ConnsPerIP = 3; c.ConnRatePerIP = 1000; c.ConnBurstPerIP = 1000 })
	clients := make([]*Host, 5)
	for i := range clients {
		clients[i] = n.client(t)
	}
	rid := n.replica.ID()
	waitFor(t, 20*time.Second, "3 clients admitted, others refused", func() bool {
		return connectedTo(clients, rid) == 3 && n.replica.Stats().Refused(LimitConnsPerIP) > 0
	})
	if got := n.replica.guard.openFrom(n.ip); got != 3 {
		t.Fatalf("%d connections counted from %s, want 3", got, n.ip)
	}
	if k := n.replica.Stats().RefusedConns[RefusalKey{Limit: LimitConnsPerIP, Direction: "inbound"}]; k == 0 {
		t.Fatalf("refusals not counted by limit and direction: %v", n.replica.Stats().RefusedConns)
	}
	if out := n.log.String(); !strings.Contains(out, "connection refused by a resource limit") || !strings.Contains(out, "limit=conns_per_ip") {
		t.Fatalf("refusal not logged with its limit:\n%s", out)
	}
	// Close an admitted client: a refused one (redialling) takes its place.
	for i, c := range clients {
		if c.LibP2P().Network().Connectedness(rid) == network.Connected {
			c.Close()
			clients[i] = nil
			break
		}
	}
	waitFor(t, 20*time.Second, "a refused client admitted", func() bool {
		return connectedTo(clients, rid) == 3 && n.replica.guard.openFrom(n.ip) == 3
	})
}

// The connection rate: a burst of 2 admits two client hosts; the third is refused under conn_rate_per_ip.
func TestConnRatePerIPRefuses(t *testing.T) {
	n := newLimitsNet(t, "conn-rate", func(c *Config) { c.ConnRatePerIP = 0.001; c.ConnBurstPerIP = 2 })
	clients := []*Host{n.client(t), n.client(t), n.client(t)}
	rid := n.replica.ID()
	waitFor(t, 20*time.Second, "2 clients admitted, the third refused", func() bool {
		return connectedTo(clients, rid) == 2 && n.replica.Stats().Refused(LimitConnRate) > 0
	})
	if k := n.replica.Stats().Refused(LimitConnsPerIP); k != 0 {
		t.Fatalf("%d refused under conns_per_ip", k)
	}
}

// Replicas listed in the genesis with the same IP address are exempt from the per-IP limits: four of
// them on one address form a full mesh even with one connection and one new connection allowed per
// address. (Without the exemption each would refuse the others' second connection.)
func TestGenesisAddressesExemptFromPerIPLimits(t *testing.T) {
	ip := localIP(t)
	keys := testKeys(t, "exempt", 4)
	ports := make([]int, len(keys))
	var hold []net.Listener
	for i := range ports {
		l, err := net.Listen("tcp", netip.AddrPortFrom(ip, 0).String())
		if err != nil {
			t.Fatal(err)
		}
		hold = append(hold, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	for _, l := range hold {
		l.Close()
	}
	reps := make([]identity.Replica, len(keys))
	for i, k := range keys {
		reps[i] = identity.Replica{Name: fmt.Sprintf("r%d", i), PeerID: k.PeerID(),
			Addrs: []multiaddr.Multiaddr{multiaddr.StringCast(fmt.Sprintf("/ip4/%s/tcp/%d", ip, ports[i]))}}
	}
	g, err := identity.NewGenesis("exempt", reps)
	if err != nil {
		t.Fatal(err)
	}
	hosts := make([]*Host, len(keys))
	for i, k := range keys {
		cfg := baseConfig(t, k, g)
		cfg.ListenAddrs = []string{fmt.Sprintf("/ip4/%s/tcp/%d", ip, ports[i])}
		cfg.ConnsPerIP, cfg.ConnRatePerIP, cfg.ConnBurstPerIP = 1, 0.001, 1
		hosts[i] = startHost(t, cfg)
	}
	waitMesh(t, hosts, 30*time.Second)
	for i, h := range hosts {
		if k := h.Stats().Refused("*"); k != 0 {
			t.Errorf("replica %d refused %d connections: %v", i, k, h.Stats().RefusedConns)
		}
		if k := h.guard.openFrom(ip); k != 0 {
			t.Errorf("replica %d counts %d connections from its peers' address", i, k)
		}
	}
}

// dialFromOneAddress connects plain libp2p hosts, all on this machine's non-loopback address, to target:
// first `held` of them that stay connected, then `churn` more one after the other, each closed before
// the next (as `p2pbft tx` processes do). It returns how many of each were refused.
func dialFromOneAddress(t *testing.T, ip netip.Addr, target peer.AddrInfo, held, churn int) (heldRefused, churnRefused int) {
	t.Helper()
	newClient := func() host.Host {
		h, err := libp2p.New(libp2p.ListenAddrStrings(fmt.Sprintf("/ip4/%s/tcp/0", ip)), libp2p.DisableMetrics())
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	connect := func(h host.Host) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Connect(ctx, target); err != nil {
			return err
		}
		// The remote may close a connection it refused just after our side of the handshake completed:
		// only a working stream proves admission.
		s, err := h.NewStream(ctx, target.ID, "/ipfs/id/1.0.0")
		if err != nil {
			return err
		}
		s.Close()
		return nil
	}
	var keep []host.Host
	defer func() {
		for _, h := range keep {
			h.Close()
		}
	}()
	for range held {
		h := newClient()
		keep = append(keep, h)
		if connect(h) != nil {
			heldRefused++
		}
	}
	for range churn {
		h := newClient()
		if connect(h) != nil {
			churnRefused++
		}
		h.Close()
	}
	return heldRefused, churnRefused
}

// The premise of the per-IP settings: libp2p's default resource manager, as this package used it before
// it had them, refuses a client machine's ninth connection held at once and its connections in a row
// past a burst of about 16; the host's defaults admit both loads.
func TestLibp2pDefaultPerIPLimitsAgainstHostDefaults(t *testing.T) {
	ip := localIP(t)
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(rcmgr.DefaultLimits.AutoScale()))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := libp2p.New(libp2p.ListenAddrStrings(fmt.Sprintf("/ip4/%s/tcp/0", ip)), libp2p.ResourceManager(rm), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	heldRefused, _ := dialFromOneAddress(t, ip, peer.AddrInfo{ID: plain.ID(), Addrs: plain.Addrs()}, 12, 0)
	if heldRefused == 0 {
		t.Fatal("libp2p's default resource manager admitted 12 connections from one address: its per-IP limit changed, revisit limits.go")
	}
	t.Logf("libp2p defaults: %d of 12 held connections from %s refused", heldRefused, ip)

	n := newLimitsNet(t, "host-defaults", nil)
	target := peer.AddrInfo{ID: n.replica.ID(), Addrs: n.replica.LibP2P().Addrs()}
	heldRefused, churnRefused := dialFromOneAddress(t, ip, target, 12, 30)
	if heldRefused != 0 || churnRefused != 0 {
		t.Fatalf("host defaults refused %d of 12 held and %d of 30 successive connections: %v", heldRefused, churnRefused, n.replica.Stats().RefusedConns)
	}
}

// The same, for connections in a row: libp2p's rate limit (0.2 per second after a burst of 16) refuses
// some of 30 (as it did `p2pbft tx` in a loop).
func TestLibp2pDefaultConnRateRefusesSuccessiveConnections(t *testing.T) {
	ip := localIP(t)
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(rcmgr.DefaultLimits.AutoScale()))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := libp2p.New(libp2p.ListenAddrStrings(fmt.Sprintf("/ip4/%s/tcp/0", ip)), libp2p.ResourceManager(rm), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	_, churnRefused := dialFromOneAddress(t, ip, peer.AddrInfo{ID: plain.ID(), Addrs: plain.Addrs()}, 0, 30)
	if churnRefused == 0 {
		t.Fatal("libp2p's default resource manager admitted 30 connections in a row from one address: its rate limit changed, revisit limits.go")
	}
	t.Logf("libp2p defaults: %d of 30 successive connections from %s refused", churnRefused, ip)
}

// connGuard on its own: inbound connections count per IPv4 address and per IPv6 /56, exempt networks and
// outbound connections do not, Done gives the place back once, and QUIC's source verification starts
// past half of ConnsPerIP for non-exempt sources only.
func TestConnGuardCountsPerAddress(t *testing.T) {
	inner, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(rcmgr.InfiniteLimits),
		rcmgr.WithLimitPerSubnet([]rcmgr.ConnLimitPerSubnet{}, []rcmgr.ConnLimitPerSubnet{}))
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	var refusals []string
	cfg := Config{ConnsPerIP: 2, ConnRatePerIP: 1000, ConnBurstPerIP: 1000}
	exempt := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.1.0.0/16")}
	g := newConnGuard(inner, cfg, exempt, testLogger(t), func(limit string, _ network.Direction) { refusals = append(refusals, limit) })
	open := func(dir network.Direction, addr string) (network.ConnManagementScope, error) {
		return g.OpenConnection(dir, true, multiaddr.StringCast(addr))
	}
	var scopes []network.ConnManagementScope
	mustOpen := func(dir network.Direction, addr string) network.ConnManagementScope {
		t.Helper()
		s, err := open(dir, addr)
		if err != nil {
			t.Fatalf("%s %s refused: %v", dir, addr, err)
		}
		scopes = append(scopes, s)
		return s
	}
	defer func() {
		for _, s := range scopes {
			s.Done()
		}
	}()
	first := mustOpen(network.DirInbound, "/ip4/192.0.2.9/tcp/1")
	mustOpen(network.DirInbound, "/ip4/192.0.2.9/tcp/2")
	if _, err := open(network.DirInbound, "/ip4/192.0.2.9/tcp/3"); err == nil || !strings.Contains(err.Error(), "conns_per_ip") {
		t.Fatalf("third connection from one address: %v", err)
	}
	mustOpen(network.DirInbound, "/ip4/192.0.2.10/tcp/1") // another address
	mustOpen(network.DirOutbound, "/ip4/192.0.2.9/tcp/4") // outbound: not limited
	for range 5 {
		mustOpen(network.DirInbound, "/ip4/10.1.2.3/tcp/1") // exempt network
		mustOpen(network.DirInbound, "/ip4/127.0.0.1/tcp/1")
	}
	mustOpen(network.DirInbound, "/ip6/2001:db8:0:1::1/tcp/1")
	mustOpen(network.DirInbound, "/ip6/2001:db8:0:2::1/tcp/1") // same /56
	if _, err := open(network.DirInbound, "/ip6/2001:db8:0:3::1/tcp/1"); err == nil {
		t.Fatal("a third connection from one IPv6 /56 was admitted")
	}
	mustOpen(network.DirInbound, "/ip6/2001:db8:1::1/tcp/1") // another /56
	if len(refusals) != 2 || refusals[0] != LimitConnsPerIP || refusals[1] != LimitConnsPerIP {
		t.Fatalf("refusals %v", refusals)
	}
	ip := netip.MustParseAddr("192.0.2.9")
	first.Done()
	first.Done() // twice: the place is given back once
	if got := g.openFrom(ip); got != 1 {
		t.Fatalf("%d counted after Done, want 1", got)
	}
	mustOpen(network.DirInbound, "/ip4/192.0.2.9/tcp/5")
	if got := g.openFrom(ip); got != 2 {
		t.Fatalf("%d counted, want 2", got)
	}

	udp := func(s string) net.Addr { return net.UDPAddrFromAddrPort(netip.MustParseAddrPort(s)) }
	for range 10 {
		if g.VerifySourceAddress(udp("10.1.9.9:1")) {
			t.Fatal("an exempt source must not be asked to verify its address")
		}
	}
	asked := 0
	for range 3 {
		if g.VerifySourceAddress(udp("192.0.2.77:1")) {
			asked++
		}
	}
	if asked != 2 { // burst ConnsPerIP/2 = 1
		t.Fatalf("verification asked %d times of 3, want 2", asked)
	}
}
