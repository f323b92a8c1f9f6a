package p2p

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/x/rate"
	"github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Connection limits.
//
// libp2p's resource manager limits connections per remote IP address on its own: at most 8 open at once
// per IPv4 address (IPv6: per /56, and 64 per /48), and about 0.2 new ones per second per address after a
// burst of 16; loopback is exempt. That suits a public DHT node. For a replica it is wrong twice: a client
// host that runs many clients (`p2pbft bench` opens a libp2p host per 8 of them, `p2pbft tx` one per
// process) is refused after a few connections, and replicas that share an address (several on one
// machine, or behind one NAT) starve each other. Tests on 127.0.0.1 never see either.
//
// So the host turns those two limiters off in the resource manager and applies its own in front of it
// (connGuard), to inbound connections only (outbound ones are dials this host chose to make):
//
//   - exempt: loopback, the IP addresses of the replicas in the genesis (/ip4 and /ip6 addresses; /dns
//     names are not resolved for this) and Config.AllowNetworks. The genesis addresses, with the replica's
//     peer ID, and AllowNetworks are also on the resource manager's allowlist, so that connections from
//     them may use its allowlisted system and transient scopes when the ordinary ones are full of clients;
//   - ConnsPerIP: connections open at once from one IPv4 address or IPv6 /56 (default 128);
//   - ConnRatePerIP and ConnBurstPerIP: a token bucket per address for new connections (defaults 10 per
//     second, burst 256: 200 `p2pbft tx` processes in a row however fast they run). QUIC also asks
//     unverified sources to prove their address (a retry round trip) past ConnsPerIP/2 new connections
//     at 0.1 per second, as libp2p does with its own limit.
//
// A refused connection is logged with the name of the limit that refused it (at info level the first time
// in a minute for each limit, with the count since; every one at debug level) and counted by limit and
// direction (Stats.RefusedConns, p2pbft_p2p_refused_connections_total). The limits are the settings'
// names: conns_per_ip and conn_rate_per_ip (this host's), system, transient and peer (the resource
// manager's scopes, see limits), other.

// Refusal limits: the names under which refused connections are logged and counted.
const (
	LimitConnsPerIP   = "conns_per_ip"     // Config.ConnsPerIP
	LimitConnRate     = "conn_rate_per_ip" // Config.ConnRatePerIP and ConnBurstPerIP
	LimitSystem       = "system"           // the resource manager's system scope (all connections)
	LimitTransient    = "transient"        // its transient scope (connections not yet authenticated)
	LimitPeer         = "peer"             // its per-peer scope
	LimitOther        = "other"            // anything else the resource manager refused
	refusalInfoPeriod = time.Minute
)

// Defaults of the connection limits.
const (
	DefaultConnsPerIP     = 128
	DefaultConnRatePerIP  = 10.0
	DefaultConnBurstPerIP = 256
)

// limits are the resource manager's scope limits: generous for replicas (each may carry n x window
// messages of up to MaxMessageSize in flight), tight for everyone else.
func (h *Host) limits() rcmgr.ConcreteLimitConfig {
	n := h.genesis.N()
	base := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&base)
	scaled := base.Scale(2<<30, 8192)
	replicaMem := int64(max(256<<20, 4*h.cfg.MaxMessageSize))
	replica := rcmgr.ResourceLimits{
		Conns: 8, ConnsInbound: 4, ConnsOutbound: 4,
		Streams: 4096, StreamsInbound: 2048, StreamsOutbound: 2048,
		FD: 8, Memory: rcmgr.LimitVal64(replicaMem),
	}
	partial := rcmgr.PartialLimitConfig{
		System: rcmgr.ResourceLimits{
			Conns: rcmgr.LimitVal(h.cfg.ConnHigh + 4*n), ConnsInbound: rcmgr.LimitVal(h.cfg.ConnHigh + 2*n),
			ConnsOutbound: rcmgr.LimitVal(h.cfg.ConnHigh + 2*n),
			Streams:       rcmgr.LimitVal(8192 + 4096*n), StreamsInbound: rcmgr.LimitVal(4096 + 2048*n),
			StreamsOutbound: rcmgr.LimitVal(4096 + 2048*n),
			Memory:          rcmgr.LimitVal64(int64(n)*replicaMem + 1<<30),
		},
		PeerDefault: rcmgr.ResourceLimits{
			Conns: 4, ConnsInbound: 2, ConnsOutbound: 2,
			Streams: 64, StreamsInbound: 32, StreamsOutbound: 32,
			Memory: rcmgr.LimitVal64(int64(max(64<<20, 4*h.cfg.MaxClientMessageSize))),
		},
		Peer: make(map[peer.ID]rcmgr.ResourceLimits, n),
	}
	for _, id := range h.genesisPeers() {
		partial.Peer[id] = replica
	}
	return partial.Build(scaled)
}

