package identity

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/p2pbft/p2pbft/wire"
)

// maxGenesisFileSize bounds what LoadGenesis reads; a genesis of 1000 replicas with a few addresses each is
// far below it.
const maxGenesisFileSize = 4 << 20

// maxReplicas bounds the replica set. PBFT's all-to-all phases cost O(n^2) messages; far beyond a few
// hundred replicas the protocol is the wrong tool.
const maxReplicas = 1024

// Genesis is the replica set of one chain: its chain ID and the replicas in a fixed order. A replica's
// index (its position) is its identity in the protocol; its peer ID embeds its ed25519 public key, the key
// that signs its envelopes. f, the number of faults tolerated, is derived: f = (n-1)/3, so n >= 3f+1.
//
// Construct a Genesis with NewGenesis or LoadGenesis, which validate it; the lookup methods answer from the
// index that validation builds. A Genesis is not modified afterwards and is safe for concurrent reads.
type Genesis struct {
	chainID  string
	replicas []Replica
	f        int
	pubs     [][]byte
	byKey    map[string]int
	byPeer   map[peer.ID]int
	digest   wire.Digest
}

// Replica is one member of the replica set.
type Replica struct {
	// Name is an optional label for logs and status pages.
	Name string
	// PeerID is the replica's libp2p peer ID; it must be an ed25519 peer ID (12D3KooW...).
	PeerID peer.ID
	// Addrs are optional known addresses (without the /p2p/ part), dialled in addition to what discovery
	// finds. /dns4, /dns6 and /dns addresses are resolved when dialled.
	Addrs []multiaddr.Multiaddr
}

// PublicKey returns the raw 32-byte ed25519 public key embedded in the replica's peer ID.
func (r Replica) PublicKey() ([]byte, error) { return PublicKeyFromPeerID(r.PeerID) }

// label names a replica in error messages: its index, its name if any and its peer ID.
func label(i int, name string, id string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "replica %d", i)
	if name != "" {
		fmt.Fprintf(&b, " (%q)", name)
	}
	if id != "" {
		fmt.Fprintf(&b, " peer %s", id)
	}
	return b.String()
}

// NewGenesis validates a replica set and returns it. Errors name every bad entry.
func NewGenesis(chainID string, replicas []Replica) (*Genesis, error) {
	g := &Genesis{chainID: chainID, replicas: make([]Replica, len(replicas))}
	for i, r := range replicas {
		r.Addrs = append([]multiaddr.Multiaddr(nil), r.Addrs...)
		g.replicas[i] = r
	}
	if err := g.build(); err != nil {
		return nil, err
	}
	return g, nil
}

// ValidateChainID checks that id can name a chain: 1 to 64 characters from [A-Za-z0-9._-], because it
// appears in libp2p protocol IDs and topic names.
func ValidateChainID(id string) error {
	if id == "" {
		return errors.New("chain ID is empty")
	}
	if len(id) > wire.MaxChainIDLen {
		return fmt.Errorf("chain ID %q is %d bytes, more than %d", id, len(id), wire.MaxChainIDLen)
	}
	for _, c := range id {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			return fmt.Errorf("chain ID %q has character %q; use only letters, digits, '.', '_' and '-'", id, c)
		}
	}
	return nil
}

func (g *Genesis) build() error {
	var errs []error
	if err := ValidateChainID(g.chainID); err != nil {
		errs = append(errs, err)
	}
	n := len(g.replicas)
	switch {
	case n == 0:
		errs = append(errs, errors.New("no replicas: a genesis needs at least one (four to tolerate a fault)"))
	case n > maxReplicas:
		errs = append(errs, fmt.Errorf("%d replicas, more than the supported %d", n, maxReplicas))
	}
	g.byKey = make(map[string]int, n)
	g.byPeer = make(map[peer.ID]int, n)
	g.pubs = make([][]byte, n)
	names := make(map[string]int, n)
	for i, r := range g.replicas {
		lbl := label(i, r.Name, "")
		if r.PeerID == "" {
			errs = append(errs, fmt.Errorf("%s: peer_id is missing", lbl))
			continue
		}
		lbl = label(i, r.Name, r.PeerID.String())
		pub, err := PublicKeyFromPeerID(r.PeerID)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", lbl, err))
			continue
		}
		if _, err := expandKey(pub); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", lbl, err))
			continue
		}
		if j, dup := g.byPeer[r.PeerID]; dup {
			errs = append(errs, fmt.Errorf("%s: same peer ID as replica %d", lbl, j))
			continue
		}
		if r.Name != "" {
			if err := validateName(r.Name); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", lbl, err))
			} else if j, dup := names[r.Name]; dup {
				errs = append(errs, fmt.Errorf("%s: same name as replica %d", lbl, j))
			}
			names[r.Name] = i
		}
		for k, a := range r.Addrs {
			clean, err := cleanAddr(a, r.PeerID)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: address %d: %w", lbl, k, err))
				continue
			}
			g.replicas[i].Addrs[k] = clean
		}
		g.byPeer[r.PeerID] = i
		g.byKey[string(pub)] = i
		g.pubs[i] = pub
	}
	if len(errs) > 0 {
		return fmt.Errorf("identity: invalid genesis: %w", errors.Join(errs...))
	}
	g.f = (n - 1) / 3
	g.digest = g.computeDigest()
	return nil
}

