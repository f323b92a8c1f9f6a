package pbft

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/p2pbft/p2pbft/wire"
)

// Payload types. Each is the Payload of one wire.Kind, encoded with wire.Marshal (deterministic CBOR, structs
// as arrays). Every Decode function is strict (see wire.Unmarshal) and checks the bounds that do not depend
// on configuration; the replica checks the rest (window, view, membership, quorum sizes).

// Request is the payload of a KindRequest envelope, authored and signed by a client key. The client's
// identity is the envelope's Author. A client has at most one request outstanding and gives each new request a
// larger timestamp (Unix nanoseconds work); replicas execute a client's requests only in increasing
// timestamp order, so an older or repeated request is never executed twice.
type Request struct {
	_         struct{} `cbor:",toarray"`
	Timestamp uint64   // > 0, strictly increasing per client
	Op        []byte   // application operation, opaque to consensus
}

// PrePrepare is the payload of a KindPrePrepare envelope: the primary of View assigns sequence number Seq to
// the batch whose digest is Digest. The batch itself travels in the envelope's unsigned Body (see
// EncodeBatch), bound by Digest, so certificates that embed the pre-prepare (WithoutBody) stay small.
type PrePrepare struct {
	_      struct{} `cbor:",toarray"`
	View   uint64
	Seq    uint64
	Digest wire.Digest
}

// Prepare is the payload of a KindPrepare envelope: a backup agrees to order Digest at Seq in View.
type Prepare struct {
	_      struct{} `cbor:",toarray"`
	View   uint64
	Seq    uint64
	Digest wire.Digest
}

// Commit is the payload of a KindCommit envelope: the author has prepared Digest at Seq in View.
type Commit struct {
	_      struct{} `cbor:",toarray"`
	View   uint64
	Seq    uint64
	Digest wire.Digest
}

// Checkpoint is the payload of a KindCheckpoint envelope: after executing Seq the author's state digest
// (see CheckpointDigest) is Digest.
type Checkpoint struct {
	_      struct{} `cbor:",toarray"`
	Seq    uint64
	Digest wire.Digest
}

// PreparedCert proves that a batch prepared at a sequence number in some view: the primary's pre-prepare
// (WithoutBody) and matching prepares from distinct backups (quorum-1 of them).
type PreparedCert struct {
	_          struct{} `cbor:",toarray"`
	PrePrepare *wire.Envelope
	Prepares   []*wire.Envelope
}

// ViewChange is the payload of a KindViewChange envelope (OSDI'99, with signatures): the author moves to
// View. It carries the author's last stable checkpoint with its proof (quorum CHECKPOINT envelopes; none for
// the genesis checkpoint 0) and a prepared certificate for every sequence number above it that the author
// prepared (the one from the highest view).
type ViewChange struct {
	_               struct{} `cbor:",toarray"`
	View            uint64
	StableSeq       uint64
	StableDigest    wire.Digest
	CheckpointProof []*wire.Envelope
	Prepared        []PreparedCert
}

// NewView is the payload of a KindNewView envelope, sent by the primary of View: the quorum of VIEW-CHANGE
// envelopes it chose and the pre-prepares (signed by it, for View, WithoutBody) that those view changes
// determine (see the package documentation). Backups recompute the pre-prepares and reject a NEW-VIEW that
// differs.
type NewView struct {
	_           struct{} `cbor:",toarray"`
	View        uint64
	ViewChanges []*wire.Envelope
	PrePrepares []*wire.Envelope
}

// FetchItem names one sequence number a replica is stuck at. NeedBody asks for a batch body: the one with
// Digest, or, if Digest is zero, the one of the responder's pre-prepare.
type FetchItem struct {
	_        struct{} `cbor:",toarray"`
	Seq      uint64
	Digest   wire.Digest
	NeedBody bool
}

// Fetch is the payload of a KindFetch envelope: the author asks one replica for what it has about some
// sequence numbers (batches, its own votes, commit certificates). View and Active are the author's view and
// whether it entered it, so a replica in a later view can send it the NEW-VIEW it missed; Executed is the
// author's last executed sequence number, so a replica with a later stable checkpoint can send its proof.
type Fetch struct {
	_        struct{} `cbor:",toarray"`
	View     uint64
	Active   bool
	Executed uint64
	Items    []FetchItem
}

