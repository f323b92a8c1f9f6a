// Package statesync defines the messages replicas exchange to bring a replica that fell behind up to a
// certified checkpoint, and the pure checks on them. The node (package node) serves and drives the
// transfer; this package holds the wire format and the rules that decide what a response proves, so that
// both are small enough to read and fuzz on their own.
//
// # The protocol
//
// A replica syncing to the stable checkpoint (Seq, Digest), certified by a quorum of CHECKPOINT messages,
// asks its peers over the request/response protocol (p2p.Host.Request; one KindStateRequest envelope,
// one signed KindStateResponse envelope back):
//
//   - Manifest(Seq): the responder's snapshot at Seq: the application digest, the digest and size of the
//     engine's client table, and the block at Seq with its commit certificate. The manifest checks out
//     when CheckpointDigest(Seq, AppDigest, TableDigest) equals the certified Digest, and the block's
//     height, application digest, batch digest and certificate are right. The hash of that block (which
//     links to the blocks below it and anchors the syncing replica's chain) is not covered by the
//     checkpoint, so the replica uses it only once f+1 distinct replicas sent manifests with the same block
//     hash: one of them is correct.
//   - Table(Seq, Offset): the next part of the client table at Seq. The assembled table must hash to
//     TableDigest.
//   - Chunk(Seq, Cursor): the next chunk of the application snapshot at Seq after Cursor (see
//     app.Snapshot.ReadChunk). Chunks are applied as they come; the application refuses a malformed or
//     out-of-order chunk, and the finished state must have the certified application digest.
//   - Blocks(From, To): committed blocks with their commit certificates, from From up, contiguous, at
//     most To. A replica a few checkpoints behind replays these instead of copying the whole state; each
//     block is checked against its certificate before it is executed.
//
// Every response is signed by the responder's node key and names the checkpoint it is about, so a
// replica can hold a peer to what it sent. Nothing a response claims is trusted beyond what the checks
// above prove; a peer whose response fails a check is skipped and another one asked.
package statesync

