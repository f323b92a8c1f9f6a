// Package apitypes holds the JSON types of the replica's HTTP API (package node/api): requests, answers,
// status, blocks and errors. It depends on no network or storage code, so that tools which only speak HTTP
// to replicas (cmd/p2pbft's client commands, bench, testnet, the live page) can decode the answers without
// importing the replica.
package apitypes

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/p2pbft/p2pbft/node/app/kv"
	"github.com/p2pbft/p2pbft/node/trace"
)

// TxRequest is the body of POST /v1/tx: either Op (signed by the node) or Envelope (already signed).
type TxRequest struct {
	// Op is a key-value operation for the node to sign and submit.
	Op *Op `json:"op,omitempty"`
	// Envelope is a signed request envelope (wire.Envelope in deterministic CBOR), base64-encoded.
	Envelope string `json:"envelope,omitempty"`
	// Encoding says how Op's key, value and expect are written: "utf8" (default) or "base64".
	Encoding string `json:"encoding,omitempty"`
}

// Op is a key-value operation in JSON.
type Op struct {
	// Type is put, get, delete (or del) or cas.
	Type string `json:"type"`
	Key  string `json:"key"`
	// Value is the value to store (put, cas).
	Value string `json:"value,omitempty"`
	// Expect is the value cas requires the key to hold; ExpectAbsent requires the key not to exist.
	Expect       string `json:"expect,omitempty"`
	ExpectAbsent bool   `json:"expect_absent,omitempty"`
}