// resourceManager builds the resource manager: libp2p's, with the limits above, its per-IP limiters off
// and the allowlist set, behind a connGuard that applies the per-IP limits of the configuration.
func (h *Host) resourceManager() (network.ResourceManager, error) {
	exempt := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	var allow []multiaddr.Multiaddr
	for _, r := range h.genesis.Replicas() {
		for _, a := range r.Addrs {
			ip, ok := multiaddrIP(a)
			if !ok {
				continue // a /dns name: not resolved here (see AllowNetworks)
			}
			exempt = append(exempt, netip.PrefixFrom(ip, ip.BitLen()))
			allow = append(allow, ipMultiaddr(netip.PrefixFrom(ip, ip.BitLen())).Encapsulate(multiaddr.StringCast("/p2p/"+r.PeerID.String())))
		}
	}
	for _, s := range h.cfg.AllowNetworks {
		p, _ := ParseNetwork(s) // validated
		exempt = append(exempt, p)
		allow = append(allow, ipMultiaddr(p))
	}
	inner, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(h.limits()),
		rcmgr.WithAllowlistedMultiaddrs(allow),
		// Off: connGuard applies ConnsPerIP and the connection rate instead (see above).
		rcmgr.WithLimitPerSubnet([]rcmgr.ConnLimitPerSubnet{}, []rcmgr.ConnLimitPerSubnet{}),
		rcmgr.WithConnRateLimiters(&rate.Limiter{}),
	)
	if err != nil {
		return nil, err
	}
	h.guard = newConnGuard(inner, h.cfg, exempt, h.log, h.metrics.refuse)
	return h.guard, nil
}

// connGuard is the resource manager seen by libp2p: it applies the per-IP limits to inbound connections,
// then hands over to libp2p's resource manager, and reports every refusal with the limit's name.
type connGuard struct {
	network.ResourceManager
	log     *slog.Logger
	count   func(limit string, dir network.Direction)
	exempt  []netip.Prefix
	perIP   int
	rate    *rate.Limiter // new connections per address
	verify  *rate.Limiter // QUIC source address verification
	rateDoc string        // the rate limit, for messages

	mu    sync.Mutex
	open  map[netip.Prefix]int // open inbound connections per address (IPv4) or /56 (IPv6)
	infos map[string]*refusalLog
}

type refusalLog struct {
	last       time.Time
	suppressed int
}

