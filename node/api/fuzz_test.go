package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzTx feeds arbitrary bodies, content types and queries to POST /v1/tx: every answer must be a JSON
// object with a status the API documents, and nothing may panic.
func FuzzTx(f *testing.F) {
	for _, s := range []string{
		`{"op":{"type":"put","key":"a","value":"b"}}`,
		`{"op":{"type":"cas","key":"a","expect_absent":true,"value":"b"}}`,
		`{"encoding":"base64","op":{"type":"get","key":"AAE="}}`,
		`{"envelope":"AAAA"}`,
		`{"op":{"type":"del","key":""}}`,
		`{`,
		"\xa7\x00",
	} {
		f.Add([]byte(s), "application/json", "")
		f.Add([]byte(s), "application/cbor", "wait=false")
	}
	fake := newFakeNode(f)
	s, err := New(fake, Options{Logger: quiet, Sessions: 2})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(s.Close)
	allowed := map[int]bool{200: true, 202: true, 400: true, 413: true, 415: true, 422: true, 504: true}
	f.Fuzz(func(t *testing.T, body []byte, ctype, query string) {
		req := httptest.NewRequest(http.MethodPost, "/v1/tx", bytes.NewReader(body))
		if q, err := parseQuery(query); err == nil {
			req.URL.RawQuery = q
		}
		req.Header.Set("Content-Type", ctype)
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		if !allowed[rec.Code] {
			t.Fatalf("status %d for %q (%s): %s", rec.Code, body, ctype, rec.Body)
		}
		var v map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
			t.Fatalf("answer is not a JSON object: %v: %s", err, rec.Body)
		}
		if rec.Code >= 400 && (v["error"] == nil || v["code"] == nil) {
			t.Fatalf("error without error/code fields: %s", rec.Body)
		}
	})
}

// parseQuery keeps only the fuzzer's query strings that a URL can carry.
func parseQuery(q string) (string, error) {
	r, err := http.NewRequest(http.MethodGet, "/?"+q, nil)
	if err != nil {
		return "", err
	}
	// Bound the commit timeout: the fuzzer must not make one input wait for minutes.
	v := r.URL.Query()
	v.Set("timeout", "50ms")
	return v.Encode(), nil
}