func validateName(name string) error {
	if len(name) > 64 {
		return fmt.Errorf("name is %d bytes, more than 64", len(name))
	}
	for _, c := range name {
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("name has control character %q", c)
		}
	}
	return nil
}

// cleanAddr checks a replica address and strips a trailing /p2p/<id>, which must name the replica.
func cleanAddr(a multiaddr.Multiaddr, id peer.ID) (multiaddr.Multiaddr, error) {
	if len(a) == 0 {
		return nil, errors.New("empty multiaddr")
	}
	transport, pid := peer.SplitAddr(a)
	if pid != "" && pid != id {
		return nil, fmt.Errorf("%s names peer %s, not this replica", a, pid)
	}
	if len(transport) == 0 {
		return nil, fmt.Errorf("%s has no transport part (want e.g. /ip4/10.0.0.1/tcp/7000)", a)
	}
	if _, err := transport.ValueForProtocol(multiaddr.P_P2P); err == nil {
		return nil, fmt.Errorf("%s has a /p2p/ part in the middle (relay addresses are not supported)", a)
	}
	return transport, nil
}

const genesisDigestTag = "p2pbft/genesis/v1\x00"

// computeDigest hashes what defines the replica set: chain ID and the public keys in order (not names or
// addresses, which are operational and may change).
func (g *Genesis) computeDigest() wire.Digest {
	h := sha256.New()
	h.Write([]byte(genesisDigestTag))
	var b [4]byte
	binary.BigEndian.PutUint16(b[:2], uint16(len(g.chainID)))
	h.Write(b[:2])
	h.Write([]byte(g.chainID))
	binary.BigEndian.PutUint32(b[:], uint32(len(g.pubs)))
	h.Write(b[:])
	for _, p := range g.pubs {
		h.Write(p)
	}
	var d wire.Digest
	h.Sum(d[:0])
	return d
}

// ChainID returns the chain ID.
func (g *Genesis) ChainID() string { return g.chainID }

// N returns the number of replicas.
func (g *Genesis) N() int { return len(g.replicas) }

// F returns the number of faulty replicas tolerated, (N-1)/3.
func (g *Genesis) F() int { return g.f }

// Digest identifies the replica set (chain ID and public keys in order); certificates can commit to it.
func (g *Genesis) Digest() wire.Digest { return g.digest }

// Replicas returns a copy of the replica list in replica order.
func (g *Genesis) Replicas() []Replica {
	out := make([]Replica, len(g.replicas))
	for i, r := range g.replicas {
		r.Addrs = append([]multiaddr.Multiaddr(nil), r.Addrs...)
		out[i] = r
	}
	return out
}

// Replica returns replica i. It panics if i is out of range, like a slice index.
func (g *Genesis) Replica(i int) Replica {
	r := g.replicas[i]
	r.Addrs = append([]multiaddr.Multiaddr(nil), r.Addrs...)
	return r
}

// PeerID returns the peer ID of replica i. It panics if i is out of range, like a slice index.
func (g *Genesis) PeerID(i int) peer.ID { return g.replicas[i].PeerID }

// PublicKeys returns the raw 32-byte public keys in replica order, as the pbft configuration takes them.
// The slices are copies.
func (g *Genesis) PublicKeys() [][]byte {
	out := make([][]byte, len(g.pubs))
	for i, p := range g.pubs {
		out[i] = bytes.Clone(p)
	}
	return out
}

// PublicKey returns the raw public key of replica i (not a copy: do not modify it).
func (g *Genesis) PublicKey(i int) []byte { return g.pubs[i] }

// IndexOfKey returns the replica index whose public key is pub.
func (g *Genesis) IndexOfKey(pub []byte) (int, bool) {
	i, ok := g.byKey[string(pub)]
	return i, ok
}

// IndexOfPeer returns the replica index of a peer ID.
func (g *Genesis) IndexOfPeer(id peer.ID) (int, bool) {
	i, ok := g.byPeer[id]
	return i, ok
}

// AddrInfos returns each replica's peer ID and known addresses, in replica order.
func (g *Genesis) AddrInfos() []peer.AddrInfo {
	out := make([]peer.AddrInfo, len(g.replicas))
	for i, r := range g.replicas {
		out[i] = peer.AddrInfo{ID: r.PeerID, Addrs: append([]multiaddr.Multiaddr(nil), r.Addrs...)}
	}
	return out
}