// StatusReport is the payload of a KindStatus envelope: every replica multicasts one now and then (StatusInterval),
// whether or not requests flow, so that one that fell behind learns it on an idle network and catches up (it
// fetches from the sender), one in an older view is sent the NEW-VIEW it missed, and the drivers hear from
// every replica they can reach. Tick makes every status a new message (gossip drops repeated bytes).
type StatusReport struct {
	_        struct{} `cbor:",toarray"`
	View     uint64
	Active   bool
	Executed uint64
	Stable   uint64
	Tick     uint64
}

// FetchedSlot is what a replica knows about one sequence number. Cert, when present, is a commit
// certificate (quorum COMMIT envelopes for one view, sequence number and digest) and Batch the committed
// batch's body. Otherwise Batch is the body the asker named (if known) and Messages are signed messages the
// responder holds for the slot (the pre-prepare WithoutBody and its own prepare and commit), which the asker
// checks and processes as if it had received them.
type FetchedSlot struct {
	_        struct{} `cbor:",toarray"`
	Seq      uint64
	Batch    []byte
	Cert     []*wire.Envelope
	Messages []*wire.Envelope
}

// FetchReply is the payload of a KindFetchReply envelope. Executed is the responder's last executed sequence
// number (so the asker learns how far behind it is) and Proof, when the asker is below the responder's
// stable checkpoint, the CHECKPOINT envelopes that prove it.
type FetchReply struct {
	_        struct{} `cbor:",toarray"`
	Executed uint64
	Proof    []*wire.Envelope
	Slots    []FetchedSlot
}

// Bounds that hold for every configuration. The replica checks tighter, configured ones.
const (
	maxReplicas       = 1024
	maxEmbedded       = 1 << 16 // envelopes embedded in one certificate-carrying message
	maxBatchCount     = 1 << 20
	maxFetchItems     = 256
	maxReplyPathDepth = 32
)

var errBounds = errors.New("out of bounds")

func decodeStrict[T any](kind string, b []byte) (*T, error) {
	v := new(T)
	if err := wire.Unmarshal(b, v); err != nil {
		return nil, fmt.Errorf("pbft: decode %s: %w", kind, err)
	}
	return v, nil
}

// EncodePayload encodes any payload type of this package.
func EncodePayload(v any) ([]byte, error) { return wire.Marshal(v) }

// DecodeRequest decodes a Request payload. A zero timestamp is invalid.
func DecodeRequest(b []byte) (*Request, error) {
	r, err := decodeStrict[Request]("request", b)
	if err != nil {
		return nil, err
	}
	if r.Timestamp == 0 {
		return nil, errors.New("pbft: decode request: zero timestamp")
	}
	return r, nil
}

// DecodePrePrepare decodes a PrePrepare payload. Sequence numbers start at 1.
func DecodePrePrepare(b []byte) (*PrePrepare, error) {
	p, err := decodeStrict[PrePrepare]("pre-prepare", b)
	if err == nil && p.Seq == 0 {
		err = errors.New("pbft: decode pre-prepare: sequence number 0")
	}
	return p, err
}

// DecodePrepare decodes a Prepare payload.
func DecodePrepare(b []byte) (*Prepare, error) {
	p, err := decodeStrict[Prepare]("prepare", b)
	if err == nil && p.Seq == 0 {
		err = errors.New("pbft: decode prepare: sequence number 0")
	}
	return p, err
}

// DecodeCommit decodes a Commit payload.
func DecodeCommit(b []byte) (*Commit, error) {
	p, err := decodeStrict[Commit]("commit", b)
	if err == nil && p.Seq == 0 {
		err = errors.New("pbft: decode commit: sequence number 0")
	}
	return p, err
}

// DecodeCheckpoint decodes a Checkpoint payload.
func DecodeCheckpoint(b []byte) (*Checkpoint, error) {
	p, err := decodeStrict[Checkpoint]("checkpoint", b)
	if err == nil && p.Seq == 0 {
		err = errors.New("pbft: decode checkpoint: sequence number 0")
	}
	return p, err
}