func newConnGuard(inner network.ResourceManager, cfg Config, exempt []netip.Prefix, log *slog.Logger,
	count func(string, network.Direction)) *connGuard {
	unlimited := make([]rate.PrefixLimit, len(exempt))
	for i, p := range exempt {
		unlimited[i] = rate.PrefixLimit{Prefix: p} // zero limit: unlimited
	}
	perAddr := func(l rate.Limit) rate.SubnetLimiter {
		return rate.SubnetLimiter{
			IPv4SubnetLimits: []rate.SubnetLimit{{PrefixLength: 32, Limit: l}},
			IPv6SubnetLimits: []rate.SubnetLimit{{PrefixLength: 56, Limit: l}},
			GracePeriod:      time.Minute,
		}
	}
	return &connGuard{
		ResourceManager: inner,
		log:             log,
		count:           count,
		exempt:          exempt,
		perIP:           cfg.ConnsPerIP,
		rate: &rate.Limiter{NetworkPrefixLimits: unlimited,
			SubnetRateLimiter: perAddr(rate.Limit{RPS: cfg.ConnRatePerIP, Burst: cfg.ConnBurstPerIP})},
		verify: &rate.Limiter{NetworkPrefixLimits: unlimited,
			SubnetRateLimiter: perAddr(rate.Limit{RPS: 0.1, Burst: max(1, cfg.ConnsPerIP/2)})},
		rateDoc: fmt.Sprintf("%g per second, burst %d", cfg.ConnRatePerIP, cfg.ConnBurstPerIP),
		open:    make(map[netip.Prefix]int),
		infos:   make(map[string]*refusalLog),
	}
}

func (g *connGuard) isExempt(ip netip.Addr) bool {
	for _, p := range g.exempt {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// addrKey is the unit ConnsPerIP counts: an IPv4 address or an IPv6 /56.
func addrKey(ip netip.Addr) netip.Prefix {
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32)
	}
	p, _ := ip.Prefix(56)
	return p
}

// OpenConnection applies the per-IP limits to inbound connections, then the resource manager's scopes.
func (g *connGuard) OpenConnection(dir network.Direction, usefd bool, endpoint multiaddr.Multiaddr) (network.ConnManagementScope, error) {
	ip, hasIP := multiaddrIP(endpoint)
	var key netip.Prefix
	counted := false
	if dir == network.DirInbound && hasIP && !g.isExempt(ip) {
		if !g.rate.Allow(ip) {
			return nil, g.refuse(LimitConnRate, dir, endpoint,
				fmt.Errorf("p2p: new connections from %s over conn_rate_per_ip (%s): %w", ip, g.rateDoc, network.ErrResourceLimitExceeded))
		}
		key = addrKey(ip)
		g.mu.Lock()
		if g.open[key] >= g.perIP {
			g.mu.Unlock()
			return nil, g.refuse(LimitConnsPerIP, dir, endpoint,
				fmt.Errorf("p2p: %d connections open from %s, conns_per_ip is %d: %w", g.perIP, key, g.perIP, network.ErrResourceLimitExceeded))
		}
		g.open[key]++
		g.mu.Unlock()
		counted = true
	}
	scope, err := g.ResourceManager.OpenConnection(dir, usefd, endpoint)
	if err != nil {
		if counted {
			g.release(key)
		}
		return nil, g.refuse(scopeLimit(err), dir, endpoint, err)
	}
	return &guardedConn{ConnManagementScope: scope, g: g, key: key, counted: counted, dir: dir, endpoint: endpoint}, nil
}

// VerifySourceAddress tells QUIC to make a new source prove its address (a retry round trip) once it
// opens connections faster than libp2p would let it without proof. Exempt addresses never have to.
func (g *connGuard) VerifySourceAddress(addr net.Addr) bool {
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return true
	}
	return !g.verify.Allow(ap.Addr().Unmap())
}

func (g *connGuard) release(key netip.Prefix) {
	g.mu.Lock()
	if g.open[key]--; g.open[key] <= 0 {
		delete(g.open, key)
	}
	g.mu.Unlock()
}

// openFrom returns how many inbound connections from ip count against ConnsPerIP now (for tests).
func (g *connGuard) openFrom(ip netip.Addr) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.open[addrKey(ip)]
}

