package pbft

import (
	"errors"
	"fmt"

	"github.com/p2pbft/p2pbft/wire"
)

// Certificates. The rules that say whether a bundle of envelopes from other replicas certifies something (a
// commit certificate, a checkpoint proof) live here, as pure functions of the replica set, so that the
// engine and the node (which checks the certificates of the blocks it copies from peers) apply one rule.
// They check structure only (kinds, chain, authors, distinctness, quorum size, agreement), never
// signatures: the caller verifies every envelope of an accepted certificate itself, the engine through its
// verified cache, the node on its verifier pool in one batch. A certificate is valid only if both pass.

// ReplicaSet is a chain's replica set as the certificate checks see it: the chain, the number of replicas
// and the index of a replica's public key (0 to N()-1). *identity.Genesis implements it.
type ReplicaSet interface {
	ChainID() string
	N() int
	IndexOfKey(pub []byte) (int, bool)
}

// replicaKeys is the engine's ReplicaSet, built from Config.Replicas.
type replicaKeys struct {
	chainID string
	keys    map[string]int
}

func (k *replicaKeys) ChainID() string { return k.chainID }

func (k *replicaKeys) N() int { return len(k.keys) }

func (k *replicaKeys) IndexOfKey(pub []byte) (int, bool) {
	i, ok := k.keys[string(pub)]
	return i, ok
}

// CheckMember checks that e is an envelope of the given kind, of set's chain, authored by one of set's
// replicas, and returns that replica's index. It does not verify the signature.
func CheckMember(set ReplicaSet, e *wire.Envelope, kind wire.Kind) (int, error) {
	if e == nil {
		return 0, errors.New("embedded envelope missing")
	}
	if e.ChainID != set.ChainID() {
		return 0, errors.New("embedded envelope of another chain")
	}
	if e.Kind != kind {
		return 0, fmt.Errorf("embedded %s where %s expected", e.Kind, kind)
	}
	i, ok := set.IndexOfKey(e.Author)
	if !ok {
		return 0, errors.New("embedded envelope not authored by a replica")
	}
	return i, nil
}

// CheckCommitCert checks the structure of a commit certificate for sequence number seq: a quorum
// (Quorums.Commit) to N COMMIT envelopes of set's chain from distinct replicas, all for seq and for one view
// and batch digest, which it returns. It does not verify signatures: the certificate proves the commit only
// once the caller verified every envelope of it.
func CheckCommitCert(set ReplicaSet, seq uint64, cert []*wire.Envelope) (view uint64, digest wire.Digest, err error) {
	n := set.N()
	q := QuorumsOf(n).Commit()
	if len(cert) < q || len(cert) > n {
		return 0, digest, fmt.Errorf("commit certificate of %d messages, want %d to %d", len(cert), q, n)
	}
	seen := make([]bool, n)
	for i, e := range cert {
		j, err := CheckMember(set, e, wire.KindCommit)
		if err != nil {
			return 0, digest, err
		}
		if seen[j] {
			return 0, digest, errors.New("commit certificate counts a replica twice")
		}
		seen[j] = true
		c, err := DecodeCommit(e.Payload)
		if err != nil {
			return 0, digest, err
		}
		if i == 0 {
			view, digest = c.View, c.Digest
		}
		if c.Seq != seq || c.View != view || c.Digest != digest {
			return 0, digest, errors.New("commit certificate mixes views, sequence numbers or digests")
		}
	}
	return view, digest, nil
}

// CheckCheckpointProof checks the structure of a proof that checkpoint (seq, d) is stable, for checkpoints
// every interval sequence numbers. The genesis checkpoint (seq 0) has a zero digest and an empty proof;
// any other seq is a multiple of interval, and its proof is a quorum (Quorums.Commit) to N CHECKPOINT
// envelopes of set's chain from distinct replicas, all for (seq, d). It does not verify signatures: the
// proof certifies the checkpoint only once the caller verified every envelope of it.
func CheckCheckpointProof(set ReplicaSet, interval, seq uint64, d wire.Digest, proof []*wire.Envelope) error {
	if seq == 0 {
		if len(proof) != 0 || !d.IsZero() {
			return errors.New("genesis checkpoint with a proof or digest")
		}
		return nil
	}
	if seq%interval != 0 {
		return fmt.Errorf("checkpoint %d off the interval", seq)
	}
	n := set.N()
	q := QuorumsOf(n).Commit()
	if len(proof) < q || len(proof) > n {
		return fmt.Errorf("checkpoint proof of %d messages, want %d to %d", len(proof), q, n)
	}
	seen := make([]bool, n)
	for _, e := range proof {
		i, err := CheckMember(set, e, wire.KindCheckpoint)
		if err != nil {
			return err
		}
		if seen[i] {
			return errors.New("checkpoint proof counts a replica twice")
		}
		seen[i] = true
		c, err := DecodeCheckpoint(e.Payload)
		if err != nil {
			return err
		}
		if c.Seq != seq || c.Digest != d {
			return errors.New("checkpoint proof for another checkpoint")
		}
	}
	return nil
}
