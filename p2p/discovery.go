package p2p

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/record"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"

	"github.com/p2pbft/p2pbft/wire"
)

// Discovery keeps this host connected to every replica of the genesis.
//
// The replica set is small, closed and known in advance (the genesis lists every peer ID), so what a
// host must discover is only addresses. Sources, in order: the genesis file's addresses, the bootstrap
// addresses, libp2p identify (the signed peer record every peer sends on connecting), peer exchange
// (below), and mDNS on a LAN. A DHT would find the same addresses with a routing table, periodic
// refreshes and provider records we do not need; peer exchange over a connection we already have is
// one round trip.
//
// Peer exchange: on every new connection, and while some replica is missing every so often (from
// RedialMin, doubling to PeerExchangeInterval, back to RedialMin whenever an exchange brings a record: a
// client that reached a replica before that replica had heard of the others, just after a network started,
// asks again within a second or two),
// the host asks a connected peer for the signed peer records (libp2p's record envelopes, signed by the
// peer they describe) of the replicas it knows. A record is accepted only for a replica of the genesis
// and only with a valid signature by that replica's key, so a peer can withhold addresses but cannot
// redirect us to an impostor; the sequence number in the record makes the newest addresses win.
//
// Redial: a replica that is not connected is dialled with exponential backoff from RedialMin to
// RedialMax, with jitter; losing a connection resets the backoff and redials at once. Dials skip the
// swarm's own per-address backoff (we keep our own), so a replica that comes back on the same address
// is not locked out for minutes.

const (
	maxPEXRecords    = 1024
	maxPEXRecordSize = 8 << 10
	pexAddrTTL       = time.Hour
	mdnsServiceName  = "_p2pbft._udp"
)

type dialState struct {
	replica   int // -1: a bootstrap peer that is not a replica
	connected bool
	dialing   bool
	attempts  int
	next      time.Time
	everUp    bool
	lastPEX   time.Time
}

type discovery struct {
	h    *Host
	kick chan struct{}

	mu       sync.Mutex
	peers    map[peer.ID]*dialState
	lastPEX  time.Time
	pexDelay time.Duration // until the next exchange while replicas are missing
}

func newDiscovery(h *Host) *discovery {
	return &discovery{h: h, kick: make(chan struct{}, 1), peers: make(map[peer.ID]*dialState)}
}

// start seeds the address book from the genesis and the bootstrap list and runs the redial loop.
func (d *discovery) start(bootstrap []*peer.AddrInfo) {
	h := d.h
	ps := h.lh.Peerstore()
	now := time.Now()
	for i, r := range h.genesis.Replicas() {
		if i == h.self {
			continue
		}
		if len(r.Addrs) > 0 {
			ps.AddAddrs(r.PeerID, r.Addrs, peerstore.PermanentAddrTTL)
		}
		d.peers[r.PeerID] = &dialState{replica: i, next: now}
	}
	for _, ai := range bootstrap {
		if ai.ID == h.id {
			continue
		}
		ps.AddAddrs(ai.ID, ai.Addrs, peerstore.PermanentAddrTTL)
		if d.peers[ai.ID] == nil {
			d.peers[ai.ID] = &dialState{replica: -1, next: now}
		}
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		d.loop()
	}()
}

func (d *discovery) wake() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

func (d *discovery) loop() {
	h := d.h
	tick := min(max(h.cfg.RedialMin/2, 50*time.Millisecond), time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	d.step()
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-t.C:
		case <-d.kick:
		}
		d.step()
	}
}

// step starts the dials that are due and a peer exchange if replicas are missing.
func (d *discovery) step() {
	h := d.h
	now := time.Now()
	d.mu.Lock()
	var due []peer.ID
	missing, connectedReplicas := 0, 0
	for _, s := range d.peers {
		if s.replica >= 0 {
			if s.connected {
				connectedReplicas++
			} else {
				missing++
			}
		}
	}
	for p, s := range d.peers {
		if s.connected || s.dialing || now.Before(s.next) || h.gater.isBlocked(p) {
			continue
		}
		if s.replica < 0 && s.everUp && connectedReplicas > 0 {
			continue // a bootstrap peer that is not a replica has done its job
		}
		s.dialing = true
		due = append(due, p)
	}
	if d.pexDelay == 0 {
		d.pexDelay = h.cfg.RedialMin
	}
	pexDue := missing > 0 && now.Sub(d.lastPEX) >= d.pexDelay
	if pexDue {
		d.lastPEX = now
		d.pexDelay = min(2*d.pexDelay, h.cfg.PeerExchangeInterval)
	}
	d.mu.Unlock()
	for _, p := range due {
		if !h.enter() {
			return
		}
		go func() {
			defer h.wg.Done()
			d.dial(p)
		}()
	}
	if pexDue {
		if conns := h.lh.Network().Peers(); len(conns) > 0 {
			d.exchangeWith(conns[rand.IntN(len(conns))])
		}
	}
}