// refuse counts and logs a refused connection and returns err.
func (g *connGuard) refuse(limit string, dir network.Direction, endpoint multiaddr.Multiaddr, err error) error {
	g.count(limit, dir)
	g.mu.Lock()
	l := g.infos[limit]
	if l == nil {
		l = &refusalLog{}
		g.infos[limit] = l
	}
	now := time.Now()
	info := l.last.IsZero() || now.Sub(l.last) >= refusalInfoPeriod
	suppressed := l.suppressed
	if info {
		l.last, l.suppressed = now, 0
	} else {
		l.suppressed++
	}
	g.mu.Unlock()
	args := []any{"limit", limit, "direction", strings.ToLower(dir.String()), "remote", endpoint, "err", err}
	if info {
		g.log.Info("connection refused by a resource limit", append(args, "refused_since_last_report", suppressed)...)
	} else {
		g.log.Debug("connection refused by a resource limit", args...)
	}
	return err
}

// scopeLimit names the resource manager scope that refused a connection, from its error ("conn-7:
// transient: cannot reserve inbound connection: resource limit exceeded", "peer:12D3KooW...: ...").
func scopeLimit(err error) string {
	if !errors.Is(err, network.ErrResourceLimitExceeded) {
		return LimitOther
	}
	for _, part := range strings.Split(err.Error(), ": ") {
		switch {
		case part == "system" || part == "allowlistedSystem":
			return LimitSystem
		case part == "transient" || part == "allowlistedTransient":
			return LimitTransient
		case strings.HasPrefix(part, "peer:"):
			return LimitPeer
		}
	}
	return LimitOther
}

// guardedConn is a connection's scope: it gives the connection's place under ConnsPerIP back when the
// connection ends, and reports a refusal when the peer's scope has no room for it.
type guardedConn struct {
	network.ConnManagementScope
	g        *connGuard
	key      netip.Prefix
	counted  bool
	dir      network.Direction
	endpoint multiaddr.Multiaddr
	once     sync.Once
}

func (c *guardedConn) SetPeer(p peer.ID) error {
	err := c.ConnManagementScope.SetPeer(p)
	if err != nil {
		c.g.refuse(scopeLimit(err), c.dir, c.endpoint, err)
	}
	return err
}

func (c *guardedConn) Done() {
	c.once.Do(func() {
		if c.counted {
			c.g.release(c.key)
		}
	})
	c.ConnManagementScope.Done()
}

// multiaddrIP returns the IP address a multiaddr starts with.
func multiaddrIP(a multiaddr.Multiaddr) (netip.Addr, bool) {
	ip, err := manet.ToIP(a)
	if err != nil {
		return netip.Addr{}, false
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}, false
	}
	return addr.Unmap(), true
}

// ParseNetwork parses an AllowNetworks entry: a CIDR (10.0.0.0/8, fd00::/8), an address (10.1.2.3), or a
// multiaddr (/ip4/10.0.0.0/ipcidr/8, /ip4/10.1.2.3, /ip6/fd00::1).
func ParseNetwork(s string) (netip.Prefix, error) {
	if strings.HasPrefix(s, "/") {
		a, err := multiaddr.NewMultiaddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		ip, ok := multiaddrIP(a)
		if !ok {
			return netip.Prefix{}, fmt.Errorf("%q does not start with /ip4 or /ip6", s)
		}
		bits := ip.BitLen()
		if v, err := a.ValueForProtocol(multiaddr.P_IPCIDR); err == nil {
			if _, err := fmt.Sscanf(v, "%d", &bits); err != nil {
				return netip.Prefix{}, fmt.Errorf("%q: bad ipcidr", s)
			}
		}
		p, err := ip.Prefix(bits)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q: %w", s, err)
		}
		return p, nil
	}
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither a CIDR, an address nor a multiaddr", s)
	}
	return netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()), nil
}

// ipMultiaddr is the resource manager allowlist's form of a network: /ip4/A/ipcidr/N.
func ipMultiaddr(p netip.Prefix) multiaddr.Multiaddr {
	proto := "ip4"
	if p.Addr().Is6() {
		proto = "ip6"
	}
	return multiaddr.StringCast(fmt.Sprintf("/%s/%s/ipcidr/%d", proto, p.Addr(), p.Bits()))
}
