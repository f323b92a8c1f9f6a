package api

import (
	"encoding/base64"
	"encoding/hex"
	"unicode/utf8"

	"github.com/p2pbft/p2pbft/node/api/apitypes"
	"github.com/p2pbft/p2pbft/node/app/kv"
)

func resultJSON(r kv.Result) *apitypes.Result {
	out := &apitypes.Result{Status: r.Status.String(), Exists: r.Exists, Error: r.Error}
	if len(r.Value) > 0 {
		out.ValueBase64 = base64.StdEncoding.EncodeToString(r.Value)
		if utf8.Valid(r.Value) {
			out.Value = string(r.Value)
		}
	}
	return out
}

func hexDigest(d [32]byte) string { return hex.EncodeToString(d[:]) }

// opJSON renders a kv operation for display; keys and values that are not UTF-8 are shown in base64
// with Encoding-less fields left empty.
func opJSON(o kv.Op) *apitypes.Op {
	s := func(b []byte) string {
		if utf8.Valid(b) {
			return string(b)
		}
		return "base64:" + base64.StdEncoding.EncodeToString(b)
	}
	t := o.Type.String()
	return &apitypes.Op{Type: t, Key: s(o.Key), Value: s(o.Value), Expect: s(o.Expect), ExpectAbsent: o.ExpectAbsent}
}
