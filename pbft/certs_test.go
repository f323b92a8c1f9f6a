package pbft

import (
	"strings"
	"testing"

	"github.com/p2pbft/p2pbft/wire"
)

// The exported certificate checks accept a quorum of well-formed messages and refuse each way a
// certificate can be malformed, whatever the signatures (they check structure only).
func TestCheckCommitCertAndCheckpointProof(t *testing.T) {
	tn := newNet(t, 4, nil)
	set := tn.reps[0].set
	d := wire.Digest{7}
	commit := func(i int, view, seq uint64, d wire.Digest) *wire.Envelope {
		return tn.sign(i, wire.KindCommit, &Commit{View: view, Seq: seq, Digest: d})
	}
	good := []*wire.Envelope{commit(0, 2, 5, d), commit(1, 2, 5, d), commit(3, 2, 5, d)}
	view, digest, err := CheckCommitCert(set, 5, good)
	if err != nil || view != 2 || digest != d {
		t.Fatalf("good certificate: view %d, digest %s, %v", view, digest, err)
	}
	stranger, err := wire.Seal(tn.client(1), testChain, wire.KindCommit, good[2].Payload)
	if err != nil {
		t.Fatal(err)
	}
	other := *good[2]
	other.ChainID = "other"
	bad := map[string][]*wire.Envelope{
		"want 3 to 4":   good[:2],
		"twice":         {good[0], good[1], good[1]},
		"mixes":         {good[0], good[1], commit(3, 3, 5, d)},
		"another chain": {good[0], good[1], &other},
		"where":         {good[0], good[1], tn.sign(3, wire.KindPrepare, &Prepare{View: 2, Seq: 5, Digest: d})},
		"missing":       {good[0], good[1], nil},
		"not authored":  {good[0], good[1], stranger},
		"mixes (seq)":   {commit(0, 2, 6, d), commit(1, 2, 6, d), commit(3, 2, 6, d)},
	}
	for want, cert := range bad {
		if _, _, err := CheckCommitCert(set, 5, cert); err == nil || !strings.Contains(err.Error(), strings.Fields(want)[0]) {
			t.Errorf("%s: %v", want, err)
		}
	}

	ckpt := func(i int, seq uint64, d wire.Digest) *wire.Envelope {
		return tn.sign(i, wire.KindCheckpoint, &Checkpoint{Seq: seq, Digest: d})
	}
	proof := []*wire.Envelope{ckpt(0, 8, d), ckpt(1, 8, d), ckpt(2, 8, d), ckpt(3, 8, d)}
	if err := CheckCheckpointProof(set, 4, 8, d, proof); err != nil {
		t.Fatalf("good proof: %v", err)
	}
	if err := CheckCheckpointProof(set, 4, 0, wire.Digest{}, nil); err != nil {
		t.Fatalf("genesis: %v", err)
	}
	badProofs := []struct {
		seq   uint64
		d     wire.Digest
		proof []*wire.Envelope
		want  string
	}{
		{0, d, nil, "genesis"},
		{6, d, proof, "off the interval"},
		{8, d, proof[:2], "want 3 to 4"},
		{8, d, []*wire.Envelope{proof[0], proof[1], proof[0]}, "twice"},
		{8, wire.Digest{8}, proof, "another checkpoint"},
		{8, d, []*wire.Envelope{proof[0], proof[1], good[0]}, "where"},
	}
	for _, c := range badProofs {
		if err := CheckCheckpointProof(set, 4, c.seq, c.d, c.proof); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", c.want, err)
		}
	}
}
