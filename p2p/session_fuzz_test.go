package p2p

import (
	"bytes"
	"errors"
	"testing"

	"github.com/p2pbft/p2pbft/wire"
)

// FuzzDecodeSessionResponse checks the session's response decoder (what a client session's reader
// does with every frame), then the response decoding the waiting caller does: nothing panics, what is
// accepted carries a request number and a known status, and it re-encodes to the same bytes.
//
//	go test -run - -fuzz FuzzDecodeSessionResponse -fuzztime 60s ./p2p/
func FuzzDecodeSessionResponse(f *testing.F) {
	k := testKeys(f, "fuzz", 1)[0]
	e, _ := wire.Seal(k, "fuzz-chain", wire.KindReply, []byte("response"))
	ok, _ := appendResponse(appendSessionID(nil, 42), e, nil)
	bad, _ := appendResponse(appendSessionID(nil, 1<<63), nil, errors.New("request rejected: signature"))
	f.Add(ok)
	f.Add(bad)
	f.Add(appendSessionID(nil, 3))
	f.Add(append(appendSessionID(nil, 3), 2))
	f.Add([]byte{0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		id, resp, err := decodeSessionResponse(b)
		if err != nil {
			return
		}
		if len(resp) == 0 || (resp[0] != statusOK && resp[0] != statusError) {
			t.Fatalf("accepted a response without a known status: %x", resp)
		}
		env, err := decodeResponse(resp)
		var re *RemoteError
		var out []byte
		switch {
		case errors.As(err, &re):
			out, err = appendResponse(appendSessionID(nil, id), nil, re)
			if err != nil {
				t.Fatal(err)
			}
			// The error message is re-encoded with its prefix; only its own bytes must match.
			if _, r2, err := decodeSessionResponse(out); err != nil {
				t.Fatal(err)
			} else if _, err := decodeResponse(r2); !errors.As(err, &re) {
				t.Fatalf("error response decoded as %v", err)
			}
			return
		case err != nil:
			return
		}
		out, err = appendResponse(appendSessionID(nil, id), env, nil)
		if err != nil {
			t.Fatal(err)
		}
		id2, r2, err := decodeSessionResponse(out)
		if err != nil || id2 != id {
			t.Fatalf("round trip: id %d -> %d, %v", id, id2, err)
		}
		env2, err := decodeResponse(r2)
		if err != nil || env2.ID() != env.ID() || !bytes.Equal(env2.Sig, env.Sig) {
			t.Fatalf("round trip of the envelope: %v", err)
		}
	})
}

// FuzzSplitSessionFrame checks the server's split of a request frame: the content is never empty and
// the request number is the frame's first 8 bytes.
func FuzzSplitSessionFrame(f *testing.F) {
	f.Add(append(appendSessionID(nil, 9), "envelope"...))
	f.Add(appendSessionID(nil, 9))
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		id, content, err := splitSessionFrame(b)
		if err != nil {
			if len(b) > sessionIDSize {
				t.Fatalf("frame of %d bytes refused: %v", len(b), err)
			}
			return
		}
		if len(content) == 0 || !bytes.Equal(append(appendSessionID(nil, id), content...), b) {
			t.Fatal("split does not give the frame back")
		}
	})
}
