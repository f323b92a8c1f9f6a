package pbft

import (
	"bytes"
	"testing"

	"github.com/p2pbft/p2pbft/wire"
)

// Fuzz targets for every decoder, seeded with valid encodings (f.Add) and the checked-in corpus under
// testdata/fuzz. Each checks that decoding never panics and that what decodes re-encodes stably.

// seedNet returns a small network that went through a view change, checkpoints and replies, and the
// envelopes it exchanged, as fuzz seeds.
func seedNet(t testing.TB) (*tnet, []*wire.Envelope) {
	tn := newNet(t, 4, func(c *Config) { c.CheckpointInterval = 2 })
	var seen []*wire.Envelope
	tn.filter = func(m tmsg) bool { seen = append(seen, m.env); return true }
	for ts := uint64(1); ts <= 3; ts++ {
		_ = tn.propose(0, tn.request(1, ts, "abc"))
		tn.run()
	}
	for i := 0; i < 4; i++ {
		tn.reps[i].startViewChange(1)
		tn.drain(i)
	}
	tn.run()
	seen = append(seen, tn.replies[string(tn.client(1).PublicKey())]...)
	return tn, seen
}

func payloadsOf(t testing.TB, kind wire.Kind) [][]byte {
	_, envs := seedNet(t)
	var out [][]byte
	for _, e := range envs {
		if e.Kind == kind {
			out = append(out, e.Payload)
		}
	}
	return out
}

// roundTrip checks that v re-encodes to bytes that decode and re-encode identically.
func roundTrip[T any](t *testing.T, v *T, decode func([]byte) (*T, error)) {
	b1, err := wire.Marshal(v)
	if err != nil {
		t.Fatalf("re-encode: %v", err)
	}
	v2, err := decode(b1)
	if err != nil {
		t.Fatalf("decode of re-encoded value: %v", err)
	}
	b2, err := wire.Marshal(v2)
	if err != nil || !bytes.Equal(b1, b2) {
		t.Fatalf("encoding not stable: %x vs %x (%v)", b1, b2, err)
	}
}

func fuzzDecoder[T any](f *testing.F, kind wire.Kind, decode func([]byte) (*T, error), extra ...[]byte) {
	for _, p := range payloadsOf(f, kind) {
		f.Add(p)
	}
	for _, p := range extra {
		f.Add(p)
	}
	f.Add([]byte{})
	f.Add([]byte{0x80})
	f.Add([]byte{0x84, 0x00, 0x01, 0x40, 0xf6})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := decode(b)
		if err != nil {
			return
		}
		roundTrip(t, v, decode)
	})
}

func FuzzDecodeRequest(f *testing.F) { fuzzDecoder(f, wire.KindRequest, DecodeRequest) }
func FuzzDecodePrePrepare(f *testing.F) {
	fuzzDecoder(f, wire.KindPrePrepare, DecodePrePrepare)
}
func FuzzDecodePrepare(f *testing.F)    { fuzzDecoder(f, wire.KindPrepare, DecodePrepare) }
func FuzzDecodeCommit(f *testing.F)     { fuzzDecoder(f, wire.KindCommit, DecodeCommit) }
func FuzzDecodeCheckpoint(f *testing.F) { fuzzDecoder(f, wire.KindCheckpoint, DecodeCheckpoint) }
func FuzzDecodeViewChange(f *testing.F) { fuzzDecoder(f, wire.KindViewChange, DecodeViewChange) }
func FuzzDecodeNewView(f *testing.F)    { fuzzDecoder(f, wire.KindNewView, DecodeNewView) }
func FuzzDecodeReplyHeader(f *testing.F) {
	fuzzDecoder(f, wire.KindReply, DecodeReplyHeader)
}

func FuzzDecodeFetch(f *testing.F) {
	p, _ := wire.Marshal(&Fetch{View: 1, Active: true, Executed: 3, Items: []FetchItem{{Seq: 4, NeedBody: true}, {Seq: 5, Digest: wire.Digest{1}}}})
	fuzzDecoder(f, wire.KindFetch, DecodeFetch, p)
}

func FuzzDecodeFetchReply(f *testing.F) {
	tn, envs := seedNet(f)
	var cert, msgs []*wire.Envelope
	for _, e := range envs {
		switch e.Kind {
		case wire.KindCommit:
			cert = append(cert, e.WithoutBody())
		case wire.KindPrePrepare, wire.KindPrepare:
			msgs = append(msgs, e.WithoutBody())
		}
	}
	p, _ := wire.Marshal(&FetchReply{Executed: 3, Proof: tn.reps[0].stable.proof, Slots: []FetchedSlot{
		{Seq: 1, Batch: []byte{0x80}, Cert: cert[:3]}, {Seq: 2, Messages: msgs[:3]}}})
	fuzzDecoder(f, wire.KindFetchReply, DecodeFetchReply, p)
}

func FuzzDecodeBatch(f *testing.F) {
	_, envs := seedNet(f)
	for _, e := range envs {
		if e.Kind == wire.KindPrePrepare && len(e.Body) > 0 {
			f.Add(e.Body)
		}
	}
	f.Add([]byte{})
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		reqs, err := DecodeBatch(b)
		if err != nil {
			return
		}
		b2, err := EncodeBatch(reqs)
		if err != nil {
			t.Fatal(err)
		}
		reqs2, err := DecodeBatch(b2)
		if err != nil || len(reqs2) != len(reqs) {
			t.Fatalf("batch round trip: %v", err)
		}
		for i := range reqs {
			if reqs[i].ID() != reqs2[i].ID() {
				t.Fatal("batch round trip changed a request")
			}
		}
	})
}

