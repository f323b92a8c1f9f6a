package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/p2pbft/p2pbft/node"
	"github.com/p2pbft/p2pbft/node/api/apitypes"
	"github.com/p2pbft/p2pbft/node/app/kv"
	"github.com/p2pbft/p2pbft/node/trace"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type env struct {
	t  *testing.T
	f  *fakeNode
	s  *Server
	ts *httptest.Server
}

func newEnv(t *testing.T, opts Options) *env {
	t.Helper()
	f := newFakeNode(t)
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	s, err := New(f, opts)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(func() { ts.Close(); s.Close() })
	return &env{t: t, f: f, s: s, ts: ts}
}

// do sends a request and decodes the JSON answer into out (if not nil); it returns the status code.
func (e *env) do(method, path, ctype string, body []byte, out any) int {
	e.t.Helper()
	req, err := http.NewRequest(method, e.ts.URL+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if path != "/metrics" && !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		e.t.Fatalf("%s %s: content type %q, body %s", method, path, resp.Header.Get("Content-Type"), data)
	}
	if out != nil {
		if s, ok := out.(*string); ok {
			*s = string(data)
		} else if err := json.Unmarshal(data, out); err != nil {
			e.t.Fatalf("%s %s: %v in %s", method, path, err, data)
		}
	}
	return resp.StatusCode
}

func (e *env) tx(body string, out any) int {
	e.t.Helper()
	return e.do("POST", "/v1/tx", "application/json", []byte(body), out)
}

