package p2p

import (
	"bytes"
	"errors"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"

	"github.com/p2pbft/p2pbft/wire"
)

// Fuzz targets for every decoder in the package. Seeds are in the f.Add calls and in testdata/fuzz/.
// Run one with, e.g.:
//
//	go test -run - -fuzz FuzzValidatorCheck -fuzztime 60s ./p2p/

func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{0, 0, 0, 3, 'a', 'b', 'c'})
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1})
	f.Add([]byte{0, 0, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		const limit = 1024
		body, err := readFrame(bytes.NewReader(data), limit)
		if err != nil {
			return
		}
		if len(body) == 0 || len(body) > limit {
			t.Fatalf("frame of %d bytes accepted with limit %d", len(body), limit)
		}
		var buf bytes.Buffer
		if err := writeFrame(&buf, body); err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(data, buf.Bytes()) {
			t.Fatal("re-encoded frame differs from the input")
		}
	})
}

func FuzzDecodeResponse(f *testing.F) {
	k := testKeys(f, "fuzz", 1)[0]
	e, _ := wire.Seal(k, "fuzz-chain", wire.KindFetchReply, []byte("response"))
	ok, _ := encodeResponse(e, nil)
	bad, _ := encodeResponse(nil, errors.New("no such block"))
	f.Add(ok)
	f.Add(bad)
	f.Add([]byte{2})
	f.Add([]byte{1, 0xff, 0xfe})
	f.Fuzz(func(t *testing.T, b []byte) {
		env, err := decodeResponse(b)
		var re *RemoteError
		switch {
		case errors.As(err, &re):
			out, err := encodeResponse(nil, re)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := decodeResponse(out); err == nil {
				t.Fatal("an error response decoded as success")
			}
		case err == nil:
			out, err := encodeResponse(env, nil)
			if err != nil {
				t.Fatal(err)
			}
			env2, err := decodeResponse(out)
			if err != nil || env2.ID() != env.ID() {
				t.Fatalf("round trip: %v", err)
			}
		}
	})
}

func FuzzDecodePEX(f *testing.F) {
	k := testKeys(f, "fuzz", 1)[0]
	rec := peer.PeerRecordFromAddrInfo(peer.AddrInfo{ID: k.PeerID()})
	env, err := record.Seal(rec, k.LibP2P())
	if err != nil {
		f.Fatal(err)
	}
	raw, _ := env.Marshal()
	msg, _ := wire.Marshal([][]byte{raw})
	f.Add(msg)
	f.Add([]byte{0x80})
	f.Add([]byte{0xf6})
	f.Add(raw)
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := decodePEX(b)
		if err == nil && len(recs) > maxPEXRecords {
			t.Fatalf("%d records accepted", len(recs))
		}
		for _, r := range append(recs, b) {
			env, pr, err := parseRecord(r)
			if err != nil {
				continue
			}
			if !pr.PeerID.MatchesPublicKey(env.PublicKey) {
				t.Fatal("accepted a record signed by another key")
			}
		}
	})
}

// fuzzHost is a Host with just what the validator needs (no libp2p).
func fuzzHost(t testing.TB) (*Host, []wire.Signer) {
	keys := testKeys(t, "fuzz", 4)
	g := testGenesis(t, "fuzz-chain", keys)
	v, err := g.NewVerifier()
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Key: keys[0], Genesis: g, MaxMessageSize: 16 << 10, MaxClientMessageSize: 4 << 10}.WithDefaults()
	h := &Host{cfg: cfg, genesis: g, chainID: g.ChainID(), verifier: v, id: keys[0].PeerID(), self: 0}
	h.metrics = newMetrics(func(peer.ID) bool { return false }, nil)
	h.val = newValidator(h)
	signers := make([]wire.Signer, len(keys))
	for i, k := range keys {
		signers[i] = k
	}
	return h, signers
}

func FuzzValidatorCheck(f *testing.F) {
	h, keys := fuzzHost(f)
	client := testKeys(f, "fuzz-client", 1)[0]
	good, _ := wire.Seal(keys[1], "fuzz-chain", wire.KindPrepare, []byte("p"))
	req, _ := wire.Seal(client, "fuzz-chain", wire.KindRequest, []byte("r"))
	other, _ := wire.Seal(keys[1], "other", wire.KindPrepare, []byte("p"))
	for _, e := range []*wire.Envelope{good, req, other} {
		b, _ := e.Marshal()
		f.Add(b, uint8(ViaGossip))
		f.Add(b, uint8(ViaDirect))
	}
	f.Add([]byte{0x87}, uint8(0))
	f.Add([]byte("random bytes"), uint8(1))
	v, _ := h.genesis.NewVerifier()
	f.Fuzz(func(t *testing.T, data []byte, via uint8) {
		path := Path(via % 3)
		e, author, r, reason := h.val.check(data, h.genesis.PeerID(1), path)
		if r != Accepted {
			if e != nil {
				t.Fatal("a rejected message came with an envelope")
			}
			if reason == ReasonNone {
				t.Fatal("a rejected message has no reason")
			}
			return
		}
		if e == nil || reason != ReasonNone || e.ChainID != "fuzz-chain" || !e.Kind.Valid() {
			t.Fatalf("accepted %+v (%s)", e, reason)
		}
		if err := v.Verify(e); err != nil {
			t.Fatalf("accepted an envelope whose signature does not verify: %v", err)
		}
		idx, member := h.genesis.IndexOfKey(e.Author)
		if (member && idx != author) || (!member && (author != -1 || e.Kind.IsReplicaKind())) {
			t.Fatalf("author %d for a key with index %d (member %v), kind %s", author, idx, member, e.Kind)
		}
		if path == ViaGossip && !member {
			t.Fatal("client envelope accepted on gossip with accept_client_requests off")
		}
	})
}
