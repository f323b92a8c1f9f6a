package testnet

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/node/app/kv"
	"github.com/p2pbft/p2pbft/node/config"
	"github.com/p2pbft/p2pbft/p2p"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// byzantine stands in for a replica: it holds the replica's key and address, so the others treat it as a
// member, and it sends garbage: random frames, envelopes with bad signatures, validly signed envelopes
// whose payloads do not decode, and well-formed PREPAREs, COMMITs, CHECKPOINTs and VIEW-CHANGEs for
// digests nobody proposed. It answers every client request at once with a validly signed reply carrying a
// wrong result.
type byzantine struct {
	host    *p2p.Host
	key     *identity.Key
	chain   string
	self    int
	replies atomic.Int64
	sent    atomic.Int64
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

func startByzantine(t *testing.T, net *Network, i int, seed uint64) *byzantine {
	t.Helper()
	home := net.Home(i)
	key, err := identity.LoadKey(filepath.Join(home, config.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(home)
	if err != nil {
		t.Fatal(err)
	}
	var boot []string
	for j, a := range net.Bootstrap() {
		if j != i {
			boot = append(boot, a)
		}
	}
	h, err := p2p.New(p2p.Config{Key: key, Genesis: net.Genesis(), ListenAddrs: cfg.P2P.Listen, Bootstrap: boot, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &byzantine{host: h, key: key, chain: net.Genesis().ChainID(), self: i, cancel: cancel}
	h.SetRequestHandler(b.wrongReply)
	b.wg.Add(2)
	go func() {
		defer b.wg.Done()
		for {
			select {
			case <-h.Deliveries():
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		defer b.wg.Done()
		b.spam(ctx, rand.New(rand.NewPCG(seed, 1)), net)
	}()
	t.Cleanup(func() {
		cancel()
		b.wg.Wait()
		h.Close()
	})
	return b
}

func (b *byzantine) wrongReply(_ context.Context, d p2p.Delivery) (*wire.Envelope, error) {
	e := d.Envelope
	if e.Kind != wire.KindRequest {
		return nil, fmt.Errorf("no")
	}
	req, err := pbft.DecodeRequest(e.Payload)
	if err != nil {
		return nil, err
	}
	b.replies.Add(1)
	result, _ := kv.EncodeResult(kv.Result{Status: kv.StatusInvalid, Error: "a Byzantine replica's answer"})
	hdr, _ := wire.Marshal(&pbft.ReplyHeader{View: 0, Seq: 1, Replica: uint32(b.self), Count: 1, Root: pbft.ReplyLeafHash(e.Author, req.Timestamp, result)})
	env, err := wire.Seal(b.key, b.chain, wire.KindReply, hdr)
	if err != nil {
		return nil, err
	}
	env.Body, _ = wire.Marshal(&pbft.ReplyProof{Client: e.Author, Timestamp: req.Timestamp, Result: result})
	return env, nil
}

// spam sends a garbage message every few milliseconds until ctx ends.
func (b *byzantine) spam(ctx context.Context, rng *rand.Rand, net *Network) {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	kinds := []wire.Kind{wire.KindPrePrepare, wire.KindPrepare, wire.KindCommit, wire.KindCheckpoint, wire.KindViewChange, wire.KindNewView, wire.KindFetch, wire.KindFetchReply, wire.KindStateRequest}
	msgProto := protocol.ID("/p2pbft/" + b.chain + "/msg/1.0.0")
	randBytes := func(n int) []byte {
		out := make([]byte, n)
		for i := range out {
			out[i] = byte(rng.Uint32())
		}
		return out
	}
	var digest wire.Digest
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var env *wire.Envelope
		switch n % 6 {
		case 0: // validly signed, payload that does not decode
			env, _ = wire.Seal(b.key, b.chain, kinds[rng.IntN(len(kinds))], randBytes(1+rng.IntN(200)))
		case 1, 2: // well-formed votes for digests nobody proposed
			copy(digest[:], randBytes(32))
			seq, view := uint64(1+rng.IntN(3000)), uint64(rng.IntN(4))
			var p []byte
			var kind wire.Kind
			switch rng.IntN(3) {
			case 0:
				p, _ = wire.Marshal(&pbft.Prepare{View: view, Seq: seq, Digest: digest})
				kind = wire.KindPrepare
			case 1:
				p, _ = wire.Marshal(&pbft.Commit{View: view, Seq: seq, Digest: digest})
				kind = wire.KindCommit
			default:
				p, _ = wire.Marshal(&pbft.Checkpoint{Seq: 32 * (1 + seq/32), Digest: digest})
				kind = wire.KindCheckpoint
			}
			env, _ = wire.Seal(b.key, b.chain, kind, p)
		case 3: // a view change to a far view with no proof
			p, _ := wire.Marshal(&pbft.ViewChange{View: uint64(2 + rng.IntN(100)), StableSeq: uint64(rng.IntN(5000)), StableDigest: digest})
			env, _ = wire.Seal(b.key, b.chain, wire.KindViewChange, p)
		case 4: // a bad signature
			env, _ = wire.Seal(b.key, b.chain, wire.KindCommit, randBytes(40))
			env.Sig = randBytes(64)
		case 5: // random bytes on a direct stream
			to := rng.IntN(net.N())
			if to == b.self {
				continue
			}
			sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			s, err := b.host.LibP2P().NewStream(sctx, net.Genesis().PeerID(to), msgProto)
			cancel()
			if err == nil {
				frame := randBytes(4 + rng.IntN(300))
				if rng.IntN(2) == 0 {
					binary.BigEndian.PutUint32(frame, uint32(len(frame)-4))
				}
				s.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
				s.Write(frame)
				s.Reset()
				b.sent.Add(1)
			}
			continue
		}
		if env == nil {
			continue
		}
		if rng.IntN(2) == 0 {
			b.host.Multicast(ctx, env)
		} else {
			b.host.BroadcastDirect(env)
		}
		b.sent.Add(1)
	}
}