// DecodeViewChange decodes a ViewChange payload and checks that every embedded envelope is present and
// well-shaped.
func DecodeViewChange(b []byte) (*ViewChange, error) {
	v, err := decodeStrict[ViewChange]("view-change", b)
	if err != nil {
		return nil, err
	}
	total := len(v.CheckpointProof)
	if err := checkEnvelopes(v.CheckpointProof); err != nil {
		return nil, fmt.Errorf("pbft: decode view-change: checkpoint proof: %w", err)
	}
	for i := range v.Prepared {
		pc := &v.Prepared[i]
		if pc.PrePrepare == nil {
			return nil, fmt.Errorf("pbft: decode view-change: prepared certificate %d has no pre-prepare", i)
		}
		if err := checkEnvelopes(append([]*wire.Envelope{pc.PrePrepare}, pc.Prepares...)); err != nil {
			return nil, fmt.Errorf("pbft: decode view-change: prepared certificate %d: %w", i, err)
		}
		total += 1 + len(pc.Prepares)
	}
	if total > maxEmbedded {
		return nil, fmt.Errorf("pbft: decode view-change: %d embedded envelopes: %w", total, errBounds)
	}
	return v, nil
}

// DecodeNewView decodes a NewView payload and checks the shape of the embedded envelopes.
func DecodeNewView(b []byte) (*NewView, error) {
	v, err := decodeStrict[NewView]("new-view", b)
	if err != nil {
		return nil, err
	}
	if err := checkEnvelopes(v.ViewChanges); err != nil {
		return nil, fmt.Errorf("pbft: decode new-view: view changes: %w", err)
	}
	if err := checkEnvelopes(v.PrePrepares); err != nil {
		return nil, fmt.Errorf("pbft: decode new-view: pre-prepares: %w", err)
	}
	if len(v.ViewChanges) > maxReplicas || len(v.PrePrepares) > maxEmbedded {
		return nil, fmt.Errorf("pbft: decode new-view: %w", errBounds)
	}
	return v, nil
}

// DecodeStatusReport decodes a StatusReport payload.
func DecodeStatusReport(b []byte) (*StatusReport, error) {
	return decodeStrict[StatusReport]("status report", b)
}

// DecodeFetch decodes a Fetch payload.
func DecodeFetch(b []byte) (*Fetch, error) {
	v, err := decodeStrict[Fetch]("fetch", b)
	if err != nil {
		return nil, err
	}
	if len(v.Items) > maxFetchItems {
		return nil, fmt.Errorf("pbft: decode fetch: %d items: %w", len(v.Items), errBounds)
	}
	return v, nil
}

// DecodeFetchReply decodes a FetchReply payload and checks the shape of the embedded envelopes.
func DecodeFetchReply(b []byte) (*FetchReply, error) {
	v, err := decodeStrict[FetchReply]("fetch-reply", b)
	if err != nil {
		return nil, err
	}
	if len(v.Slots) > maxFetchItems {
		return nil, fmt.Errorf("pbft: decode fetch-reply: %d slots: %w", len(v.Slots), errBounds)
	}
	if err := checkEnvelopes(v.Proof); err != nil {
		return nil, fmt.Errorf("pbft: decode fetch-reply: proof: %w", err)
	}
	for i := range v.Slots {
		if err := checkEnvelopes(v.Slots[i].Cert); err != nil {
			return nil, fmt.Errorf("pbft: decode fetch-reply: slot %d certificate: %w", i, err)
		}
		if err := checkEnvelopes(v.Slots[i].Messages); err != nil {
			return nil, fmt.Errorf("pbft: decode fetch-reply: slot %d messages: %w", i, err)
		}
	}
	return v, nil
}

// checkEnvelopes checks that embedded envelopes are present and well-shaped (not their signatures).
func checkEnvelopes(es []*wire.Envelope) error {
	if len(es) > maxEmbedded {
		return errBounds
	}
	for i, e := range es {
		if e == nil {
			return fmt.Errorf("envelope %d missing", i)
		}
		if err := e.CheckShape(); err != nil {
			return fmt.Errorf("envelope %d: %w", i, err)
		}
	}
	return nil
}