// NewVerifier returns a Verifier with the replicas' keys pinned.
func (g *Genesis) NewVerifier() (*Verifier, error) { return NewVerifier(g.pubs, 0) }

// The TOML file format:
//
//	chain_id = "p2pbft-local"
//	f = 1            # optional; if present it must equal (n-1)/3
//
//	[[replica]]
//	name = "replica-0"   # optional
//	peer_id = "12D3KooW..."
//	addrs = ["/ip4/10.0.0.1/tcp/7000", "/dns4/replica-0.example/udp/7000/quic-v1"]  # optional
type genesisFile struct {
	ChainID  string        `toml:"chain_id"`
	F        *int          `toml:"f,omitempty"`
	Replicas []replicaFile `toml:"replica"`
}

type replicaFile struct {
	Name   string   `toml:"name,omitempty"`
	PeerID string   `toml:"peer_id"`
	Addrs  []string `toml:"addrs,omitempty"`
}

// ParseGenesis decodes and validates a genesis file's contents. Unknown keys are errors (a typo must not
// silently drop a setting), and every error names the entry it is about.
func ParseGenesis(data []byte) (*Genesis, error) {
	if len(data) > maxGenesisFileSize {
		return nil, fmt.Errorf("identity: genesis is %d bytes, more than %d", len(data), maxGenesisFileSize)
	}
	var f genesisFile
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&f)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return nil, fmt.Errorf("identity: genesis: %s", perr.ErrorWithPosition())
		}
		return nil, fmt.Errorf("identity: genesis: %w", err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("identity: genesis: unknown key(s) %s", strings.Join(keys, ", "))
	}
	var errs []error
	replicas := make([]Replica, len(f.Replicas))
	for i, rf := range f.Replicas {
		lbl := label(i, rf.Name, rf.PeerID)
		r := Replica{Name: rf.Name}
		if rf.PeerID != "" {
			id, err := peer.Decode(rf.PeerID)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: invalid peer ID: %w", lbl, err))
				continue
			}
			r.PeerID = id
		}
		for k, s := range rf.Addrs {
			a, err := multiaddr.NewMultiaddr(s)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: address %d %q: %w", lbl, k, s, err))
				continue
			}
			r.Addrs = append(r.Addrs, a)
		}
		replicas[i] = r
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("identity: invalid genesis: %w", errors.Join(errs...))
	}
	g, err := NewGenesis(f.ChainID, replicas)
	if err != nil {
		return nil, err
	}
	if f.F != nil && *f.F != g.f {
		return nil, fmt.Errorf("identity: invalid genesis: f = %d, but %d replicas tolerate f = (n-1)/3 = %d", *f.F, g.N(), g.f)
	}
	return g, nil
}

// LoadGenesis reads and validates a genesis file.
func LoadGenesis(path string) (*Genesis, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("identity: open genesis: %w", err)
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, maxGenesisFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("identity: read genesis %s: %w", path, err)
	}
	g, err := ParseGenesis(data)
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return g, nil
}

// Marshal encodes the genesis in the TOML file format.
func (g *Genesis) Marshal() ([]byte, error) {
	f := genesisFile{ChainID: g.chainID, F: &g.f}
	for _, r := range g.replicas {
		rf := replicaFile{Name: r.Name, PeerID: r.PeerID.String()}
		for _, a := range r.Addrs {
			rf.Addrs = append(rf.Addrs, a.String())
		}
		f.Replicas = append(f.Replicas, rf)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# p2pbft genesis: the replica set of chain %q (n = %d, f = %d).\n", g.chainID, g.N(), g.f)
	b.WriteString("# Replica order is significant: a replica's index is its position in this list.\n\n")
	if err := toml.NewEncoder(&b).Encode(f); err != nil {
		return nil, fmt.Errorf("identity: encode genesis: %w", err)
	}
	return b.Bytes(), nil
}

// Save writes the genesis file atomically (a temporary file renamed over path), mode 0644.
func (g *Genesis) Save(path string) error {
	data, err := g.Marshal()
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("identity: create genesis directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".genesis-*.tmp")
	if err != nil {
		return fmt.Errorf("identity: create genesis file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("identity: write genesis: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("identity: chmod genesis: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("identity: sync genesis: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("identity: close genesis: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("identity: publish genesis: %w", err)
	}
	return syncDir(dir)
}

// Validate re-checks the genesis. A Genesis from NewGenesis, ParseGenesis or LoadGenesis is always valid;
// Validate reports an error for a zero value that did not come from them.
func (g *Genesis) Validate() error {
	if g == nil || g.byKey == nil {
		return errors.New("identity: genesis was not built by NewGenesis, ParseGenesis or LoadGenesis")
	}
	c := &Genesis{chainID: g.chainID, replicas: g.Replicas()}
	return c.build()
}
