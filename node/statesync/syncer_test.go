package statesync

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

func TestVerifyBlock(t *testing.T) {
	f := newFixture(t, 3, 3)
	good := encode(t, f.blocks[2])
	b, err := VerifyBlock(good, 2, checkCert)
	if err != nil {
		t.Fatal(err)
	}
	if b.Block.Hash() != f.blocks[2].Hash() || len(b.Requests) != 1 || len(b.Cert) != 1 {
		t.Fatalf("verified block %+v", b)
	}

	forgedDigest := *f.blocks[2]
	forgedDigest.BatchDigest = wire.Digest{1}
	otherBatch := *f.blocks[2]
	otherBatch.Batch = f.blocks[3].Batch
	notRequest := *f.blocks[2]
	notRequest.Batch = notRequest.Cert
	for name, tc := range map[string]struct {
		data []byte
		want string
	}{
		"garbage":           {[]byte{0xff, 0x01}, "decode block"},
		"wrong height":      {good, "block at height 2, want 3"},
		"forged digest":     {encode(t, &forgedDigest), "block 2: batch digest"},
		"other batch":       {encode(t, &otherBatch), "block 2: batch digest"},
		"not a request":     {encode(t, &notRequest), "block 2: request 0 is a"},
		"other certificate": {encode(t, makeBlock(t, 2, f.blocks[1].Hash(), f.blocks[2].AppDigest, forgerKey)), "block 2: certificate not signed by a quorum"},
	} {
		height := uint64(2)
		if name == "wrong height" {
			height = 3
		}
		if _, err := VerifyBlock(tc.data, height, checkCert); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error mentioning %q", name, err, tc.want)
		}
	}
}

func TestSyncerBlocks(t *testing.T) {
	f := newFixture(t, 200, 0)
	h := newHarness(t, f, honest, honest, honest)
	h.s.o.BlockSyncMax = 140
	h.s.o.ChunkBytes = 1 << 20 // pages bounded by pageBlocks, not by bytes
	h.clock.step = time.Second // a progress line every other reading
	h.start(pbft.StateTransfer{Seq: 150, Applied: 10})
	h.wait("the transfer", func() bool { return h.m.get("blocks/ok") == 1 })
	h.wait("the transfer's end", func() bool { return h.s.Progress() == nil })

	h.ins.mu.Lock()
	defer h.ins.mu.Unlock()
	if len(h.ins.applied) != 140 {
		t.Fatalf("%d blocks applied, want 140 (11..150)", len(h.ins.applied))
	}
	for i, b := range h.ins.applied {
		if want := uint64(11 + i); b.Block.Height != want || b.Block.Hash() != f.blocks[want].Hash() {
			t.Fatalf("applied block %d is %d (%s), want %d", i, b.Block.Height, b.Block.Hash(), want)
		}
	}
	// Pages of pageBlocks, the progress counted after each page.
	if len(h.ins.progress) != 3 {
		t.Fatalf("progress at %d pages, want 3: %+v", len(h.ins.progress), h.ins.progress)
	}
	for i, p := range h.ins.progress {
		if p.Target != 150 || p.Method != "blocks" || p.Blocks != uint64(64*i) || p.Peer < 1 || p.Peer > 3 {
			t.Errorf("progress at page %d: %+v", i, p)
		}
	}
	if h.m.blocks != 140 || h.m.get("blocks/failed") != 0 || h.m.get("snapshot/ok") != 0 {
		t.Errorf("metrics %+v", h.m)
	}
	if len(h.logs.find("state transfer started")) != 1 || len(h.logs.find("state transfer progress")) == 0 {
		t.Errorf("no start or progress logged: %+v", h.logs.recs)
	}
	done := h.logs.find("state transfer done")
	if len(done) != 1 || done[0].attrs["method"] != "blocks" || done[0].attrs["blocks_fetched"] != "140" {
		t.Errorf("end logged as %+v", done)
	}
}

// Peers that send garbage or blocks that fail a check are refused, skipped, and the blocks come from the
// honest one.
func TestSyncerBlocksRefusesBadPeers(t *testing.T) {
	f := newFixture(t, 100, 0)
	h := newHarness(t, f, garbage, forged, uncertain, wrongKind, shortBlock, honest, garbage)
	h.s.o.BlockSyncMax = 100
	h.start(pbft.StateTransfer{Seq: 100, Applied: 0})
	h.wait("the transfer", func() bool { return h.m.get("blocks/ok") == 1 })
	h.wait("the transfer's end", func() bool { return h.s.Progress() == nil })

	h.ins.mu.Lock()
	defer h.ins.mu.Unlock()
	if len(h.ins.applied) != 100 {
		t.Fatalf("%d blocks applied, want 100", len(h.ins.applied))
	}
	for i, b := range h.ins.applied {
		if b.Block.Hash() != f.blocks[i+1].Hash() {
			t.Fatalf("block %d applied is not the certified one", i+1)
		}
	}
	bad := h.s.cur.bad
	if bad[6] || len(bad) == 0 {
		t.Errorf("peers marked bad: %v (the honest one is 6)", bad)
	}
}

