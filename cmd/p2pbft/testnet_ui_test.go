package main

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
)

// testnet documents --ui and its flags, and a --ui-listen address that is taken fails before any replica
// starts.
func TestTestnetUIFlags(t *testing.T) {
	out, err := run(t, "testnet", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"--ui ", "--ui-listen", "--ui-open", "live page"} {
		if !strings.Contains(out, f) {
			t.Errorf("testnet --help does not document %s", f)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	out, err = run(t, "testnet", "--dir", filepath.Join(t.TempDir(), "tn"), "--ui", "--ui-listen", ln.Addr().String(), "--no-stdin", "--no-load")
	if err == nil || !strings.Contains(err.Error(), "--ui-listen "+ln.Addr().String()) || strings.Contains(out, "starting") {
		t.Fatalf("a taken --ui-listen: %v\n%s", err, out)
	}
}