func TestTxPutGetDeleteCAS(t *testing.T) {
	e := newEnv(t, Options{})
	var r apitypes.TxResponse
	if code := e.tx(`{"op":{"type":"put","key":"color","value":"red"}}`, &r); code != 200 {
		t.Fatalf("put: %d %+v", code, r)
	}
	if r.Status != "committed" || r.Result == nil || r.Result.Status != "ok" || r.Height != 1 || r.Replica == nil || *r.Replica != 1 || r.Reply == "" || r.Timestamp == 0 {
		t.Fatalf("put response %+v", r)
	}
	if r.Client != e.f.ckey.PeerID().String() {
		t.Fatalf("signed by %s, want session 0 (the node's client key %s)", r.Client, e.f.ckey.PeerID())
	}
	// The reply is this replica's signed envelope.
	raw, _ := base64.StdEncoding.DecodeString(r.Reply)
	rep, err := wire.DecodeEnvelope(raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pbft.OpenReply(rep); err != nil {
		t.Fatal(err)
	}

	// curl -d sends JSON as application/x-www-form-urlencoded.
	if code := e.do("POST", "/v1/tx", "application/x-www-form-urlencoded", []byte(`{"op":{"type":"get","key":"color"}}`), &r); code != 200 || r.Result.Value != "red" {
		t.Fatalf("curl-style post: %d %+v", code, r)
	}
	var kvr apitypes.KVResponse
	if code := e.do("GET", "/v1/kv/color", "", nil, &kvr); code != 200 || !kvr.Found || kvr.Value != "red" || kvr.Height != 2 {
		t.Fatalf("local get: %d %+v", code, kvr)
	}
	if code := e.do("GET", "/v1/kv/nope", "", nil, &kvr); code != 404 || kvr.Found {
		t.Fatalf("missing key: %d %+v", code, kvr)
	}
	if code := e.tx(`{"op":{"type":"get","key":"color"}}`, &r); code != 200 || r.Result.Value != "red" || !r.Result.Exists {
		t.Fatalf("consensus get: %d %+v", code, r.Result)
	}
	if code := e.tx(`{"op":{"type":"cas","key":"color","expect":"blue","value":"green"}}`, &r); code != 200 || r.Result.Status != "conflict" || r.Result.Value != "red" {
		t.Fatalf("failing cas: %d %+v", code, r.Result)
	}
	if code := e.tx(`{"op":{"type":"cas","key":"color","expect":"red","value":"green"}}`, &r); code != 200 || r.Result.Status != "ok" {
		t.Fatalf("cas: %d %+v", code, r.Result)
	}
	if code := e.tx(`{"op":{"type":"cas","key":"new","expect_absent":true,"value":"x"}}`, &r); code != 200 || r.Result.Status != "ok" {
		t.Fatalf("create-if-absent: %d %+v", code, r.Result)
	}
	if code := e.tx(`{"op":{"type":"del","key":"color"}}`, &r); code != 200 || r.Result.Status != "ok" {
		t.Fatalf("delete: %d %+v", code, r.Result)
	}
	if code := e.tx(`{"op":{"type":"delete","key":"color"}}`, &r); code != 200 || r.Result.Status != "not-found" {
		t.Fatalf("second delete: %d %+v", code, r.Result)
	}
	// Binary keys and values in base64; a local read with a base64 (URL-safe) key.
	key, val := []byte{0xff, 0x00, 0x01}, []byte{0xfe, 0xfd}
	body := fmt.Sprintf(`{"encoding":"base64","op":{"type":"put","key":%q,"value":%q}}`,
		base64.StdEncoding.EncodeToString(key), base64.StdEncoding.EncodeToString(val))
	if code := e.tx(body, &r); code != 200 {
		t.Fatalf("base64 put: %d", code)
	}
	path := "/v1/kv/" + base64.URLEncoding.EncodeToString(key) + "?encoding=base64"
	kvr = apitypes.KVResponse{}
	if code := e.do("GET", path, "", nil, &kvr); code != 200 || kvr.Value != "" || kvr.ValueBase64 != base64.StdEncoding.EncodeToString(val) {
		t.Fatalf("base64 local get: %d %+v", code, kvr)
	}
}

func TestTxAsyncHoldsSessionUntilExecuted(t *testing.T) {
	e := newEnv(t, Options{Sessions: 1})
	gate := make(chan struct{})
	var calls sync.WaitGroup
	calls.Add(1)
	var once sync.Once
	e.f.submitFn = func(ctx context.Context, env *wire.Envelope) (*wire.Envelope, error) {
		once.Do(calls.Done)
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		req, err := e.f.check(env)
		if err != nil {
			return nil, err
		}
		return e.f.execute(env, req)
	}
	var r apitypes.TxResponse
	if code := e.do("POST", "/v1/tx?wait=false", "application/json", []byte(`{"op":{"type":"put","key":"a","value":"1"}}`), &r); code != 202 || r.Status != "accepted" || r.ID == "" {
		t.Fatalf("async: %d %+v", code, r)
	}
	calls.Wait() // the API waits for the execution in the background
	if e.s.sessions.Busy() != 1 {
		t.Fatalf("%d sessions busy while the async request has not executed", e.s.sessions.Busy())
	}
	// The only session is busy: a second submission with a short timeout cannot get one.
	if code := e.do("POST", "/v1/tx?timeout=50ms", "application/json", []byte(`{"op":{"type":"put","key":"b","value":"2"}}`), &r); code != 504 {
		t.Fatalf("with every session busy: %d", code)
	}
	close(gate)
	deadline := time.Now().Add(10 * time.Second)
	for e.s.sessions.Busy() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("session not released after execution")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if e.f.asyncs != 1 {
		t.Fatalf("SubmitAsync called %d times", e.f.asyncs)
	}
	var kvr apitypes.KVResponse
	if code := e.do("GET", "/v1/kv/a", "", nil, &kvr); code != 200 || kvr.Value != "1" {
		t.Fatalf("after async put: %d %+v", code, kvr)
	}
}

func TestTxSignedEnvelope(t *testing.T) {
	e := newEnv(t, Options{})
	own := seedKey(t, "own-client")
	op, _ := kv.EncodeOp(kv.Put([]byte("x"), []byte("y")))
	req, err := pbft.NewRequest(own, "api-chain", 42, op)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := req.Marshal()
	var r apitypes.TxResponse
	if code := e.do("POST", "/v1/tx", "application/cbor", raw, &r); code != 200 || r.Client != own.PeerID().String() || r.Timestamp != 42 || r.Result.Status != "ok" {
		t.Fatalf("cbor envelope: %d %+v", code, r)
	}
	// The same envelope again: the cached reply.
	body := fmt.Sprintf(`{"envelope":%q}`, base64.StdEncoding.EncodeToString(raw))
	var r2 apitypes.TxResponse
	if code := e.tx(body, &r2); code != 200 || r2.Height != r.Height {
		t.Fatalf("repeat: %d %+v", code, r2)
	}
	// An older timestamp is rejected by the replica: 422.
	old, _ := pbft.NewRequest(own, "api-chain", 41, op)
	oldRaw, _ := old.Marshal()
	var er apitypes.ErrorResponse
	if code := e.do("POST", "/v1/tx", "application/cbor", oldRaw, &er); code != 422 || er.Code != "rejected" {
		t.Fatalf("stale: %d %+v", code, er)
	}
	// Async raw envelope.
	next, _ := pbft.NewRequest(own, "api-chain", 43, op)
	nextRaw, _ := next.Marshal()
	if code := e.do("POST", "/v1/tx?wait=false", "application/cbor", nextRaw, &r); code != 202 || r.Timestamp != 43 {
		t.Fatalf("async envelope: %d %+v", code, r)
	}
	// A forged signature is rejected.
	bad, _ := pbft.NewRequest(own, "api-chain", 44, op)
	bad.Sig = append([]byte(nil), bad.Sig...)
	bad.Sig[0] ^= 1
	badRaw, _ := bad.Marshal()
	if code := e.do("POST", "/v1/tx", "application/cbor", badRaw, &er); code != 422 {
		t.Fatalf("forged: %d %+v", code, er)
	}
	// A commit envelope is not a request.
	ce, _ := wire.Seal(own, "api-chain", wire.KindCommit, []byte{1})
	ceRaw, _ := ce.Marshal()
	if code := e.do("POST", "/v1/tx", "application/cbor", ceRaw, &er); code != 400 || er.Code != "bad_envelope" {
		t.Fatalf("commit as tx: %d %+v", code, er)
	}
}

func TestErrors(t *testing.T) {
	e := newEnv(t, Options{MaxBodyBytes: 1024})
	cases := []struct {
		method, path, ctype, body string
		code                      int
		errCode                   string
	}{
		{"POST", "/v1/tx", "application/json", `{`, 400, "bad_json"},
		{"POST", "/v1/tx", "application/json", `{"op":{"type":"put","key":"a"},"extra":1}`, 400, "bad_json"},
		{"POST", "/v1/tx", "application/json", `{} {}`, 400, "bad_json"},
		{"POST", "/v1/tx", "application/json", `{}`, 400, "bad_request"},
		{"POST", "/v1/tx", "application/json", `{"op":{"type":"put","key":"a"},"envelope":"AA=="}`, 400, "bad_request"},
		{"POST", "/v1/tx", "application/json", `{"op":{"type":"frobnicate","key":"a"}}`, 400, "bad_op"},
		{"POST", "/v1/tx", "application/json", `{"op":{"type":"put","key":""}}`, 400, "bad_op"},
		{"POST", "/v1/tx", "application/json", `{"op":{"type":"get","key":"a","value":"v"}}`, 400, "bad_op"},
		{"POST", "/v1/tx", "application/json", `{"op":{"type":"put","key":"a","expect":"v"}}`, 400, "bad_op"},
		{"POST", "/v1/tx", "application/json", `{"op":{"type":"cas","key":"a","expect":"v","expect_absent":true}}`, 400, "bad_op"},
		{"POST", "/v1/tx", "application/json", `{"encoding":"hex","op":{"type":"put","key":"a"}}`, 400, "bad_op"},
		{"POST", "/v1/tx", "application/json", `{"encoding":"base64","op":{"type":"put","key":"!!"}}`, 400, "bad_op"},
		{"POST", "/v1/tx", "application/json", `{"envelope":"%%%"}`, 400, "bad_envelope"},
		{"POST", "/v1/tx", "application/json", `{"envelope":"AAAA"}`, 400, "bad_envelope"},
		{"POST", "/v1/tx", "application/cbor", "\xff\x00", 400, "bad_envelope"},
		{"POST", "/v1/tx", "text/plain", `hi`, 415, "bad_content_type"},
		{"POST", "/v1/tx", "application/json", `{"op":{"type":"put","key":"a","value":"` + strings.Repeat("x", 2000) + `"}}`, 413, "too_large"},
		{"POST", "/v1/tx?wait=maybe", "application/json", `{}`, 400, "bad_request"},
		{"POST", "/v1/tx?timeout=-1s", "application/json", `{}`, 400, "bad_request"},
		{"GET", "/v1/tx", "", ``, 405, "method_not_allowed"},
		{"POST", "/v1/status", "", ``, 405, "method_not_allowed"},
		{"GET", "/v2/nothing", "", ``, 404, "not_found"},
		{"GET", "/v1/blocks/zero", "", ``, 400, "bad_height"},
		{"GET", "/v1/blocks/0", "", ``, 400, "bad_height"},
		{"GET", "/v1/blocks/9", "", ``, 404, "not_found"},
		{"GET", "/v1/blocks/latest", "", ``, 404, "not_found"},
		{"GET", "/v1/blocks?limit=1000", "", ``, 400, "bad_request"},
		{"GET", "/v1/kv/a?encoding=rot13", "", ``, 400, "bad_request"},
		{"GET", "/v1/kv/***?encoding=base64", "", ``, 400, "bad_key"},
	}
	for _, c := range cases {
		var er apitypes.ErrorResponse
		code := e.do(c.method, c.path, c.ctype, []byte(c.body), &er)
		if code != c.code || er.Code != c.errCode || er.Error == "" {
			t.Errorf("%s %s %s: %d %+v, want %d %s", c.method, c.path, c.body[:min(len(c.body), 40)], code, er, c.code, c.errCode)
		}
	}
}

func TestBackendErrorsMapToStatus(t *testing.T) {
	e := newEnv(t, Options{})
	for _, c := range []struct {
		err     error
		code    int
		errCode string
	}{
		{fmt.Errorf("node: %w: pending set full", node.ErrRequestRejected), 422, "rejected"},
		{node.ErrStopped, 503, "stopped"},
		{fmt.Errorf("waiting: %w", context.DeadlineExceeded), 504, "timeout"},
		{errBoom, 500, "internal"},
	} {
		e.f.submitFn = func(context.Context, *wire.Envelope) (*wire.Envelope, error) { return nil, c.err }
		var er apitypes.ErrorResponse
		if code := e.tx(`{"op":{"type":"put","key":"a","value":"b"}}`, &er); code != c.code || er.Code != c.errCode {
			t.Errorf("%v: %d %+v", c.err, code, er)
		}
	}
	// A submission that does not execute within ?timeout: 504, and the session is free again.
	e.f.submitFn = func(ctx context.Context, _ *wire.Envelope) (*wire.Envelope, error) {
		<-ctx.Done()
		return nil, fmt.Errorf("node: waiting for the request to execute: %w", ctx.Err())
	}
	var er apitypes.ErrorResponse
	if code := e.do("POST", "/v1/tx?timeout=30ms", "application/json", []byte(`{"op":{"type":"put","key":"a","value":"b"}}`), &er); code != 504 || !strings.Contains(er.Error, "may still execute") {
		t.Fatalf("timeout: %d %+v", code, er)
	}
	if e.s.sessions.Busy() != 0 {
		t.Fatal("session kept after a timeout")
	}
}

func TestConcurrentSubmissionsOneOutstandingPerKey(t *testing.T) {
	e := newEnv(t, Options{Sessions: 4})
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf(`{"op":{"type":"put","key":"k%d","value":"v%d"}}`, i, i)
			resp, err := e.ts.Client().Post(e.ts.URL+"/v1/tx", "application/json", strings.NewReader(body))
			if err != nil {
				errs <- err
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				errs <- fmt.Errorf("put %d: status %d", i, resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	e.f.mu.Lock()
	defer e.f.mu.Unlock()
	if e.f.overlap != 0 {
		t.Fatalf("%d times two requests of one key were outstanding at once", e.f.overlap)
	}
	if len(e.f.kv) != 40 || e.f.submits != 40 {
		t.Fatalf("%d keys, %d submits", len(e.f.kv), e.f.submits)
	}
	if len(e.f.last) < 2 || len(e.f.last) > 4 {
		t.Fatalf("%d client keys used, want 2 to 4 sessions", len(e.f.last))
	}
}

func TestStatusPeersHealthMetrics(t *testing.T) {
	e := newEnv(t, Options{})
	var st apitypes.Status
	if code := e.do("GET", "/v1/status", "", nil, &st); code != 200 || st.ChainID != "api-chain" || st.Replica != 1 || st.Mode != "normal" || len(st.Peers) != 2 {
		t.Fatalf("status: %d %+v", code, st)
	}
	var peers []apitypes.Peer
	if code := e.do("GET", "/v1/peers", "", nil, &peers); code != 200 || len(peers) != 2 || peers[1].Replica != 2 {
		t.Fatalf("peers: %d %+v", code, peers)
	}
	var h map[string]any
	if code := e.do("GET", "/health", "", nil, &h); code != 200 || h["status"] != "ok" {
		t.Fatalf("health: %d %v", code, h)
	}
	var m string
	if code := e.do("GET", "/metrics", "", nil, &m); code != 200 || !strings.Contains(m, "p2pbft_requests_executed_total 7") {
		t.Fatalf("metrics: %d %s", code, m)
	}
	close(e.f.stopped)
	var er apitypes.ErrorResponse
	if code := e.do("GET", "/health", "", nil, &er); code != 503 || er.Code != "stopped" {
		t.Fatalf("health when stopped: %d %+v", code, er)
	}
	if code := e.tx(`{"op":{"type":"put","key":"a","value":"b"}}`, &er); code != 503 {
		t.Fatalf("tx when stopped: %d %+v", code, er)
	}
	f2 := newFakeNode(t)
	f2.started = make(chan struct{})
	s2, _ := New(f2, Options{Logger: quiet})
	defer s2.Close()
	rec := httptest.NewRecorder()
	s2.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/health", nil))
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), "starting") {
		t.Fatalf("health while starting: %d %s", rec.Code, rec.Body)
	}
}

func TestBlocks(t *testing.T) {
	e := newEnv(t, Options{})
	b1 := e.f.addBlock(t, 1, false)
	e.f.addBlock(t, 2, false)
	e.f.addBlock(t, 3, true)
	var b apitypes.Block
	if code := e.do("GET", "/v1/blocks/1", "", nil, &b); code != 200 {
		t.Fatalf("block 1: %d", code)
	}
	if b.Height != 1 || b.Hash != hexDigest(b1.Hash()) || len(b.Requests) != 1 || b.Requests[0].Op == nil ||
		b.Requests[0].Op.Type != "put" || b.Requests[0].Op.Key != "k1" || b.Requests[0].Client != e.f.ckey.PeerID().String() || b.Raw == "" {
		t.Fatalf("block 1: %+v", b)
	}
	if len(b.Certificate) != 3 {
		t.Fatalf("certificate of %d", len(b.Certificate))
	}
	for i, c := range b.Certificate {
		if !c.Valid || c.Replica != i || c.Seq != 1 || c.Digest != b.BatchDigest {
			t.Fatalf("commit %d: %+v", i, c)
		}
	}
	var latest apitypes.Block
	if code := e.do("GET", "/v1/blocks/latest?raw=false", "", nil, &latest); code != 200 || latest.Height != 3 || latest.Raw != "" {
		t.Fatalf("latest: %d %+v", code, latest)
	}
	if c := latest.Certificate[2]; c.Valid || c.Error == "" {
		t.Fatalf("forged commit shown as valid: %+v", c)
	}
	var list struct {
		Head   uint64                  `json:"head"`
		Blocks []apitypes.BlockSummary `json:"blocks"`
	}
	if code := e.do("GET", "/v1/blocks", "", nil, &list); code != 200 || list.Head != 3 || len(list.Blocks) != 3 || list.Blocks[1].Prev != list.Blocks[0].Hash {
		t.Fatalf("list: %d %+v", code, list)
	}
	if code := e.do("GET", "/v1/blocks?from=2&limit=1", "", nil, &list); code != 200 || len(list.Blocks) != 1 || list.Blocks[0].Height != 2 {
		t.Fatalf("list from 2: %d %+v", code, list)
	}
}

func TestServeAndAddrInUse(t *testing.T) {
	f := newFakeNode(t)
	s, err := New(f, Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if _, err := Listen(addr); !errors.Is(err, ErrAddrInUse) || !strings.Contains(err.Error(), addr) {
		t.Fatalf("second listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	resp, err := http.Get("http://" + addr + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("health %d", resp.StatusCode)
	}
	// A submission waiting for execution when the server stops gets an answer and Serve returns.
	f.submitFn = func(ctx context.Context, _ *wire.Envelope) (*wire.Envelope, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	codes := make(chan int, 1)
	go func() {
		resp, err := http.Post("http://"+addr+"/v1/tx", "application/json", strings.NewReader(`{"op":{"type":"put","key":"a","value":"b"}}`))
		if err != nil {
			codes <- 0
			return
		}
		resp.Body.Close()
		codes <- resp.StatusCode
	}()
	for s.sessions.Busy() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if code := <-codes; code != 503 {
		t.Fatalf("in-flight submission at shutdown: %d", code)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatal("still listening after Serve returned")
	}
}

// fakeRelay records the requests relayed to other replicas.
type fakeRelay struct {
	mu    sync.Mutex
	calls map[int][]wire.Digest
	all   chan struct{}
	once  sync.Once
}

func (r *fakeRelay) OtherReplicas() []int { return []int{0, 2, 3} }

func (r *fakeRelay) SendRequest(ctx context.Context, i int, req *wire.Envelope) error {
	r.mu.Lock()
	r.calls[i] = append(r.calls[i], req.ID())
	if len(r.calls) == 3 {
		r.once.Do(func() { close(r.all) })
	}
	r.mu.Unlock()
	<-ctx.Done() // a replica answers once it executed: here, never before the test is done
	return ctx.Err()
}

// A transaction the local replica does not execute in time (its primary is gone, say) is relayed to
// every other replica, so that they too start their view-change timers; one that executes at once is not.
func TestRelayOnTimeout(t *testing.T) {
	relay := &fakeRelay{calls: map[int][]wire.Digest{}, all: make(chan struct{})}
	e := newEnv(t, Options{Relay: relay, RetryTimeout: 50 * time.Millisecond})
	var r apitypes.TxResponse
	if code := e.tx(`{"op":{"type":"put","key":"fast","value":"1"}}`, &r); code != 200 {
		t.Fatalf("fast put: %d", code)
	}
	relay.mu.Lock()
	if len(relay.calls) != 0 {
		t.Fatalf("a transaction that executed at once was relayed: %v", relay.calls)
	}
	relay.mu.Unlock()

	// The local replica executes only once every other replica has been sent the request.
	e.f.submitFn = func(ctx context.Context, env *wire.Envelope) (*wire.Envelope, error) {
		select {
		case <-relay.all:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		req, err := e.f.check(env)
		if err != nil {
			return nil, err
		}
		return e.f.execute(env, req)
	}
	if code := e.tx(`{"op":{"type":"put","key":"slow","value":"2"}}`, &r); code != 200 || r.Result.Status != "ok" {
		t.Fatalf("slow put: %d %+v", code, r)
	}
	relay.mu.Lock()
	defer relay.mu.Unlock()
	for _, i := range relay.OtherReplicas() {
		if len(relay.calls[i]) != 1 || hexDigest(relay.calls[i][0]) != r.ID {
			t.Fatalf("replica %d was relayed %v, want the request %s once", i, relay.calls[i], r.ID)
		}
	}
}

func TestTrace(t *testing.T) {
	e := newEnv(t, Options{})
	var tr apitypes.TraceResponse
	if code := e.do("GET", "/v1/trace", "", nil, &tr); code != 200 || tr.Enabled || len(tr.Slots) != 0 || tr.Slots == nil || tr.Replica != 1 {
		t.Fatalf("tracing off: %d %+v", code, tr)
	}
	e.f.tracer = trace.New(trace.Options{Slots: 16})
	for seq := uint64(1); seq <= 20; seq++ {
		e.f.tracer.PrePrepareReceived(0, seq, 0, 100, int64(seq))
		e.f.tracer.Commit(0, seq, 2, int64(seq)+1)
	}
	e.f.tracer.ViewChangeSent(1, 50)
	if code := e.do("GET", "/v1/trace", "", nil, &tr); code != 200 || !tr.Enabled || len(tr.Slots) != 16 ||
		tr.Slots[0].Seq != 5 || tr.Slots[15].Seq != 20 || len(tr.ViewChanges) != 1 || tr.Now == 0 {
		t.Fatalf("latest: %d %+v", code, tr)
	}
	if s := tr.Slots[0]; s.PrePrepareReceived != 5 || s.PrePrepareFrom != 0 || len(s.Commits) != 1 || s.Commits[0] != (trace.Vote{From: 2, At: 6}) {
		t.Fatalf("slot 5: %+v", s)
	}
	if code := e.do("GET", "/v1/trace?limit=3", "", nil, &tr); code != 200 || len(tr.Slots) != 3 || tr.Slots[0].Seq != 18 {
		t.Fatalf("latest 3: %d %+v", code, tr.Slots)
	}
	if code := e.do("GET", "/v1/trace?from=7&limit=2", "", nil, &tr); code != 200 || len(tr.Slots) != 2 || tr.Slots[0].Seq != 7 || tr.Slots[1].Seq != 8 {
		t.Fatalf("from 7: %d %+v", code, tr.Slots)
	}
	for _, q := range []string{"from=0", "from=x", "from=-1", "limit=0", "limit=10001", "limit=abc"} {
		var er apitypes.ErrorResponse
		if code := e.do("GET", "/v1/trace?"+q, "", nil, &er); code != 400 || er.Code != "bad_request" || er.Error == "" {
			t.Fatalf("?%s: %d %+v", q, code, er)
		}
	}
	if code := e.do("POST", "/v1/trace", "", nil, nil); code != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", code)
	}
}