// When every peer fails, the attempt fails with the reason, nothing is applied, and after two attempts the
// syncer falls back to a snapshot.
func TestSyncerBlocksAllPeersBad(t *testing.T) {
	for _, tc := range []struct{ mode, want string }{
		{forged, "batch digest"},
		{uncertain, "certificate not signed by a quorum"},
		{garbage, "statesync: decode response"},
		{wrongKind, "answered with a request"},
		{shortBlock, "want 1"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			f := newFixture(t, 20, 20)
			h := newHarness(t, f, tc.mode, tc.mode, tc.mode)
			h.start(pbft.StateTransfer{Seq: 20, Digest: f.digest, Applied: 0})
			h.waitFailure(tc.want)
			h.wait("a snapshot attempt", func() bool { return h.m.get("snapshot/ok")+h.m.get("snapshot/failed") > 0 })
			h.s.Stop()
			if h.m.get("blocks/failed") < 2 || h.m.get("blocks/ok") != 0 {
				t.Errorf("metrics %+v", h.m.transfers)
			}
			if len(h.ins.applied) != 0 {
				t.Errorf("%d blocks applied", len(h.ins.applied))
			}
		})
	}
}

func TestSyncerSnapshot(t *testing.T) {
	f := newFixture(t, 100, 100)
	h := newHarness(t, f, honest, honest, honest)
	h.clock.step = time.Second
	h.start(pbft.StateTransfer{Seq: 100, Digest: f.digest, Applied: 0})
	h.wait("the transfer", func() bool { return h.m.get("snapshot/ok") == 1 })
	h.wait("the transfer's end", func() bool { return h.s.Progress() == nil })

	h.ins.mu.Lock()
	defer h.ins.mu.Unlock()
	s := h.ins.installed
	if s == nil {
		t.Fatal("nothing installed")
	}
	if s.Seq != 100 || s.AppDigest != f.appDigest || !bytes.Equal(s.Table, f.table) || s.Block.Hash() != f.blocks[100].Hash() {
		t.Fatalf("installed %d %s, table %q, block %s", s.Seq, s.AppDigest, s.Table, s.Block.Hash())
	}
	r := h.ins.restores[0]
	if len(h.ins.restores) != 1 || !bytes.Equal(r.got, f.state) || !r.finished || r.aborted {
		t.Fatalf("restores %d; restored %q, finished %v, aborted %v", len(h.ins.restores), r.got, r.finished, r.aborted)
	}
	// 300 bytes of state in chunks of 64, 100 of table in parts of 64.
	if r.applies != 5 || h.m.bytes != 400 {
		t.Errorf("%d chunks applied, %d bytes counted", r.applies, h.m.bytes)
	}
	p := h.ins.progress
	if len(p) != 1 || p[0].Method != "snapshot" || p[0].Target != 100 || p[0].Bytes != 400 || p[0].Chunks != 5 || p[0].Blocks != 0 {
		t.Errorf("progress before installing: %+v", p)
	}
	found := h.logs.find("state transfer: snapshot found")
	if len(found) != 1 || found[0].attrs["providers"] != "3" {
		t.Errorf("snapshot found logged as %+v", found)
	}
	if len(h.logs.find("state transfer progress")) == 0 {
		t.Error("no progress logged")
	}
	done := h.logs.find("state transfer done")
	if len(done) != 1 || done[0].attrs["method"] != "snapshot" || done[0].attrs["bytes"] != "400" || done[0].attrs["chunks"] != "5" {
		t.Errorf("end logged as %+v", done)
	}
}

// A manifest that does not match the certified checkpoint, a client table or a state with another digest:
// each is refused, its peer skipped, and the snapshot installed is the certified one.
func TestSyncerSnapshotRefusesLies(t *testing.T) {
	f := newFixture(t, 64, 64)
	h := newHarness(t, f, lying, badTable, badState, honest, badState, lying)
	h.start(pbft.StateTransfer{Seq: 64, Digest: f.digest, Applied: 0})
	h.wait("the transfer", func() bool { return h.m.get("snapshot/ok") == 1 })
	h.wait("the transfer's end", func() bool { return h.s.Progress() == nil })

	h.ins.mu.Lock()
	defer h.ins.mu.Unlock()
	s := h.ins.installed
	if s == nil || s.AppDigest != f.appDigest || !bytes.Equal(s.Table, f.table) {
		t.Fatalf("installed %+v", s)
	}
	last := h.ins.restores[len(h.ins.restores)-1]
	if !bytes.Equal(last.got, f.state) || !last.finished {
		t.Fatalf("restored %q", last.got)
	}
	for _, r := range h.ins.restores[:len(h.ins.restores)-1] {
		if !r.aborted || r.finished {
			t.Errorf("a restore that failed was not aborted")
		}
	}
	if h.s.cur.bad[1] || h.s.cur.bad[6] {
		t.Errorf("a lying peer was marked bad, but its manifest was only ignored: %v", h.s.cur.bad)
	}
}

