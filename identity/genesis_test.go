package identity

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	mh "github.com/multiformats/go-multihash"
)

func testReplicas(t testing.TB, n int) ([]*Key, []Replica) {
	t.Helper()
	keys := make([]*Key, n)
	reps := make([]Replica, n)
	for i := range keys {
		keys[i] = testKey(t, byte(i))
		reps[i] = Replica{
			Name:   fmt.Sprintf("replica-%d", i),
			PeerID: keys[i].PeerID(),
			Addrs:  []multiaddr.Multiaddr{multiaddr.StringCast(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", 7000+i))},
		}
	}
	return keys, reps
}

func TestGenesisRoundTrip(t *testing.T) {
	keys, reps := testReplicas(t, 4)
	reps[1].Addrs = append(reps[1].Addrs, multiaddr.StringCast("/dns4/replica-1.example/udp/7001/quic-v1/p2p/"+reps[1].PeerID.String()))
	reps[2].Name = ""
	reps[3].Addrs = nil
	g, err := NewGenesis("test-chain.1", reps)
	if err != nil {
		t.Fatal(err)
	}
	if g.N() != 4 || g.F() != 1 || g.ChainID() != "test-chain.1" {
		t.Fatalf("N=%d F=%d chain=%q", g.N(), g.F(), g.ChainID())
	}
	if got := g.Replica(1).Addrs[1].String(); strings.Contains(got, "/p2p/") {
		t.Fatalf("the /p2p/ part was not stripped: %s", got)
	}
	path := filepath.Join(t.TempDir(), "genesis.toml")
	if err := g.Save(path); err != nil {
		t.Fatal(err)
	}
	g2, err := LoadGenesis(path)
	if err != nil {
		data, _ := os.ReadFile(path)
		t.Fatalf("%v\n%s", err, data)
	}
	if g2.Digest() != g.Digest() || g2.N() != 4 || g2.Replica(0).Name != "replica-0" || len(g2.Replica(1).Addrs) != 2 {
		t.Fatal("loaded genesis differs from saved one")
	}
	if err := g2.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (&Genesis{}).Validate(); err == nil {
		t.Fatal("zero Genesis validated")
	}
	for i, k := range keys {
		if j, ok := g2.IndexOfKey(k.PublicKey()); !ok || j != i {
			t.Fatalf("IndexOfKey(key %d) = %d, %v", i, j, ok)
		}
		if j, ok := g2.IndexOfPeer(k.PeerID()); !ok || j != i {
			t.Fatalf("IndexOfPeer(key %d) = %d, %v", i, j, ok)
		}
		if g2.PeerID(i) != k.PeerID() || !bytes.Equal(g2.PublicKeys()[i], k.PublicKey()) || !bytes.Equal(g2.PublicKey(i), k.PublicKey()) {
			t.Fatalf("replica %d: peer ID or public key differs", i)
		}
		if g2.AddrInfos()[i].ID != k.PeerID() {
			t.Fatalf("AddrInfos[%d] wrong", i)
		}
	}
	if _, ok := g2.IndexOfKey(testKey(t, 99).PublicKey()); ok {
		t.Fatal("non-member key found")
	}
	// The digest depends on order and chain ID, not on names or addresses.
	swapped := append([]Replica(nil), reps...)
	swapped[0], swapped[1] = swapped[1], swapped[0]
	g3, _ := NewGenesis("test-chain.1", swapped)
	other, _ := NewGenesis("test-chain.2", reps)
	renamed := append([]Replica(nil), reps...)
	renamed[0].Name, renamed[0].Addrs = "zero", nil
	g4, _ := NewGenesis("test-chain.1", renamed)
	if g3.Digest() == g.Digest() || other.Digest() == g.Digest() || g4.Digest() != g.Digest() {
		t.Fatal("digest does not identify exactly chain ID and keys in order")
	}
	// Callers cannot change a Genesis through the returned slices.
	g.PublicKeys()[0][0] ^= 1
	g.Replicas()[0].Addrs[0] = nil
	if !bytes.Equal(g.PublicKey(0), keys[0].PublicKey()) || g.Replica(0).Addrs[0] == nil {
		t.Fatal("Genesis modified through an accessor's result")
	}
}

func TestGenesisF(t *testing.T) {
	for n, f := range map[int]int{1: 0, 2: 0, 3: 0, 4: 1, 6: 1, 7: 2, 10: 3, 13: 4} {
		_, reps := testReplicas(t, n)
		g, err := NewGenesis("c", reps)
		if err != nil {
			t.Fatal(err)
		}
		if g.F() != f || g.N() < 3*g.F()+1 {
			t.Errorf("n=%d: f=%d, want %d", n, g.F(), f)
		}
	}
}

func TestGenesisErrorsNameTheEntry(t *testing.T) {
	keys, _ := testReplicas(t, 4)
	id := func(i int) string { return keys[i].PeerID().String() }
	secp, _, _ := crypto.GenerateSecp256k1Key(rand.Reader)
	secpID, _ := peer.IDFromPrivateKey(secp)
	hashed, _ := mh.Sum([]byte("an RSA key's peer ID is a hash"), mh.SHA2_256, -1)
	hashedID := peer.ID(hashed)

	head := "chain_id = \"c\"\n"
	rep := func(name, pid string, addrs ...string) string {
		s := fmt.Sprintf("[[replica]]\nname = %q\npeer_id = %q\n", name, pid)
		if len(addrs) > 0 {
			s += "addrs = [\"" + strings.Join(addrs, "\", \"") + "\"]\n"
		}
		return s
	}
	four := rep("a", id(0)) + rep("b", id(1)) + rep("c", id(2)) + rep("d", id(3))
	cases := []struct {
		name, file string
		want       []string
	}{
		{"duplicate peer", head + rep("a", id(0)) + rep("b", id(1)) + rep("c", id(0)), []string{`replica 2 ("c")`, "same peer ID as replica 0"}},
		{"duplicate name", head + rep("a", id(0)) + rep("a", id(1)), []string{`replica 1 ("a")`, "same name as replica 0"}},
		{"bad peer ID", head + rep("a", id(0)) + rep("b", "12D3KooWnotapeerid"), []string{`replica 1 ("b")`, "invalid peer ID"}},
		{"secp256k1 peer ID", head + rep("a", id(0)) + rep("s", secpID.String()), []string{`replica 1 ("s")`, "Secp256k1", "want Ed25519"}},
		{"hashed peer ID", head + rep("h", hashedID.String()), []string{`replica 0 ("h")`, "not an ed25519 peer ID"}},
		{"missing peer ID", head + "[[replica]]\nname = \"x\"\n", []string{`replica 0 ("x")`, "peer_id is missing"}},
		{"bad address", head + rep("a", id(0), "/ip4/1.2.3.4/tcp/notaport"), []string{`replica 0 ("a")`, "address 0"}},
		{"address of another peer", head + rep("a", id(0), "/ip4/1.2.3.4/tcp/1/p2p/"+id(1)), []string{`replica 0 ("a")`, "names peer " + id(1)}},
		{"address without transport", head + rep("a", id(0), "/p2p/"+id(0)), []string{`replica 0 ("a")`, "no transport"}},
		{"wrong f", head + "f = 2\n" + four, []string{"f = 2", "(n-1)/3 = 1"}},
		{"no replicas", head, []string{"no replicas"}},
		{"no chain ID", four, []string{"chain ID is empty"}},
		{"bad chain ID", "chain_id = \"a/b\"\n" + four, []string{`chain ID "a/b"`, `'/'`}},
		{"long chain ID", "chain_id = \"" + strings.Repeat("x", 65) + "\"\n" + four, []string{"more than 64"}},
		{"unknown key", head + "chain = 3\n" + four, []string{"unknown key", "chain"}},
		{"unknown replica key", head + rep("a", id(0)) + "port = 3\n", []string{"unknown key", "replica.port"}},
		{"syntax", head + "[[replica]\n", []string{"line 3"}},
		{"two errors", head + rep("a", id(0)) + rep("b", "bad") + rep("c", id(0)), []string{"replica 1", "bad"}},
	}
	for _, c := range cases {
		_, err := ParseGenesis([]byte(c.file))
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not contain %q", c.name, err, w)
			}
		}
	}
	if _, err := ParseGenesis([]byte(head + "f = 1\n" + four)); err != nil {
		t.Errorf("stated f = 1 for n = 4: %v", err)
	}
	// All bad entries are reported at once.
	_, err := NewGenesis("c", []Replica{{PeerID: keys[0].PeerID()}, {PeerID: hashedID}, {PeerID: keys[0].PeerID()}})
	if err == nil || !strings.Contains(err.Error(), "replica 1") || !strings.Contains(err.Error(), "replica 2") {
		t.Errorf("errors for several entries: %v", err)
	}
}

func TestLoadGenesisMissingFile(t *testing.T) {
	if _, err := LoadGenesis(filepath.Join(t.TempDir(), "nope.toml")); err == nil {
		t.Fatal("missing file: no error")
	}
}
