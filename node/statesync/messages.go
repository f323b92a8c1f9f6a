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
