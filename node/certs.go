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