func (d *discovery) dial(p peer.ID) {
	h := d.h
	ctx, cancel := context.WithTimeout(h.ctx, h.cfg.DialTimeout)
	defer cancel()
	// We keep our own backoff; the swarm's per-address backoff would lock out for minutes a replica that
	// comes back on the same address. (Clearing it beats network.WithForceDirectDial, whose dial path
	// races with swarm shutdown in go-libp2p v0.51.)
	if sw, ok := h.lh.Network().(*swarm.Swarm); ok {
		sw.Backoff().Clear(p)
	}
	err := h.lh.Connect(ctx, peer.AddrInfo{ID: p})
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.peers[p]
	s.dialing = false
	if err == nil {
		s.attempts = 0
		return
	}
	s.attempts++
	backoff := h.cfg.RedialMin << min(s.attempts-1, 20)
	backoff = min(backoff, h.cfg.RedialMax)
	backoff = backoff/2 + rand.N(backoff/2+1) // jitter: [b/2, b]
	s.next = time.Now().Add(backoff)
	if h.ctx.Err() == nil {
		h.log.Debug("dial failed", "peer", p, "peer_replica", s.replica, "attempt", s.attempts, "retry_in", backoff, "err", err)
	}
}

// redialNow resets the backoff of the given peers and dials the ones not connected at once (after an
// experiment partition is lifted).
func (d *discovery) redialNow(peers []peer.ID) {
	now := time.Now()
	d.mu.Lock()
	for _, p := range peers {
		if s := d.peers[p]; s != nil {
			s.attempts = 0
			s.next = now
		}
	}
	d.mu.Unlock()
	d.wake()
}

// peerChanged updates the dial state on a connectedness event.
func (d *discovery) peerChanged(p peer.ID, up bool) {
	d.mu.Lock()
	s := d.peers[p]
	if s != nil {
		s.connected = up
		if up {
			s.everUp = true
			s.attempts = 0
		} else {
			s.attempts = 0
			s.next = time.Now() // redial at once; backoff grows if it keeps failing
		}
	}
	missing := d.missingLocked()
	d.mu.Unlock()
	if up && missing > 0 {
		d.exchangeWith(p)
	}
	if !up {
		d.wake()
	}
}

func (d *discovery) missingLocked() int {
	n := 0
	for _, s := range d.peers {
		if s.replica >= 0 && !s.connected {
			n++
		}
	}
	return n
}

// exchangeWith runs a peer exchange with p in the background, at most once a second per peer.
func (d *discovery) exchangeWith(p peer.ID) {
	h := d.h
	d.mu.Lock()
	s := d.peers[p]
	if s != nil {
		if time.Since(s.lastPEX) < time.Second {
			d.mu.Unlock()
			return
		}
		s.lastPEX = time.Now()
	}
	d.mu.Unlock()
	if !h.enter() {
		return
	}
	go func() {
		defer h.wg.Done()
		n, err := d.exchange(p)
		if err != nil {
			if h.ctx.Err() == nil {
				h.log.Debug("peer exchange failed", "peer", p, "err", err)
			}
			return
		}
		h.log.Debug("peer exchange", "peer", p, "accepted", n)
		if n > 0 {
			d.mu.Lock()
			d.pexDelay = h.cfg.RedialMin
			d.mu.Unlock()
			d.wake()
		}
	}()
}

// exchange asks p for signed peer records and stores the valid ones; it returns how many it accepted.
func (d *discovery) exchange(p peer.ID) (int, error) {
	h := d.h
	ctx, cancel := context.WithTimeout(h.ctx, h.cfg.StreamTimeout)
	defer cancel()
	s, err := h.lh.NewStream(ctx, p, h.pexProto)
	if err != nil {
		return 0, err
	}
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	_ = s.SetDeadline(time.Now().Add(h.cfg.StreamTimeout))
	if err := writeFrame(s, []byte{0x80}); err != nil { // CBOR empty array: "all replicas"
		s.Reset()
		return 0, err
	}
	_ = s.CloseWrite()
	body, err := readFrame(s, pexResponseLimit(h.genesis.N()))
	if err != nil {
		s.Reset()
		return 0, err
	}
	s.Close()
	recs, err := decodePEX(body)
	if err != nil {
		return 0, err
	}
	accepted := 0
	for _, raw := range recs {
		if d.consumeRecord(raw) {
			accepted++
		}
	}
	return accepted, nil
}

func pexResponseLimit(n int) int { return min((n+1)*(maxPEXRecordSize+16)+16, wire.MaxMessageSize) }

// decodePEX decodes a peer-exchange message: a CBOR array of byte strings.
func decodePEX(b []byte) ([][]byte, error) {
	var recs [][]byte
	if err := wire.Unmarshal(b, &recs); err != nil {
		return nil, fmt.Errorf("p2p: peer exchange: %w", err)
	}
	if len(recs) > maxPEXRecords {
		return nil, fmt.Errorf("p2p: peer exchange: %d records, more than %d", len(recs), maxPEXRecords)
	}
	return recs, nil
}