// decodeField decodes a string field of an Op according to the encoding.
func decodeField(name, s, encoding string) ([]byte, error) {
	switch encoding {
	case "", "utf8":
		return []byte(s), nil
	case "base64":
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("%s: not standard base64: %w", name, err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("encoding %q: want utf8 or base64", encoding)
}

// KVOp converts a JSON operation to a kv.Op and checks it.
func (o *Op) KVOp(encoding string) (kv.Op, error) {
	key, err := decodeField("key", o.Key, encoding)
	if err != nil {
		return kv.Op{}, err
	}
	value, err := decodeField("value", o.Value, encoding)
	if err != nil {
		return kv.Op{}, err
	}
	expect, err := decodeField("expect", o.Expect, encoding)
	if err != nil {
		return kv.Op{}, err
	}
	var op kv.Op
	switch strings.ToLower(o.Type) {
	case "put":
		op = kv.Put(key, value)
	case "get":
		op = kv.Get(key)
	case "delete", "del":
		op = kv.Delete(key)
	case "cas":
		if o.ExpectAbsent {
			if len(expect) != 0 {
				return kv.Op{}, errors.New("cas: expect and expect_absent exclude each other")
			}
			op = kv.CreateIfAbsent(key, value)
		} else {
			op = kv.CAS(key, expect, value)
		}
	case "":
		return kv.Op{}, errors.New("op.type is missing (put, get, delete or cas)")
	default:
		return kv.Op{}, fmt.Errorf("op.type %q: want put, get, delete or cas", o.Type)
	}
	if o.Type != "cas" && (len(expect) != 0 || o.ExpectAbsent) {
		return kv.Op{}, fmt.Errorf("%s takes no expect or expect_absent (only cas does)", o.Type)
	}
	if (op.Type == kv.OpGet || op.Type == kv.OpDelete) && len(value) != 0 {
		return kv.Op{}, fmt.Errorf("%s takes no value", o.Type)
	}
	if err := op.Check(); err != nil {
		return kv.Op{}, err
	}
	return op, nil
}

// TxResponse answers POST /v1/tx.
type TxResponse struct {
	// Status is "committed" (executed by this replica) or "accepted" (async: accepted for ordering).
	Status string `json:"status"`
	// Client is the peer ID of the key that signed the request; Timestamp its timestamp; ID the
	// request envelope's ID (hex).
	Client    string `json:"client"`
	Timestamp uint64 `json:"timestamp"`
	ID        string `json:"id"`
	// Height is the block that executed the request, View the view of the reply, Replica the replying
	// replica (committed only).
	Height  uint64 `json:"height,omitempty"`
	View    uint64 `json:"view,omitempty"`
	Replica *int   `json:"replica,omitempty"`
	// Result is the decoded key-value result, if the application's result is one; ResultBase64 the raw
	// result bytes.
	Result       *Result `json:"result,omitempty"`
	ResultBase64 string  `json:"result_base64,omitempty"`
	// Reply is this replica's signed reply envelope (CBOR, base64).
	Reply string `json:"reply,omitempty"`
}

// Result is a key-value result in JSON. Value is set when the value is valid UTF-8; ValueBase64 always
// when there is a value.
type Result struct {
	Status      string `json:"status"`
	Value       string `json:"value,omitempty"`
	ValueBase64 string `json:"value_base64,omitempty"`
	Exists      bool   `json:"exists"`
	Error       string `json:"error,omitempty"`
}

// KVResponse answers GET /v1/kv/{key}.
type KVResponse struct {
	Key         string `json:"key"`
	Found       bool   `json:"found"`
	Value       string `json:"value,omitempty"`
	ValueBase64 string `json:"value_base64,omitempty"`
	// Height is the height of the committed state the answer reflects.
	Height uint64 `json:"height"`
}

// Block is a block in JSON. Raw is the encoded block (store.Block.Marshal, base64), from which anyone can
// check the hash and the certificate.
type Block struct {
	Height      uint64          `json:"height"`
	Hash        string          `json:"hash"`
	Prev        string          `json:"prev"`
	View        uint64          `json:"view"`
	BatchDigest string          `json:"batch_digest"`
	AppDigest   string          `json:"app_digest"`
	Requests    []BlockRequest  `json:"requests"`
	Certificate []CommitMessage `json:"certificate"`
	Raw         string          `json:"raw,omitempty"`
}

// TraceResponse is the answer of GET /v1/trace: one replica's trace records (see package node/trace for
// what each time means). Times are Unix nanoseconds of the replica's clock; Now is that clock when it
// answered, so that a reader can tell how far the clocks of several replicas disagree.
type TraceResponse struct {
	Replica int   `json:"replica"`
	Enabled bool  `json:"enabled"`
	Now     int64 `json:"now"`
	// Slots are ordered by sequence number, then view; a sequence number re-proposed after a view change
	// has a record per view.
	Slots       []trace.Slot       `json:"slots"`
	ViewChanges []trace.ViewChange `json:"view_changes"`
}

// BlockSummary is a block without its requests and certificate.
type BlockSummary struct {
	Height    uint64 `json:"height"`
	Hash      string `json:"hash"`
	Prev      string `json:"prev"`
	View      uint64 `json:"view"`
	Requests  int    `json:"requests"`
	AppDigest string `json:"app_digest"`
}

// BlockRequest is one request of a block.
type BlockRequest struct {
	ID        string `json:"id"`
	Client    string `json:"client"`
	Timestamp uint64 `json:"timestamp"`
	// Op is the decoded key-value operation when the operation is one; OpBase64 the raw operation.
	Op       *Op    `json:"op,omitempty"`
	OpBase64 string `json:"op_base64"`
	Error    string `json:"error,omitempty"`
}

// CommitMessage is one signed COMMIT of a block's certificate.
type CommitMessage struct {
	Replica   int    `json:"replica"`
	PeerID    string `json:"peer_id"`
	View      uint64 `json:"view"`
	Seq       uint64 `json:"seq"`
	Digest    string `json:"digest"`
	Signature string `json:"signature"`
	// Valid says whether the signature verifies against the replica's key and the COMMIT names this
	// block's height and batch digest.
	Valid bool   `json:"valid"`
	Error string `json:"error,omitempty"`
}

// ErrorResponse is the body of every error.
type ErrorResponse struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// PartitionRequest is the body of POST /admin/partition.
type PartitionRequest struct {
	// Peers are the replicas (genesis indexes) to cut this replica off from.
	Peers []int `json:"peers"`
}

// PartitionResponse answers the admin endpoints: the replicas this replica is cut off from.
type PartitionResponse struct {
	Partitioned []int `json:"partitioned"`
}
