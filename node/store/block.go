package store

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// Limits on a block, checked by DecodeBlock and Verify.
const (
	// MaxBlockSize bounds an encoded block (the wire codec's own limit).
	MaxBlockSize = wire.MaxMessageSize
	// MaxBatchLen bounds the number of requests in one block.
	MaxBatchLen = 1 << 16
	// MaxCertLen bounds the number of envelopes in a commit certificate.
	MaxCertLen = 1 << 10
)

// blockHashTag domain-separates block hashes from every other SHA-256 in the project.
const blockHashTag = "p2pbft/block/v1\x00"

// ErrBadBlock is wrapped by every error Verify and DecodeBlock return for a block that is malformed or does
// not fit the chain.
var ErrBadBlock = errors.New("bad block")

// Block is one committed batch: the unit of the chain. Height equals the PBFT sequence number that committed
// the batch; heights are dense (a null batch is a block with an empty Batch).
//
// The block hash covers Height, Prev, BatchDigest and AppDigest, and nothing else: every correct replica
// computes the same hash for the same height. View and Cert are evidence, not content: a batch committed in
// view v at one replica may be committed in view v+1 at another (a view change re-proposes prepared
// batches), and any 2f+1 matching COMMITs are an equally good certificate, so replicas legitimately hold
// different Views and Certs for the same block. The certificate binds the block through BatchDigest, which
// the COMMITs sign.
type Block struct {
	// Height is the sequence number that committed the batch (1 for the first block).
	Height uint64
	// Prev is the hash of the block at Height-1, or the chain's genesis hash for Height 1.
	Prev wire.Digest
	// View is the view in which this replica saw the batch commit (the view of the COMMITs in Cert).
	View uint64
	// BatchDigest is pbft.BatchDigest over the IDs (wire.Envelope.ID) of the request envelopes in Batch, in
	// order: the digest the COMMITs of Cert sign.
	BatchDigest wire.Digest
	// AppDigest is the application's state digest after executing the batch.
	AppDigest wire.Digest
	// Batch holds the encoded request envelopes (wire.Envelope, kind request), in execution order.
	Batch [][]byte
	// Cert holds the encoded signed COMMIT envelopes that prove the batch committed.
	Cert [][]byte
}

// blockWire is the encoded form of a Block. Digests travel as byte strings whose length DecodeBlock checks:
// the CBOR library would silently pad or truncate a fixed-size array.
type blockWire struct {
	_           struct{} `cbor:",toarray"`
	Height      uint64
	Prev        []byte
	View        uint64
	BatchDigest []byte
	AppDigest   []byte
	Batch       [][]byte
	Cert        [][]byte
}

// Hash returns the block hash: sha256 over a fixed layout that does not depend on the codec,
//
//	"p2pbft/block/v1" 0x00 | u64 height | prev | batch digest | app digest
//
// See the Block documentation for why View and Cert are not covered.
func (b *Block) Hash() wire.Digest {
	var buf [len(blockHashTag) + 8 + 3*32]byte
	n := copy(buf[:], blockHashTag)
	binary.BigEndian.PutUint64(buf[n:], b.Height)
	n += 8
	n += copy(buf[n:], b.Prev[:])
	n += copy(buf[n:], b.BatchDigest[:])
	copy(buf[n:], b.AppDigest[:])
	return sha256.Sum256(buf[:])
}

// Ref returns the block's height and hash: what the next block links to.
func (b *Block) Ref() Ref { return Ref{Height: b.Height, Hash: b.Hash()} }

// Ref names a point of the chain: a height and the hash of the block at that height. The chain's origin is
// Ref{0, genesis hash}.
type Ref struct {
	Height uint64
	Hash   wire.Digest
}

func (r Ref) String() string { return fmt.Sprintf("%d/%s", r.Height, r.Hash) }

// Marshal encodes the block with the wire codec.
func (b *Block) Marshal() ([]byte, error) {
	w := blockWire{
		Height:      b.Height,
		Prev:        b.Prev[:],
		View:        b.View,
		BatchDigest: b.BatchDigest[:],
		AppDigest:   b.AppDigest[:],
		Batch:       b.Batch,
		Cert:        b.Cert,
	}
	data, err := wire.Marshal(&w)
	if err != nil {
		return nil, fmt.Errorf("store: encode block %d: %w", b.Height, err)
	}
	return data, nil
}

