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
