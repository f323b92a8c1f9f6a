package client

import (
	"bytes"
	"strings"
	"testing"

	"github.com/p2pbft/p2pbft/client/session"
	"github.com/p2pbft/p2pbft/node/app/kv"
	"github.com/p2pbft/p2pbft/p2p"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// The largest key-value request a client can build, a compare-and-set with the largest key and two
// values of kv.MaxValueSize, signed as the client signs it, with the longest chain ID, fits the replicas'
// request limit (pbft.DefaultMaxRequestBytes) and the frame limit replicas apply to clients
// (p2p.DefaultMaxClientMessageSize): the limits are documented to agree, and this holds them to it.
func TestWorstCaseCASFitsLimits(t *testing.T) {
	pool, err := session.NewPool(seedKey(t, "limits-client"), 1)
	if err != nil {
		t.Fatal(err)
	}
	key := bytes.Repeat([]byte{0xff}, kv.MaxKeySize)
	expect := bytes.Repeat([]byte{0xfe}, kv.MaxValueSize)
	value := bytes.Repeat([]byte{0xfd}, kv.MaxValueSize)
	op, err := kv.EncodeOp(kv.CAS(key, expect, value))
	if err != nil {
		t.Fatalf("the worst-case cas does not encode: %v", err)
	}
	chainID := strings.Repeat("c", wire.MaxChainIDLen)
	env, _, err := pool.Session(0).NewRequest(chainID, op)
	if err != nil {
		t.Fatal(err)
	}
	if n := pbft.RequestSize(env); n > pbft.DefaultMaxRequestBytes {
		t.Errorf("request size %d exceeds pbft.DefaultMaxRequestBytes %d: the client would refuse a valid cas", n, pbft.DefaultMaxRequestBytes)
	}
	data, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	// A link frame is one kind byte and the encoded envelope (p2p.Host.EncodeLinkFrame); a retransmission
	// is the same size.
	if frame := 1 + len(data); frame > p2p.DefaultMaxClientMessageSize {
		t.Errorf("frame of %d bytes exceeds p2p.DefaultMaxClientMessageSize %d: replicas would reset the stream", frame, p2p.DefaultMaxClientMessageSize)
	}
	// The client's own check agrees with the replicas' default.
	c := &Client{cfg: Config{}.withDefaults()}
	if err := c.checkSize(env); err != nil {
		t.Errorf("the client refuses the worst-case cas: %v", err)
	}
	t.Logf("worst-case cas: op %d bytes, request size %d of %d, frame %d of %d", len(op), pbft.RequestSize(env), pbft.DefaultMaxRequestBytes, 1+len(data), p2p.DefaultMaxClientMessageSize)
}
