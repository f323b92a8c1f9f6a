package node

import (
	"errors"
	"fmt"

	"github.com/p2pbft/p2pbft/node/store"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// CertCheck checks a block's commit certificate the way the engine does (a quorum of validly signed COMMITs
// from distinct replicas of this chain, all for the block's view, height and batch digest). It is a
// store.CertCheck: pass it to store.Block.Verify or Store.VerifyChain. Signatures are verified on the
// node's verifier pool (and remembered, so the engine does not verify them again). Safe for concurrent use.
func (n *Node) CertCheck(b *store.Block, cert []*wire.Envelope) error {
	q := pbft.Quorum(n.n)
	if len(cert) < q || len(cert) > n.n {
		return fmt.Errorf("commit certificate of %d messages, want %d to %d", len(cert), q, n.n)
	}
	seen := make([]bool, n.n)
	for i, e := range cert {
		if e == nil || e.Kind != wire.KindCommit || e.ChainID != n.chainID {
			return fmt.Errorf("certificate envelope %d is not a COMMIT of chain %s", i, n.chainID)
		}
		j, ok := n.genesis.IndexOfKey(e.Author)
		if !ok {
			return fmt.Errorf("certificate envelope %d is not authored by a replica", i)
		}
		if seen[j] {
			return fmt.Errorf("certificate counts replica %d twice", j)
		}
		seen[j] = true
		c, err := pbft.DecodeCommit(e.Payload)
		if err != nil {
			return fmt.Errorf("certificate envelope %d: %w", i, err)
		}
		if c.Seq != b.Height || c.Digest != b.BatchDigest || c.View != b.View {
			return fmt.Errorf("certificate envelope %d commits (view %d, seq %d, %s), the block is (view %d, height %d, %s)",
				i, c.View, c.Seq, c.Digest, b.View, b.Height, b.BatchDigest)
		}
	}
	if err := n.pool.VerifyBatch(cert); err != nil {
		if errors.Is(err, errVerifierClosed) {
			return ErrStopped
		}
		return fmt.Errorf("certificate signatures: %w", err)
	}
	return nil
}

// checkedBlock is a block received from a peer that passed verifyBlock, with its decoded parts.
type checkedBlock struct {
	block *store.Block
	reqs  []*wire.Envelope
	cert  []*wire.Envelope
}

// verifyBlock decodes a block a peer sent and checks it on its own: the height, that the batch digest is the
// digest of the batch, and the certificate (CertCheck). Its link to the block below and its application
// digest are not covered by the certificate; the caller checks what it can.
func (n *Node) verifyBlock(data []byte, height uint64) (*checkedBlock, error) {
	b, err := store.DecodeBlock(data)
	if err != nil {
		return nil, err
	}
	if b.Height != height {
		return nil, fmt.Errorf("block at height %d, want %d", b.Height, height)
	}
	reqs, err := store.DecodeBatch(b.Batch)
	if err != nil {
		return nil, fmt.Errorf("block %d: %w", height, err)
	}
	ids := make([]wire.Digest, len(reqs))
	for i, e := range reqs {
		ids[i] = e.ID()
	}
	if d := pbft.BatchDigest(ids); d != b.BatchDigest {
		return nil, fmt.Errorf("block %d: batch digest %s, the batch hashes to %s", height, b.BatchDigest, d)
	}
	cert, err := store.DecodeCert(b.Cert)
	if err != nil {
		return nil, fmt.Errorf("block %d: %w", height, err)
	}
	if err := n.CertCheck(b, cert); err != nil {
		return nil, fmt.Errorf("block %d: %w", height, err)
	}
	return &checkedBlock{block: b, reqs: reqs, cert: cert}, nil
}
