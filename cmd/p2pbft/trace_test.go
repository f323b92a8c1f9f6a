package main

import (
	"encoding/json"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/internal/timeline"
	"github.com/p2pbft/p2pbft/testnet"
)

// A committed slot appears in the merged trace of a 4-replica testnet with the records of all four
// replicas, from --dir and from --api alike, as JSON and as text.
func TestTraceMergesReplicas(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tn")
	if out, err := run(t, "testnet", "init", "--dir", dir, "--n", "4"); err != nil {
		t.Fatalf("testnet init: %v\n%s", err, out)
	}
	tn, err := testnet.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	nodes := tn.Nodes()
	for _, ni := range nodes {
		stop := startHome(t, filepath.Join(dir, ni.Home), ni.API)
		defer stop()
	}
	if code, body := httpDo(t, "POST", "http://"+nodes[0].API+"/v1/tx", `{"op":{"type":"put","key":"k","value":"v"}}`); code != 200 {
		t.Fatalf("tx: %d %s", code, body)
	}

	// The slot is committed; its last records (durable, replies) may still be coming at the backups.
	var m timeline.Trace
	var slot *timeline.Slot
	deadline := time.Now().Add(30 * time.Second)
	for slot == nil {
		out, err := run(t, "trace", "--dir", dir, "--json")
		if err != nil {
			t.Fatalf("trace --dir: %v\n%s", err, out)
		}
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatalf("%v in %s", err, out)
		}
		for i := range m.Slots {
			s := &m.Slots[i]
			if s.Requests == 0 || len(s.Replicas) != 4 {
				continue
			}
			complete := true
			for _, r := range s.Replicas {
				complete = complete && r.Committed != 0 && r.Durable != 0
			}
			if complete {
				slot = s
			}
		}
		if slot == nil && time.Now().After(deadline) {
			t.Fatalf("no slot with a request committed at all 4 replicas: %+v", m)
		}
		if slot == nil {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if len(m.Sources) != 4 || slot.Primary != 0 || slot.Origin == 0 || slot.Bytes == 0 {
		t.Fatalf("sources %+v, slot %+v", m.Sources, *slot)
	}
	// A replica that came up late may have committed the slot from a fetched certificate: its record
	// then lists no votes, but the quorum that committed it (3 of 4) lists theirs.
	voted := 0
	for i, r := range slot.Replicas {
		if r.Replica != i || r.Committed < slot.Origin || r.Executed < r.Committed {
			t.Fatalf("replica %d's record: %+v", i, r)
		}
		if len(r.Commits) > 0 {
			voted++
		}
	}
	if voted < 3 {
		t.Fatalf("%d replicas list the COMMITs they received, want a quorum of 3: %+v", voted, slot.Replicas)
	}

	pics := t.TempDir()
	out, err := run(t, "trace", "--api", nodes[0].API, "--api", nodes[1].API, "--api", nodes[2].API,
		"--api", nodes[3].API, "--from", fmt.Sprint(slot.Seq), "--limit", "1",
		"--png", filepath.Join(pics, "trace.png"), "--phases", filepath.Join(pics, "phases.png"))
	if err != nil {
		t.Fatalf("trace --api: %v\n%s", err, out)
	}
	t.Logf("p2pbft trace --from %d --limit 1:\n%s", slot.Seq, out)
	if !strings.Contains(out, fmt.Sprintf("seq %d  view %d  primary 0", slot.Seq, slot.View)) ||
		!strings.Contains(out, "0 (P)") || strings.Count(out, "\n  ") != 5 {
		t.Fatalf("text trace:\n%s", out)
	}
	for _, name := range []string{"trace.png", "phases.png"} {
		f, err := os.Open(filepath.Join(pics, name))
		if err != nil {
			t.Fatalf("--png/--phases: %v", err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil || img.Bounds().Dx() < 500 {
			t.Fatalf("%s: %v, %v", name, err, img)
		}
	}

	// The merged records saved with --json are read back with --in, as from a result folder.
	saved, err := run(t, "trace", "--dir", dir, "--json")
	if err != nil {
		t.Fatal(err)
	}
	savedPath := filepath.Join(pics, "trace.json")
	if err := os.WriteFile(savedPath, []byte(saved), 0o644); err != nil {
		t.Fatal(err)
	}
	again, err := run(t, "trace", "--in", savedPath, "--from", fmt.Sprint(slot.Seq), "--limit", "1")
	if err != nil || !strings.Contains(again, fmt.Sprintf("seq %d  view %d  primary 0", slot.Seq, slot.View)) {
		t.Fatalf("trace --in: %v\n%s", err, again)
	}
	if _, err := run(t, "trace", "--in", savedPath, "--dir", dir); exitCode(err) != exitUsage {
		t.Fatalf("trace with --in and --dir: %v", err)
	}
	if _, err := run(t, "trace", "--in", filepath.Join(pics, "trace.png")); err == nil || !strings.Contains(err.Error(), "trace.png") {
		t.Fatalf("trace --in of a file that is not a trace: %v", err)
	}

	if _, err := run(t, "trace"); exitCode(err) != exitUsage {
		t.Fatalf("trace without replicas: %v", err)
	}
	if _, err := run(t, "trace", "--dir", dir, "--api", nodes[0].API); exitCode(err) != exitUsage {
		t.Fatalf("trace with --dir and --api: %v", err)
	}
	if out, err := run(t, "trace", "--api", closedAddr(t), "--timeout", "5s"); exitCode(err) != exitUnavailable {
		t.Fatalf("trace of a replica that is down: %v\n%s", err, out)
	}
}

// start --trace=false turns the records off: the replica says so, and trace warns about it.
func TestStartTraceOff(t *testing.T) {
	api, stop := startSolo(t, "--trace=false")
	defer stop()
	code, body := httpDo(t, "GET", "http://"+api+"/v1/trace", "")
	if code != 200 || !strings.Contains(body, `"enabled": false`) {
		t.Fatalf("/v1/trace: %d %s", code, body)
	}
	out, err := run(t, "trace", "--api", api)
	if err != nil || !strings.Contains(out, "trace.enabled is off") || !strings.Contains(out, "(no trace records)") {
		t.Fatalf("trace: %v\n%s", err, out)
	}
}