// parseRecord decodes and verifies a signed peer record: the envelope's signature, and that the key that
// signed it is the key of the peer the record describes.
func parseRecord(raw []byte) (*record.Envelope, *peer.PeerRecord, error) {
	if len(raw) > maxPEXRecordSize {
		return nil, nil, fmt.Errorf("peer record of %d bytes", len(raw))
	}
	env, rec, err := record.ConsumeEnvelope(raw, peer.PeerRecordEnvelopeDomain)
	if err != nil {
		return nil, nil, err
	}
	pr, ok := rec.(*peer.PeerRecord)
	if !ok {
		return nil, nil, errors.New("not a peer record")
	}
	if !pr.PeerID.MatchesPublicKey(env.PublicKey) {
		return nil, nil, errors.New("peer record signed by another key")
	}
	return env, pr, nil
}

// consumeRecord verifies a signed peer record and, if it describes a replica, stores its addresses.
func (d *discovery) consumeRecord(raw []byte) bool {
	env, _, err := parseRecord(raw)
	if err != nil {
		return false
	}
	return d.storeRecord(env)
}

// storeRecord stores a verified signed record of a replica (not ours) and schedules a dial.
func (d *discovery) storeRecord(env *record.Envelope) bool {
	h := d.h
	r, err := env.Record()
	if err != nil {
		return false
	}
	pr, ok := r.(*peer.PeerRecord)
	if !ok || !pr.PeerID.MatchesPublicKey(env.PublicKey) || pr.PeerID == h.id || h.replicaIndex(pr.PeerID) < 0 {
		return false
	}
	cab, ok := peerstore.GetCertifiedAddrBook(h.lh.Peerstore())
	if !ok {
		h.lh.Peerstore().AddAddrs(pr.PeerID, pr.Addrs, pexAddrTTL)
	} else if added, err := cab.ConsumePeerRecord(env, pexAddrTTL); err != nil || !added {
		return false
	}
	d.mu.Lock()
	if s := d.peers[pr.PeerID]; s != nil && !s.connected && !s.dialing {
		s.next = time.Now()
	}
	d.mu.Unlock()
	return true
}

// handlePEX answers a peer exchange: the signed records of this host and of the replicas it knows.
func (h *Host) handlePEX(s network.Stream) {
	remote := s.Conn().RemotePeer()
	if !h.enter() {
		s.Reset()
		return
	}
	defer h.wg.Done()
	release := h.admit(remote)
	if release == nil {
		h.metrics.drop(DropStreamLimit)
		s.Reset()
		return
	}
	defer release()
	stop := context.AfterFunc(h.ctx, func() { s.Reset() })
	defer stop()
	_ = s.SetDeadline(time.Now().Add(h.cfg.StreamTimeout))
	body, err := readFrame(s, 64<<10)
	if err != nil {
		s.Reset()
		return
	}
	if _, err := decodePEX(body); err != nil {
		s.Reset()
		return
	}
	cab, ok := peerstore.GetCertifiedAddrBook(h.lh.Peerstore())
	var recs [][]byte
	if ok {
		ids := append([]peer.ID{h.id}, h.genesisPeers()...)
		for _, id := range ids {
			env := cab.GetPeerRecord(id)
			if env == nil {
				continue
			}
			b, err := env.Marshal()
			if err != nil || len(b) > maxPEXRecordSize {
				continue
			}
			recs = append(recs, b)
		}
	}
	out, err := wire.Marshal(recs)
	if err != nil {
		s.Reset()
		return
	}
	if err := writeFrame(s, out); err != nil && !errors.Is(err, errEmptyFrame) {
		s.Reset()
		return
	}
	s.Close()
}

func (h *Host) genesisPeers() []peer.ID {
	out := make([]peer.ID, 0, h.genesis.N())
	for i := 0; i < h.genesis.N(); i++ {
		if i != h.self {
			out = append(out, h.genesis.PeerID(i))
		}
	}
	return out
}

// mdnsNotifee feeds replicas found on the LAN into discovery.
type mdnsNotifee struct{ h *Host }

func (n mdnsNotifee) HandlePeerFound(ai peer.AddrInfo) {
	h := n.h
	if ai.ID == h.id || h.replicaIndex(ai.ID) < 0 || h.ctx.Err() != nil {
		return
	}
	h.lh.Peerstore().AddAddrs(ai.ID, ai.Addrs, 10*time.Minute)
	h.log.Debug("mDNS found replica", "peer", ai.ID, "addrs", ai.Addrs)
	h.disc.mu.Lock()
	if s := h.disc.peers[ai.ID]; s != nil && !s.connected && !s.dialing {
		s.next = time.Now()
	}
	h.disc.mu.Unlock()
	h.disc.wake()
}

func (h *Host) startMDNS() error {
	svc := mdns.NewMdnsService(h.lh, mdnsServiceName, mdnsNotifee{h})
	if err := svc.Start(); err != nil {
		return fmt.Errorf("p2p: mDNS: %w", err)
	}
	h.mdns = svc
	return nil
}