func TestSyncerSnapshotNoAgreement(t *testing.T) {
	f := newFixture(t, 64, 64)
	h := newHarness(t, f, lying, lying, honest)
	h.start(pbft.StateTransfer{Seq: 64, Digest: f.digest, Applied: 0})
	h.waitFailure("no 2 replicas agree on the snapshot at 64 (1 valid manifests")
	h.waitFailure("manifest does not match the certified checkpoint")
	h.s.Stop()
	if h.ins.installed != nil || len(h.ins.restores) != 0 || h.m.get("snapshot/failed") == 0 {
		t.Errorf("installed %v, %d restores, metrics %v", h.ins.installed, len(h.ins.restores), h.m.transfers)
	}
}

func TestSyncerSnapshotWrongState(t *testing.T) {
	f := newFixture(t, 64, 64)
	h := newHarness(t, f, badState, badState, badState)
	h.start(pbft.StateTransfer{Seq: 64, Digest: f.digest, Applied: 0})
	h.waitFailure("restored state digest mismatch")
	h.wait("a second failure", func() bool { return h.m.get("snapshot/failed") >= 2 })
	h.s.Stop()
	h.ins.mu.Lock()
	defer h.ins.mu.Unlock()
	if h.ins.installed != nil {
		t.Fatal("a state with another digest was installed")
	}
	for i, r := range h.ins.restores {
		if !r.aborted || r.finished {
			t.Errorf("restore %d: aborted %v, finished %v", i, r.aborted, r.finished)
		}
	}
}

func TestSyncerSnapshotBadTable(t *testing.T) {
	f := newFixture(t, 64, 64)
	h := newHarness(t, f, badTable, badTable, badTable)
	h.start(pbft.StateTransfer{Seq: 64, Digest: f.digest, Applied: 0})
	h.waitFailure("client table does not match the certified digest")
	h.s.Stop()
	if len(h.ins.restores) != 0 {
		t.Error("a restore started without a certified client table")
	}
}

// A provider whose client table does not match condemns only itself: the next provider's honest table is
// taken in the same attempt (a stale error once made every later provider look bad too, so the attempt
// failed and the transfer waited for a retry).
func TestSyncerSnapshotTableFromNextProvider(t *testing.T) {
	f := newFixture(t, 64, 64)
	h := newHarness(t, f, badTable, honest, honest)
	h.start(pbft.StateTransfer{Seq: 64, Digest: f.digest, Applied: 0})
	h.wait("the transfer", func() bool { return h.m.get("snapshot/ok") == 1 })
	h.wait("the transfer's end", func() bool { return h.s.Progress() == nil })
	if got := h.m.get("snapshot/failed"); got != 0 {
		t.Fatalf("%d failed attempts: an honest provider's table was refused after a bad one", got)
	}
	h.ins.mu.Lock()
	defer h.ins.mu.Unlock()
	if s := h.ins.installed; s == nil || !bytes.Equal(s.Table, f.table) {
		t.Fatalf("installed %+v", s)
	}
}

// A snapshot copy keeps its target when a newer one comes, for a while; Tick moves to the newer one later,
// if the replica still needs it. Settled ends the transfer, counted as done when the replica reached it.
func TestSyncerRetarget(t *testing.T) {
	f := newFixture(t, 1, 0)
	h := newHarness(t, f, silent, silent, silent)
	h.start(pbft.StateTransfer{Seq: 100, Applied: 0})
	h.wait("a snapshot copy", func() bool { p := h.s.Progress(); return p != nil && p.Method == "snapshot" })

	h.start(pbft.StateTransfer{Seq: 200, Applied: 0})
	h.s.Tick(t.Context())
	if p := h.s.Progress(); p.Target != 100 {
		t.Fatalf("the copy to 100 was replaced by %d at once", p.Target)
	}
	h.clock.advance(keepTransferFor)
	h.s.Tick(t.Context())
	if p := h.s.Progress(); p.Target != 200 {
		t.Fatalf("after %v the transfer is to %d, want 200", keepTransferFor, p.Target)
	}
	h.start(pbft.StateTransfer{Seq: 150, Applied: 0}) // older: ignored
	if p := h.s.Progress(); p.Target != 200 {
		t.Fatalf("an older target replaced the transfer: %+v", p)
	}

	// A newer target the replica no longer needs is dropped; the running transfer goes on.
	h.wait("a snapshot copy", func() bool { p := h.s.Progress(); return p != nil && p.Method == "snapshot" })
	h.start(pbft.StateTransfer{Seq: 300, Applied: 0})
	h.rep.mu.Lock()
	h.rep.needs = false
	h.rep.mu.Unlock()
	h.clock.advance(keepTransferFor)
	h.s.Tick(t.Context())
	if p := h.s.Progress(); p == nil || p.Target != 200 || h.s.next != nil {
		t.Fatalf("transfer %+v, next %v", p, h.s.next)
	}

	h.s.Settled(250)
	if h.s.Progress() != nil {
		t.Fatal("a transfer still runs")
	}
	if got := h.m.get("snapshot/ok"); got != 1 {
		t.Errorf("%d transfers counted done, want 1 (the one the replica reached)", got)
	}
	if n := len(h.logs.find("state transfer started")); n != 2 {
		t.Errorf("%d transfers started, want 2", n)
	}
}
