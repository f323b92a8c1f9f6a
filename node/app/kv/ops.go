package kv

import (
	"fmt"

	"github.com/p2pbft/p2pbft/wire"
)

// Limits on operations. A request that exceeds them gets StatusInvalid.
const (
	MaxKeySize   = 4 << 10   // 4 KiB
	MaxValueSize = 256 << 10 // 256 KiB: a compare-and-set carries two, and a request is at most 1 MiB (pbft.DefaultMaxRequestBytes)
)

// OpType says what an operation does. Values are part of the encoding: never renumber.
type OpType uint8

const (
	// OpPut sets Key to Value.
	OpPut OpType = 1
	// OpGet reads Key (through consensus: a linearizable read).
	OpGet OpType = 2
	// OpDelete removes Key (a no-op if it does not exist).
	OpDelete OpType = 3
	// OpCAS sets Key to Value if its current value is Expect, or, with ExpectAbsent, if it does not exist.
	OpCAS OpType = 4
)

func (t OpType) String() string {
	switch t {
	case OpPut:
		return "put"
	case OpGet:
		return "get"
	case OpDelete:
		return "delete"
	case OpCAS:
		return "cas"
	}
	return fmt.Sprintf("op(%d)", uint8(t))
}

// Op is one key-value operation: the app.Request.Op of a request, encoded with EncodeOp.
type Op struct {
	_ struct{} `cbor:",toarray"`
	// Type is the operation.
	Type OpType
	// Key is the key, 1 to MaxKeySize bytes.
	Key []byte
	// Value is the value to store (OpPut, OpCAS), at most MaxValueSize bytes.
	Value []byte
	// Expect is the value OpCAS requires the key to hold.
	Expect []byte
	// ExpectAbsent makes OpCAS require that the key does not exist (Expect must then be empty).
	ExpectAbsent bool
}

// Put returns an operation that sets key to value.
func Put(key, value []byte) Op { return Op{Type: OpPut, Key: key, Value: value} }

// Get returns an operation that reads key.
func Get(key []byte) Op { return Op{Type: OpGet, Key: key} }

// Delete returns an operation that removes key.
func Delete(key []byte) Op { return Op{Type: OpDelete, Key: key} }

// CAS returns an operation that sets key to value if it currently holds expect.
func CAS(key, expect, value []byte) Op {
	return Op{Type: OpCAS, Key: key, Expect: expect, Value: value}
}

// CreateIfAbsent returns a compare-and-set that sets key to value only if key does not exist.
func CreateIfAbsent(key, value []byte) Op {
	return Op{Type: OpCAS, Key: key, Value: value, ExpectAbsent: true}
}

// Check reports whether the operation is well formed.
func (o *Op) Check() error {
	switch o.Type {
	case OpPut, OpGet, OpDelete, OpCAS:
	default:
		return fmt.Errorf("kv: unknown operation type %d", uint8(o.Type))
	}
	if len(o.Key) == 0 || len(o.Key) > MaxKeySize {
		return fmt.Errorf("kv: %s: key of %d bytes, want 1 to %d", o.Type, len(o.Key), MaxKeySize)
	}
	if len(o.Value) > MaxValueSize || len(o.Expect) > MaxValueSize {
		return fmt.Errorf("kv: %s: value of more than %d bytes", o.Type, MaxValueSize)
	}
	switch o.Type {
	case OpGet, OpDelete:
		if len(o.Value) != 0 || len(o.Expect) != 0 || o.ExpectAbsent {
			return fmt.Errorf("kv: %s takes only a key", o.Type)
		}
	case OpPut:
		if len(o.Expect) != 0 || o.ExpectAbsent {
			return fmt.Errorf("kv: put takes no expectation (use cas)")
		}
	case OpCAS:
		if o.ExpectAbsent && len(o.Expect) != 0 {
			return fmt.Errorf("kv: cas cannot expect both a value and absence")
		}
	}
	return nil
}

// EncodeOp encodes a well-formed operation.
func EncodeOp(o Op) ([]byte, error) {
	if err := o.Check(); err != nil {
		return nil, err
	}
	return wire.Marshal(&o)
}

// DecodeOp decodes an operation and checks it.
func DecodeOp(data []byte) (Op, error) {
	var o Op
	if err := wire.Unmarshal(data, &o); err != nil {
		return Op{}, fmt.Errorf("kv: decode operation: %w", err)
	}
	if err := o.Check(); err != nil {
		return Op{}, err
	}
	return o, nil
}

// Status is the outcome of an operation. Values are part of the encoding: never renumber.
type Status uint8

const (
	// StatusOK: the operation was applied (get: the key exists and Value holds it).
	StatusOK Status = 1
	// StatusNotFound: get found no such key; delete removed nothing.
	StatusNotFound Status = 2
	// StatusConflict: a compare-and-set whose expectation failed; Value holds the current value and
	// Exists says whether the key exists.
	StatusConflict Status = 3
	// StatusInvalid: the operation was malformed; Error says why. Nothing changed.
	StatusInvalid Status = 4
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusNotFound:
		return "not-found"
	case StatusConflict:
		return "conflict"
	case StatusInvalid:
		return "invalid"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Result is the outcome of one operation: the app.Outcome result of a request, encoded with EncodeResult.
type Result struct {
	_ struct{} `cbor:",toarray"`
	// Status says what happened.
	Status Status
	// Value is the value read (get), or the current value (a conflicting cas).
	Value []byte
	// Exists says whether the key exists after a get, or before a conflicting cas.
	Exists bool
	// Error explains StatusInvalid.
	Error string
}

// maxErrorLen bounds Result.Error.
const maxErrorLen = 512

// Check reports whether the result is well formed.
func (r *Result) Check() error {
	switch r.Status {
	case StatusOK, StatusNotFound, StatusConflict, StatusInvalid:
	default:
		return fmt.Errorf("kv: unknown result status %d", uint8(r.Status))
	}
	if len(r.Value) > MaxValueSize {
		return fmt.Errorf("kv: result value of %d bytes exceeds %d", len(r.Value), MaxValueSize)
	}
	if len(r.Error) > maxErrorLen {
		return fmt.Errorf("kv: result error of %d bytes exceeds %d", len(r.Error), maxErrorLen)
	}
	if (r.Status == StatusInvalid) != (r.Error != "") {
		return fmt.Errorf("kv: result status %s with error %q", r.Status, r.Error)
	}
	return nil
}

// EncodeResult encodes a result.
func EncodeResult(r Result) ([]byte, error) {
	if err := r.Check(); err != nil {
		return nil, err
	}
	return wire.Marshal(&r)
}

// DecodeResult decodes a result and checks it.
func DecodeResult(data []byte) (Result, error) {
	var r Result
	if err := wire.Unmarshal(data, &r); err != nil {
		return Result{}, fmt.Errorf("kv: decode result: %w", err)
	}
	if err := r.Check(); err != nil {
		return Result{}, err
	}
	return r, nil
}
