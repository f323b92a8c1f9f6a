package main

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// init with a bad --listen or an --api without a port is a usage error that writes nothing: no key, no
// config, and no home folder (the config is validated before anything is created).
func TestInitBadAddressesWriteNothing(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		field string
	}{
		{[]string{"--listen", "bad"}, "p2p.listen"},
		{[]string{"--api", "localhost"}, "api.http"},
	} {
		home := filepath.Join(t.TempDir(), "home")
		out, err := run(t, append([]string{"init", "--home", home}, tc.args...)...)
		if exitCode(err) != exitUsage || err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("init %v: exit %d (%v), want %d naming %s\n%s", tc.args, exitCode(err), err, exitUsage, tc.field, out)
		}
		if _, err := os.Stat(home); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("init %v left %s behind (stat: %v)", tc.args, home, err)
		}
	}
}

// start refuses an --external address without a transport, naming the setting and what it wants, before
// the node starts.
func TestStartExternalWithoutTransport(t *testing.T) {
	h := filepath.Join(t.TempDir(), "home")
	initHome(t, h)
	writeGenesis(t, h, loadKey(t, h))
	out, err := run(t, "start", "--home", h, "--external", "/ip4/203.0.113.7")
	if exitCode(err) != exitUsage || err == nil || !strings.Contains(err.Error(), "p2p.external") ||
		!strings.Contains(err.Error(), "/tcp/") {
		t.Fatalf("start --external without a transport: exit %d (%v), want %d naming p2p.external and the transports\n%s", exitCode(err), err, exitUsage, out)
	}
}
