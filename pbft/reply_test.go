package pbft

import (
	"encoding/hex"
	"testing"
)

// ReplyLeafHash is part of the wire format (clients and other implementations rebuild the signed root from
// it): the vector pins it, computed independently as SHA-256(0x00 || "p2pbft/reply/v1\x00" || len(client)
// || client || ts || len(result) || result), integers as 8 bytes big-endian.
func TestReplyLeafHashFormat(t *testing.T) {
	d := ReplyLeafHash([]byte("client"), 7, []byte("result"))
	if got, want := hex.EncodeToString(d[:]), "2af403fb1dec5d53ae8d3f55bd288e3e88b560b8c888a0cb6d0d5a6706e00260"; got != want {
		t.Fatalf("leaf %s, want %s", got, want)
	}
}
