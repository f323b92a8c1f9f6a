package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/p2pbft/p2pbft/node/signstate"
)

// reset refuses while the replica runs, says what it would delete without --yes, then deletes the data
// and keeps the key, config, genesis and signed state; the replica starts again from height 0.
func TestReset(t *testing.T) {
	h := filepath.Join(t.TempDir(), "solo")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	apiAddr := ln.Addr().String()
	ln.Close()
	initHome(t, h, "--api", apiAddr)
	writeGenesis(t, h, loadKey(t, h))
	stop := startHome(t, h, apiAddr)
	for i := range 3 {
		code, body := httpDo(t, "POST", "http://"+apiAddr+"/v1/tx", fmt.Sprintf(`{"op":{"type":"put","key":"k%d","value":"v"}}`, i))
		if code != 200 {
			t.Fatalf("put: %d %s", code, body)
		}
	}
	_, err = run(t, "reset", "--home", h, "--yes")
	if err == nil || !strings.Contains(err.Error(), "stop it first") || exitCode(err) != exitUnavailable {
		t.Fatalf("reset of a running replica: %v (exit %d)", err, exitCode(err))
	}
	stop()

	out, err := run(t, "reset", "--home", h)
	if err != nil || !strings.Contains(out, "would delete") {
		t.Fatalf("reset without --yes: %q, %v", out, err)
	}
	if _, err := os.Stat(filepath.Join(h, "data")); err != nil {
		t.Fatalf("reset without --yes deleted the data: %v", err)
	}
	out, err = run(t, "reset", "--home", h, "--yes", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rep resetReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || !rep.Deleted || rep.Files == 0 || rep.Signed == nil || rep.Signed.Seq == 0 {
		t.Fatalf("reset --yes --json: %s (%v)", out, err)
	}
	if _, err := os.Stat(filepath.Join(h, "data")); !os.IsNotExist(err) {
		t.Fatalf("the data folder is still there: %v", err)
	}
	for _, keep := range []string{"node_key", "config.toml", "genesis.toml", signstate.FileName} {
		if _, err := os.Stat(filepath.Join(h, keep)); err != nil {
			t.Fatalf("reset removed %s: %v", keep, err)
		}
	}
	// A one-replica chain has no one to catch up from: it starts again at height 0 and, as it may not
	// propose at or below its signed mark in the views it signed in, moves to a new view and commits.
	stop = startHome(t, h, apiAddr)
	defer stop()
	code, body := httpDo(t, "POST", "http://"+apiAddr+"/v1/tx", `{"op":{"type":"put","key":"after","value":"v"}}`)
	var put struct {
		Status string `json:"status"`
		Height uint64 `json:"height"`
		View   uint64 `json:"view"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &put) != nil || put.Status != "committed" || put.Height != 1 || put.View <= rep.Signed.View {
		t.Fatalf("put after reset (signed mark view %d seq %d): %d %s", rep.Signed.View, rep.Signed.Seq, code, body)
	}
}
