package node

import (
	"errors"
	"fmt"

	"github.com/p2pbft/p2pbft/node/store"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// CertCheck checks a block's commit certificate with the engine's rule, pbft.CheckCommitCert (a quorum of
// COMMITs from distinct replicas of this chain, all for one view, height and batch digest), and that the
// view, height and digest are the block's; then the signatures. It is a store.CertCheck: pass it to
// store.Block.Verify or Store.VerifyChain. Signatures are verified on the node's verifier pool (and
// remembered, so the engine does not verify them again). Safe for concurrent use.
func (n *Node) CertCheck(b *store.Block, cert []*wire.Envelope) error {
	view, digest, err := pbft.CheckCommitCert(n.genesis, b.Height, cert)
	if err != nil {
		return fmt.Errorf("certificate: %w", err)
	}
	if view != b.View || digest != b.BatchDigest {
		return fmt.Errorf("certificate commits (view %d, seq %d, %s), the block is (view %d, height %d, %s)",
			view, b.Height, digest, b.View, b.Height, b.BatchDigest)
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