import (
	"errors"
	"fmt"

	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// Type says what a request asks for (and what its response carries).
type Type uint8

// Request types. Values are part of the wire format: never renumber, only append.
const (
	TypeManifest Type = 1
	TypeTable    Type = 2
	TypeChunk    Type = 3
	TypeBlocks   Type = 4
)

func (t Type) String() string {
	switch t {
	case TypeManifest:
		return "manifest"
	case TypeTable:
		return "table"
	case TypeChunk:
		return "chunk"
	case TypeBlocks:
		return "blocks"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Bounds every request and response obeys, whatever the configuration.
const (
	// MaxCursor bounds an application snapshot cursor.
	MaxCursor = 4 << 10
	// MaxBlocks bounds the blocks of one Blocks response.
	MaxBlocks = 1024
	// MaxPart bounds the data of one Table or Chunk response; a responder may send less.
	MaxPart = 16 << 20
)

// Request is the payload of a KindStateRequest envelope.
type Request struct {
	_ struct{} `cbor:",toarray"`
	// Type says what is asked for.
	Type Type
	// Seq is the checkpoint height for Manifest, Table and Chunk, and the first block height for Blocks.
	Seq uint64
	// To is the last block height wanted (Blocks only).
	To uint64
	// Offset is the byte offset into the client table (Table only).
	Offset uint64
	// Cursor is the application snapshot cursor (Chunk only; empty for the first chunk).
	Cursor []byte
	// MaxBytes is the most data the requester wants in the response; the responder may send less.
	MaxBytes uint32
}

// Response is the payload of a KindStateResponse envelope. Which fields are set depends on Type.
type Response struct {
	_    struct{} `cbor:",toarray"`
	Type Type
	// Seq repeats the request's Seq.
	Seq uint64
	// Manifest: the application digest at Seq, the digest (pbft.ClientTableDigest) and size of the
	// client table, and the encoded block at Seq (store.Block).
	AppDigest   wire.Digest
	TableDigest wire.Digest
	TableSize   uint64
	Block       []byte
	// Table and Chunk: the data, and whether more follows.
	Data []byte
	More bool
	// Blocks: encoded blocks (store.Block), contiguous from the requested height.
	Blocks [][]byte
}

// NewRequest encodes and signs a request.
func NewRequest(s wire.Signer, chainID string, r *Request) (*wire.Envelope, error) {
	p, err := wire.Marshal(r)
	if err != nil {
		return nil, err
	}
	return wire.Seal(s, chainID, wire.KindStateRequest, p)
}

// NewResponse encodes and signs a response.
func NewResponse(s wire.Signer, chainID string, r *Response) (*wire.Envelope, error) {
	p, err := wire.Marshal(r)
	if err != nil {
		return nil, err
	}
	return wire.Seal(s, chainID, wire.KindStateResponse, p)
}

// DecodeRequest decodes a request payload and checks its bounds.
func DecodeRequest(b []byte) (*Request, error) {
	r := new(Request)
	if err := wire.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("statesync: decode request: %w", err)
	}
	switch r.Type {
	case TypeManifest, TypeTable, TypeChunk:
		if r.Seq == 0 {
			return nil, errors.New("statesync: decode request: checkpoint 0 has no snapshot")
		}
	case TypeBlocks:
		if r.Seq == 0 || r.To < r.Seq {
			return nil, fmt.Errorf("statesync: decode request: block range [%d, %d]", r.Seq, r.To)
		}
	default:
		return nil, fmt.Errorf("statesync: decode request: unknown %s", r.Type)
	}
	if len(r.Cursor) > MaxCursor {
		return nil, fmt.Errorf("statesync: decode request: cursor of %d bytes", len(r.Cursor))
	}
	return r, nil
}

// DecodeResponse decodes a response payload and checks that it is a well-formed answer of the given type
// for seq. It does not check what the response claims (see CheckManifest).
func DecodeResponse(b []byte, t Type, seq uint64) (*Response, error) {
	r := new(Response)
	if err := wire.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("statesync: decode response: %w", err)
	}
	if r.Type != t || r.Seq != seq {
		return nil, fmt.Errorf("statesync: response is a %s for %d, want a %s for %d", r.Type, r.Seq, t, seq)
	}
	if len(r.Data) > MaxPart {
		return nil, fmt.Errorf("statesync: response of %d bytes", len(r.Data))
	}
	if len(r.Blocks) > MaxBlocks {
		return nil, fmt.Errorf("statesync: response of %d blocks", len(r.Blocks))
	}
	switch t {
	case TypeManifest:
		if len(r.Block) == 0 {
			return nil, errors.New("statesync: manifest without its block")
		}
	case TypeBlocks:
		if len(r.Blocks) == 0 {
			return nil, errors.New("statesync: empty blocks response")
		}
	}
	return r, nil
}

// CheckpointMatches reports whether a manifest's digests are the certified checkpoint digest of seq.
func (r *Response) CheckpointMatches(seq uint64, certified wire.Digest) bool {
	return pbft.CheckpointDigest(seq, r.AppDigest, r.TableDigest) == certified
}

// Agreement picks, among manifests that passed their checks, the block hash that at least need of them
// (f+1: then one is from a correct replica) agree on, and returns it with the indexes of the manifests that
// carry it. ok is false if no hash has enough support.
func Agreement(hashes []wire.Digest, need int) (hash wire.Digest, idx []int, ok bool) {
	count := make(map[wire.Digest][]int)
	for i, h := range hashes {
		count[h] = append(count[h], i)
	}
	best := 0
	for h, is := range count {
		if len(is) > best || (len(is) == best && string(h[:]) < string(hash[:])) {
			hash, idx, best = h, is, len(is)
		}
	}
	return hash, idx, best >= need && best > 0
}
