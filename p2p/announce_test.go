package p2p

import (
	"slices"
	"testing"
	"time"

	"github.com/multiformats/go-multiaddr"
)

// A host behind NAT announces the addresses it is told to (config p2p.external), not its listen
// addresses: they are what identify hands to its peers.
func TestAnnounceAddrs(t *testing.T) {
	keys := testKeys(t, "announce", 2)
	g := testGenesis(t, "announce-chain", keys)
	const public = "/ip4/203.0.113.7/tcp/26656"
	c0 := baseConfig(t, keys[0], g)
	c0.AnnounceAddrs = []string{public}
	h0 := startHost(t, c0)
	if got := h0.LibP2P().Addrs(); len(got) != 1 || got[0].String() != public {
		t.Fatalf("host 0 announces %v, want [%s]", got, public)
	}
	listen := h0.LibP2P().Network().ListenAddresses()
	if len(listen) == 0 {
		t.Fatal("host 0 listens nowhere")
	}
	c1 := baseConfig(t, keys[1], g)
	c1.Bootstrap = []string{listen[0].String() + "/p2p/" + h0.ID().String()}
	h1 := startHost(t, c1)
	waitFor(t, 10*time.Second, "host 1 learns host 0's announced address", func() bool {
		return slices.ContainsFunc(h1.LibP2P().Peerstore().Addrs(h0.ID()), func(a multiaddr.Multiaddr) bool {
			return a.String() == public
		})
	})
	bad := baseConfig(t, keys[0], g)
	bad.AnnounceAddrs = []string{"/ip4/203.0.113.7/tcp/x"}
	bad = bad.WithDefaults()
	if err := bad.Validate(); err == nil {
		t.Fatal("a malformed announce address validated")
	}
}
