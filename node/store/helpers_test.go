package store

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
	"github.com/p2pbft/p2pbft/wire/wiretest"
)

const testChain = "store-test"

var (
	testClient   = wiretest.NewKey("client-0")
	testReplicas = []*wiretest.Key{wiretest.NewKey("replica-0"), wiretest.NewKey("replica-1"), wiretest.NewKey("replica-2"), wiretest.NewKey("replica-3")}
	testRegistry = wiretest.NewRegistry(append([]*wiretest.Key{testClient}, testReplicas...)...)
)

// testRequests returns n request envelopes whose payloads are opSize bytes (the encoded envelope is about
// opSize+110 bytes), deterministic in seed.
func testRequests(tb testing.TB, seed uint64, n, opSize int) [][]byte {
	tb.Helper()
	out := make([][]byte, n)
	for i := range out {
		p := make([]byte, opSize)
		binary.BigEndian.PutUint64(p, seed)
		if opSize >= 16 {
			binary.BigEndian.PutUint64(p[8:], uint64(i))
		}
		e, err := wire.Seal(testClient, testChain, wire.KindRequest, p)
		if err != nil {
			tb.Fatal(err)
		}
		out[i], err = e.Marshal()
		if err != nil {
			tb.Fatal(err)
		}
	}
	return out
}

// testCommitPayload is what the fake certificate signs: the block's view, height and batch digest.
func testCommitPayload(view, height uint64, d wire.Digest) []byte {
	p := binary.BigEndian.AppendUint64(nil, view)
	p = binary.BigEndian.AppendUint64(p, height)
	return append(p, d[:]...)
}

// testBlock builds a block at prev.Height+1 with the given requests, a 3-signature fake certificate, and the
// given app digest.
func testBlock(tb testing.TB, prev Ref, view uint64, batch [][]byte, appDigest wire.Digest) *Block {
	tb.Helper()
	envs, err := DecodeBatch(batch)
	if err != nil {
		tb.Fatal(err)
	}
	ids := make([]wire.Digest, len(envs))
	for i, e := range envs {
		ids[i] = e.ID()
	}
	b := &Block{Height: prev.Height + 1, Prev: prev.Hash, View: view, BatchDigest: pbft.BatchDigest(ids), AppDigest: appDigest, Batch: batch}
	for _, k := range testReplicas[:3] {
		e, err := wire.Seal(k, testChain, wire.KindCommit, testCommitPayload(view, b.Height, b.BatchDigest))
		if err != nil {
			tb.Fatal(err)
		}
		raw, err := e.Marshal()
		if err != nil {
			tb.Fatal(err)
		}
		b.Cert = append(b.Cert, raw)
	}
	return b
}

// testCertCheck accepts a certificate of at least 3 distinct, validly signed replicas' COMMITs for the
// block's view, height and batch digest: a stand-in for the engine's rules.
func testCertCheck(b *Block, cert []*wire.Envelope) error {
	want := testCommitPayload(b.View, b.Height, b.BatchDigest)
	seen := map[string]bool{}
	for _, e := range cert {
		if err := testRegistry.Verify(e); err != nil {
			return err
		}
		if string(e.Payload) != string(want) {
			return fmt.Errorf("commit from %x is for another block", e.Author[:4])
		}
		if string(e.Author) == string(testClient.PublicKey()) {
			return fmt.Errorf("commit from a non-replica")
		}
		seen[string(e.Author)] = true
	}
	if len(seen) < 3 {
		return fmt.Errorf("%d distinct signers, want 3", len(seen))
	}
	return nil
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }
