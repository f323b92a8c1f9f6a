package wire

import "fmt"

// UnmarshalCBOR decodes a digest from a CBOR byte string of exactly 32 bytes. Without it the CBOR library
// would silently zero-pad or truncate a byte string of another length, so two different encodings would
// decode to the same digest; decoders in this project are strict instead.
func (d *Digest) UnmarshalCBOR(data []byte) error {
	var b []byte
	if err := codecOnce().dec.Unmarshal(data, &b); err != nil {
		return err
	}
	if len(b) != len(d) {
		return fmt.Errorf("digest is %d bytes, want %d", len(b), len(d))
	}
	copy(d[:], b)
	return nil
}
