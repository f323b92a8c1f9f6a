package client

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/node/app/kv"
)

// kvExec is a map-backed stand-in for the kv application with the same operations and results, shared
// by all fake replicas like a replicated state: the first replica to see a request executes it, the others
// get the same result.
func kvExec() func(string, uint64, []byte) []byte {
	var mu sync.Mutex
	m := map[string][]byte{}
	done := map[string][]byte{}
	return func(client string, ts uint64, b []byte) []byte {
		mu.Lock()
		defer mu.Unlock()
		id := fmt.Sprintf("%x/%d", client, ts)
		if r, ok := done[id]; ok {
			return r
		}
		op, err := kv.DecodeOp(b)
		var r kv.Result
		switch {
		case err != nil:
			r = kv.Result{Status: kv.StatusInvalid, Error: "malformed"}
		case op.Type == kv.OpPut:
			m[string(op.Key)] = op.Value
			r = kv.Result{Status: kv.StatusOK}
		case op.Type == kv.OpGet:
			v, ok := m[string(op.Key)]
			r = kv.Result{Status: kv.StatusNotFound}
			if ok {
				r = kv.Result{Status: kv.StatusOK, Value: v, Exists: true}
			}
		case op.Type == kv.OpDelete:
			_, ok := m[string(op.Key)]
			delete(m, string(op.Key))
			r = kv.Result{Status: kv.StatusNotFound}
			if ok {
				r = kv.Result{Status: kv.StatusOK}
			}
		case op.Type == kv.OpCAS:
			v, ok := m[string(op.Key)]
			if (op.ExpectAbsent && !ok) || (!op.ExpectAbsent && ok && bytes.Equal(v, op.Expect)) {
				m[string(op.Key)] = op.Value
				r = kv.Result{Status: kv.StatusOK}
			} else {
				r = kv.Result{Status: kv.StatusConflict, Value: v, Exists: ok}
			}
		}
		out, err := kv.EncodeResult(r)
		if err != nil {
			panic(err)
		}
		done[id] = out
		return out
	}
}

func TestKVHelpers(t *testing.T) {
	c := startCluster(t, "kvh", 4)
	exec := kvExec()
	for _, r := range c.replicas {
		r.setExec(exec)
	}
	cl := c.client(t, "kvh-client", nil)
	ctx := ctxT(t, 30*time.Second)
	k := []byte("color")
	if _, found, err := cl.Get(ctx, k); err != nil || found {
		t.Fatalf("get missing: %v %v", found, err)
	}
	if err := cl.Put(ctx, k, []byte("red")); err != nil {
		t.Fatal(err)
	}
	if v, found, err := cl.Get(ctx, k); err != nil || !found || string(v) != "red" {
		t.Fatalf("get: %q %v %v", v, found, err)
	}
	if ok, cur, exists, err := cl.CAS(ctx, k, []byte("blue"), []byte("green")); err != nil || ok || string(cur) != "red" || !exists {
		t.Fatalf("failing cas: %v %q %v %v", ok, cur, exists, err)
	}
	if ok, _, _, err := cl.CAS(ctx, k, []byte("red"), []byte("green")); err != nil || !ok {
		t.Fatalf("cas: %v %v", ok, err)
	}
	if ok, cur, err := cl.CreateIfAbsent(ctx, k, []byte("x")); err != nil || ok || string(cur) != "green" {
		t.Fatalf("create-if-absent on existing: %v %q %v", ok, cur, err)
	}
	if existed, err := cl.Delete(ctx, k); err != nil || !existed {
		t.Fatalf("delete: %v %v", existed, err)
	}
	if existed, err := cl.Delete(ctx, k); err != nil || existed {
		t.Fatalf("second delete: %v %v", existed, err)
	}
	if ok, _, err := cl.CreateIfAbsent(ctx, k, []byte("x")); err != nil || !ok {
		t.Fatalf("create-if-absent: %v %v", ok, err)
	}
	if err := cl.Put(ctx, nil, []byte("v")); err == nil {
		t.Fatal("put with an empty key was sent")
	}
	// The replicas answer with something that is not a kv result: a clear error.
	for _, r := range c.replicas {
		r.setExec(nil)
	}
	if err := cl.Put(ctx, []byte("a"), []byte("b")); err == nil {
		t.Fatal("non-kv result accepted")
	}
	for _, r := range c.replicas {
		r.setExec(func(string, uint64, []byte) []byte {
			b, _ := kv.EncodeResult(kv.Result{Status: kv.StatusInvalid, Error: "nope"})
			return b
		})
	}
	if err := cl.Put(ctx, []byte("a"), []byte("b")); !errors.Is(err, ErrInvalidOp) {
		t.Fatalf("invalid status: %v", err)
	}
}
