package wire

import (
	"fmt"
	"sync"

	"github.com/fxamacker/cbor/v2"
)

// Limits that bound every decode. A single wire message is at most MaxMessageSize bytes; the p2p layer and
// the node may set tighter limits of their own.
const (
	MaxMessageSize   = 64 << 20 // hard upper bound on any encoded message
	maxArrayElements = 1 << 20
	maxNestedLevels  = 16
)

type codec struct {
	enc cbor.EncMode
	dec cbor.DecMode
}

var codecOnce = sync.OnceValue(func() codec {
	enc, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(fmt.Sprintf("wire: cbor encode options: %v", err))
	}
	dec, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   maxNestedLevels,
		MaxArrayElements:  maxArrayElements,
		MaxMapPairs:       maxArrayElements,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(fmt.Sprintf("wire: cbor decode options: %v", err))
	}
	return codec{enc: enc, dec: dec}
})

// Marshal encodes v with the project's deterministic CBOR encoding.
func Marshal(v any) ([]byte, error) {
	b, err := codecOnce().enc.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("wire: encode %T: %w", v, err)
	}
	return b, nil
}

// Unmarshal decodes data into v with the project's strict, bounded CBOR decoding. Trailing bytes after the
// first item are an error. The input must not exceed MaxMessageSize.
func Unmarshal(data []byte, v any) error {
	if len(data) > MaxMessageSize {
		return fmt.Errorf("wire: decode %T: %d bytes exceeds the %d-byte limit", v, len(data), MaxMessageSize)
	}
	if err := codecOnce().dec.Unmarshal(data, v); err != nil {
		return fmt.Errorf("wire: decode %T: %w", v, err)
	}
	return nil
}