func FuzzDecodeReplyProof(f *testing.F) {
	_, envs := seedNet(f)
	for _, e := range envs {
		if e.Kind == wire.KindReply {
			f.Add(e.Body)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := DecodeReplyProof(b)
		if err != nil {
			return
		}
		roundTrip(t, v, DecodeReplyProof)
	})
}

// FuzzDecodeReplyBundle: any bytes decode to an error or to a bundle whose every item either fails its
// proof or proves a reply of its header; valid bundles re-encode stably.
func FuzzDecodeReplyBundle(f *testing.F) {
	tn, _ := seedNet(f)
	for _, b := range tn.bundles {
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0x82, 0xf6, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		ob, err := DecodeReplyBundle(b)
		if err != nil {
			return
		}
		if ob.Verify() == nil {
			for i := range ob.Leaves {
				r := ob.Reply(i)
				if r.Seq != ob.Header.Seq || r.Replica != ob.Header.Replica || !bytes.Equal(r.Client, ob.Leaves[i].Client) {
					t.Fatalf("item %d: %+v does not match its header %+v", i, r, ob.Header)
				}
			}
		}
		rb := ReplyBundle{Header: ob.Envelope, Leaves: ob.Leaves, Nodes: ob.nodes}
		b1, err := wire.Marshal(&rb)
		if err != nil {
			t.Fatal(err)
		}
		ob2, err := DecodeReplyBundle(b1)
		if err != nil {
			t.Fatalf("re-encoded bundle: %v", err)
		}
		b2, _ := wire.Marshal(&ReplyBundle{Header: ob2.Envelope, Leaves: ob2.Leaves, Nodes: ob2.nodes})
		if !bytes.Equal(b1, b2) {
			t.Fatal("bundle encoding not stable")
		}
	})
}

func FuzzDecodeNotice(f *testing.F) {
	n, _ := wire.Marshal(&Notice{Client: make([]byte, 32), Timestamp: 9, Reason: "stale"})
	f.Add(n)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := DecodeNotice(b)
		if err != nil {
			return
		}
		roundTrip(t, v, DecodeNotice)
	})
}

func FuzzOpenReply(f *testing.F) {
	_, envs := seedNet(f)
	for _, e := range envs {
		if e.Kind == wire.KindReply {
			f.Add(e.Payload, e.Body)
		}
	}
	f.Fuzz(func(t *testing.T, payload, body []byte) {
		e := &wire.Envelope{ChainID: testChain, Kind: wire.KindReply, Author: make([]byte, 32), Payload: payload, Body: body}
		r, err := OpenReply(e)
		if err != nil {
			return
		}
		if r.Timestamp == 0 && r.Client == nil && r.Result == nil && r.Seq == 0 {
			return
		}
	})
}

func FuzzDecodeHardState(f *testing.F) {
	tn, _ := seedNet(f)
	for i := 0; i < 4; i++ {
		b, _ := tn.stores[i].hs.Marshal()
		f.Add(b)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := DecodeHardState(b)
		if err != nil {
			return
		}
		roundTrip(t, v, DecodeHardState)
	})
}

func FuzzDecodeEntry(f *testing.F) {
	tn, _ := seedNet(f)
	for _, e := range tn.stores[1].entries {
		b, _ := e.Marshal()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := DecodeEntry(b)
		if err != nil {
			return
		}
		roundTrip(t, v, DecodeEntry)
	})
}

func FuzzDecodeClientTable(f *testing.F) {
	tn, _ := seedNet(f)
	f.Add(tn.stores[1].hs.Snapshot.ClientTable)
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := DecodeClientTable(b)
		if err != nil {
			return
		}
		ct, err := clientTableFrom(b)
		if err != nil {
			t.Fatalf("valid table does not load: %v", err)
		}
		b2, err := ct.encode()
		if err != nil {
			t.Fatal(err)
		}
		recs2, err := DecodeClientTable(b2)
		if err != nil || len(recs2) != len(recs) {
			t.Fatalf("client table round trip: %v", err)
		}
	})
}

func FuzzDecodeSnapshot(f *testing.F) {
	tn, _ := seedNet(f)
	b, _ := tn.stores[1].hs.Snapshot.Marshal()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := DecodeSnapshot(b)
		if err != nil {
			return
		}
		roundTrip(t, v, DecodeSnapshot)
	})
}

// FuzzStep feeds a replica arbitrary payloads and bodies under every kind, signed by a replica (as if the
// driver verified them): it must never panic, and what it rejects as invalid must leave no trace in the
// persisted log.
func FuzzStep(f *testing.F) {
	_, envs := seedNet(f)
	for _, e := range envs {
		f.Add(uint16(e.Kind), e.Payload, e.Body, uint8(1))
	}
	f.Fuzz(func(t *testing.T, kind uint16, payload, body []byte, from uint8) {
		tn := newNet(t, 4, func(c *Config) { c.CheckpointInterval = 2 })
		_ = tn.propose(0, tn.request(1, 1, "abc"))
		tn.run()
		k := wire.Kind(kind)
		if !k.Valid() {
			return
		}
		src := tn.keys[int(from)%4]
		e, err := wire.Seal(src, testChain, k, payload)
		if err != nil {
			return
		}
		e.Body = body
		r := tn.reps[2]
		before := len(tn.stores[2].entries)
		err = r.Step(e)
		tn.drain(2)
		var se *StepError
		if err != nil && asStepError(err, &se) && se.Reason.Invalid() && len(tn.stores[2].entries) != before {
			t.Fatalf("invalid %s (%s) changed the log", k, se.Reason)
		}
	})
}

func asStepError(err error, se **StepError) bool {
	e, ok := err.(*StepError)
	if ok {
		*se = e
	}
	return ok
}
