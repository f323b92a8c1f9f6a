package p2p

import (
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
)

// PeerEvent reports that a peer connected (Up) or lost its last connection.
type PeerEvent struct {
	Peer peer.ID
	// Replica is the peer's replica index, or -1 if it is not a replica.
	Replica int
	Up      bool
	Time    time.Time
}

const eventBuffer = 256

// watchConnectedness turns libp2p connectedness changes into PeerEvents, tells the discovery loop, and
// logs replicas coming and going.
func (h *Host) watchConnectedness() error {
	sub, err := h.lh.EventBus().Subscribe([]any{
		new(event.EvtPeerConnectednessChanged),
		new(event.EvtPeerIdentificationCompleted),
	}, eventbus.BufSize(eventBuffer))
	if err != nil {
		return err
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer sub.Close()
		for {
			select {
			case <-h.ctx.Done():
				return
			case ev, ok := <-sub.Out():
				if !ok {
					return
				}
				switch e := ev.(type) {
				case event.EvtPeerConnectednessChanged:
					switch e.Connectedness {
					case network.Connected:
						h.peerChanged(e.Peer, true)
					case network.NotConnected:
						h.peerChanged(e.Peer, false)
					}
				case event.EvtPeerIdentificationCompleted:
					// libp2p's identify checks the record and keeps only its addresses; we keep the signed
					// record of replicas so that peer exchange can pass it on.
					if e.SignedPeerRecord != nil && h.replicaIndex(e.Peer) >= 0 {
						h.disc.storeRecord(e.SignedPeerRecord)
					}
				}
			}
		}
	}()
	return nil
}

func (h *Host) peerChanged(p peer.ID, up bool) {
	idx := h.replicaIndex(p)
	if idx >= 0 {
		if up {
			h.log.Info("replica connected", "peer_replica", idx, "peer", p)
		} else {
			h.log.Info("replica disconnected", "peer_replica", idx, "peer", p)
		}
	} else {
		h.log.Debug("peer connectedness changed", "peer", p, "up", up)
	}
	h.disc.peerChanged(p, up)
	ev := PeerEvent{Peer: p, Replica: idx, Up: up, Time: time.Now()}
	select {
	case h.events <- ev:
	default:
		h.metrics.drop(DropEvents)
	}
}