// Batches.

const (
	batchDigestTag      = "p2pbft/batch/v1\x00"
	checkpointDigestTag = "p2pbft/checkpoint/v1\x00"
	clientTableTag      = "p2pbft/clients/v1\x00"
)

// BatchDigest returns the digest of a batch: sha256 over a domain tag, the number of requests and the
// request envelope IDs (wire.Envelope.ID) in order. It does not rehash request bodies beyond the IDs.
func BatchDigest(ids []wire.Digest) wire.Digest {
	h := sha256.New()
	h.Write([]byte(batchDigestTag))
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(ids)))
	h.Write(n[:])
	for i := range ids {
		h.Write(ids[i][:])
	}
	var d wire.Digest
	h.Sum(d[:0])
	return d
}

// NullDigest is the digest of the empty (null) batch that fills a gap in a NEW-VIEW.
var NullDigest = BatchDigest(nil)

// EncodeBatch encodes a batch of request envelopes for a pre-prepare's Body.
func EncodeBatch(reqs []*wire.Envelope) ([]byte, error) {
	if len(reqs) == 0 {
		return nil, nil
	}
	return wire.Marshal(reqs)
}

// DecodeBatch decodes a pre-prepare body into request envelopes and checks their shape (not their signatures
// or payloads). An empty body is the empty batch.
func DecodeBatch(b []byte) ([]*wire.Envelope, error) {
	if len(b) == 0 {
		return nil, nil
	}
	var reqs []*wire.Envelope
	if err := wire.Unmarshal(b, &reqs); err != nil {
		return nil, fmt.Errorf("pbft: decode batch: %w", err)
	}
	if len(reqs) == 0 {
		// The empty batch has exactly one encoding: the empty body.
		return nil, errors.New("pbft: decode batch: empty array (the empty batch is an empty body)")
	}
	if len(reqs) > maxBatchCount {
		return nil, fmt.Errorf("pbft: decode batch: %d requests: %w", len(reqs), errBounds)
	}
	for i, e := range reqs {
		if e == nil {
			return nil, fmt.Errorf("pbft: decode batch: request %d missing", i)
		}
		if err := e.CheckShape(); err != nil {
			return nil, fmt.Errorf("pbft: decode batch: request %d: %w", i, err)
		}
		if e.Kind != wire.KindRequest {
			return nil, fmt.Errorf("pbft: decode batch: request %d has kind %s", i, e.Kind)
		}
		if len(e.Body) != 0 || e.Resend != 0 {
			return nil, fmt.Errorf("pbft: decode batch: request %d carries unsigned fields", i)
		}
	}
	return reqs, nil
}

// CheckpointDigest is the digest a replica signs in a CHECKPOINT: sha256 over a domain tag, the sequence
// number, the application digest after executing it, and the digest of the client table (ClientTableDigest).
func CheckpointDigest(seq uint64, appDigest, clientTableDigest wire.Digest) wire.Digest {
	b := make([]byte, 0, len(checkpointDigestTag)+8+64)
	b = append(b, checkpointDigestTag...)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = append(b, appDigest[:]...)
	b = append(b, clientTableDigest[:]...)
	return sha256.Sum256(b)
}

// ClientTableDigest is the digest of an encoded client table (as exported in HardState.Snapshot).
func ClientTableDigest(table []byte) wire.Digest {
	h := sha256.New()
	h.Write([]byte(clientTableTag))
	h.Write(table)
	var d wire.Digest
	h.Sum(d[:0])
	return d
}

// NewRequest builds and signs a client request envelope.
func NewRequest(s wire.Signer, chainID string, timestamp uint64, op []byte) (*wire.Envelope, error) {
	if timestamp == 0 {
		return nil, errors.New("pbft: request timestamp must be > 0")
	}
	p, err := wire.Marshal(&Request{Timestamp: timestamp, Op: op})
	if err != nil {
		return nil, err
	}
	return wire.Seal(s, chainID, wire.KindRequest, p)
}