// DecodeBlock decodes a block and checks its shape: digest sizes and the batch and certificate bounds. It
// does not check the batch digest, the links or the certificate: that is Verify's job.
func DecodeBlock(data []byte) (*Block, error) {
	if len(data) > MaxBlockSize {
		return nil, fmt.Errorf("store: decode block: %d bytes exceeds %d: %w", len(data), MaxBlockSize, ErrBadBlock)
	}
	var w blockWire
	if err := wire.Unmarshal(data, &w); err != nil {
		return nil, fmt.Errorf("store: decode block: %w: %w", ErrBadBlock, err)
	}
	b := &Block{Height: w.Height, View: w.View, Batch: w.Batch, Cert: w.Cert}
	for _, f := range []struct {
		name string
		src  []byte
		dst  *wire.Digest
	}{{"prev", w.Prev, &b.Prev}, {"batch digest", w.BatchDigest, &b.BatchDigest}, {"app digest", w.AppDigest, &b.AppDigest}} {
		if len(f.src) != len(f.dst) {
			return nil, fmt.Errorf("store: decode block %d: %s is %d bytes, want %d: %w", w.Height, f.name, len(f.src), len(f.dst), ErrBadBlock)
		}
		copy(f.dst[:], f.src)
	}
	if len(b.Batch) > MaxBatchLen {
		return nil, fmt.Errorf("store: decode block %d: %d requests exceed %d: %w", b.Height, len(b.Batch), MaxBatchLen, ErrBadBlock)
	}
	if len(b.Cert) > MaxCertLen {
		return nil, fmt.Errorf("store: decode block %d: certificate of %d envelopes exceeds %d: %w", b.Height, len(b.Cert), MaxCertLen, ErrBadBlock)
	}
	if b.Height == 0 {
		return nil, fmt.Errorf("store: decode block: height 0: %w", ErrBadBlock)
	}
	return b, nil
}

// DecodeBatch decodes the request envelopes of a block's batch, checking that each is a well-formed request
// envelope (not its signature: that is the certificate's and the engine's business).
func DecodeBatch(batch [][]byte) ([]*wire.Envelope, error) {
	envs := make([]*wire.Envelope, len(batch))
	for i, raw := range batch {
		e, err := wire.DecodeEnvelope(raw)
		if err != nil {
			return nil, fmt.Errorf("request %d: %w", i, err)
		}
		if e.Kind != wire.KindRequest {
			return nil, fmt.Errorf("request %d is a %s envelope", i, e.Kind)
		}
		envs[i] = e
	}
	return envs, nil
}

// DecodeCert decodes the COMMIT envelopes of a certificate, checking their shape and kind.
func DecodeCert(cert [][]byte) ([]*wire.Envelope, error) {
	envs := make([]*wire.Envelope, len(cert))
	for i, raw := range cert {
		e, err := wire.DecodeEnvelope(raw)
		if err != nil {
			return nil, fmt.Errorf("certificate envelope %d: %w", i, err)
		}
		if e.Kind != wire.KindCommit {
			return nil, fmt.Errorf("certificate envelope %d is a %s envelope", i, e.Kind)
		}
		envs[i] = e
	}
	return envs, nil
}

// CertCheck checks a block's commit certificate: that Cert holds a quorum of validly signed COMMITs from
// distinct replicas for (View, Height, BatchDigest). The engine owns these rules; Verify calls it after
// everything the store can check on its own has passed, and passes the decoded certificate envelopes.
type CertCheck func(b *Block, cert []*wire.Envelope) error

// Verify checks that b is the block that follows prev: its height is prev.Height+1, it links to prev.Hash,
// every batch entry is a request envelope, BatchDigest is the digest of their IDs, every certificate entry
// is a COMMIT envelope, and finally that checkCert accepts the certificate. checkCert must not be nil: a
// block without a checked certificate proves nothing. Errors wrap ErrBadBlock (and the checker's error).
func (b *Block) Verify(prev Ref, checkCert CertCheck) error {
	if checkCert == nil {
		return fmt.Errorf("store: verify block %d: no certificate check given", b.Height)
	}
	if b.Height != prev.Height+1 {
		return fmt.Errorf("store: verify block: height %d does not follow %d: %w", b.Height, prev.Height, ErrBadBlock)
	}
	if b.Prev != prev.Hash {
		return fmt.Errorf("store: verify block %d: links to %s, want %s: %w", b.Height, b.Prev, prev.Hash, ErrBadBlock)
	}
	if len(b.Batch) > MaxBatchLen || len(b.Cert) > MaxCertLen {
		return fmt.Errorf("store: verify block %d: %d requests, %d certificate envelopes exceed the limits: %w", b.Height, len(b.Batch), len(b.Cert), ErrBadBlock)
	}
	envs, err := DecodeBatch(b.Batch)
	if err != nil {
		return fmt.Errorf("store: verify block %d: %w: %w", b.Height, ErrBadBlock, err)
	}
	ids := make([]wire.Digest, len(envs))
	for i, e := range envs {
		ids[i] = e.ID()
	}
	if d := pbft.BatchDigest(ids); d != b.BatchDigest {
		return fmt.Errorf("store: verify block %d: batch digest %s, computed %s: %w", b.Height, b.BatchDigest, d, ErrBadBlock)
	}
	cert, err := DecodeCert(b.Cert)
	if err != nil {
		return fmt.Errorf("store: verify block %d: %w: %w", b.Height, ErrBadBlock, err)
	}
	if len(cert) == 0 {
		return fmt.Errorf("store: verify block %d: empty certificate: %w", b.Height, ErrBadBlock)
	}
	if err := checkCert(b, cert); err != nil {
		return fmt.Errorf("store: verify block %d: certificate: %w: %w", b.Height, ErrBadBlock, err)
	}
	return nil
}
