package node

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	p2pclient "github.com/p2pbft/p2pbft/client"
	"github.com/p2pbft/p2pbft/node/app/kv"
)

// linkClient returns a client of the cluster over links (package client), closed with the test.
func (c *cluster) linkClient(t *testing.T, name string) *p2pclient.Client {
	t.Helper()
	var boot []string
	for _, n := range c.running() {
		boot = append(boot, n.host.Addrs()[0].String())
	}
	cl, err := p2pclient.New(p2pclient.Config{Key: testKey(t, name), Genesis: c.genesis, Bootstrap: boot,
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.WaitConnected(ctx, len(c.running())); err != nil {
		t.Fatal(err)
	}
	return cl
}

// Values up to the key-value store's limit travel over links and execute; a larger one is refused by the
// client at once with the limit in the error, and nothing is sent.
func TestLargeValuesOverLinks(t *testing.T) {
	c := newCluster(t, 4, nil)
	c.startAll()
	c.waitConnected(30 * time.Second)
	cl := c.linkClient(t, "large-values")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	big := bytes.Repeat([]byte("v"), kv.MaxValueSize)
	if err := cl.Put(ctx, []byte("big"), big); err != nil {
		t.Fatalf("put of %d bytes: %v", len(big), err)
	}
	got, found, err := cl.Get(ctx, []byte("big"))
	if err != nil || !found || !bytes.Equal(got, big) {
		t.Fatalf("get: %d bytes, found %v, err %v", len(got), found, err)
	}
	sent := cl.Stats().Sent
	start := time.Now()
	err = cl.Put(ctx, []byte("bigger"), append(big, 'x'))
	if err == nil || !strings.Contains(err.Error(), "value of more than") || time.Since(start) > 5*time.Second {
		t.Fatalf("an oversized value: err %v after %s", err, time.Since(start))
	}
	if cl.Stats().Sent != sent {
		t.Fatal("an oversized value was sent")
	}
}
