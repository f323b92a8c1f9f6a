package api

import (
	"encoding/json"
	"net/http"

	"github.com/p2pbft/p2pbft/internal/logs"
	"github.com/p2pbft/p2pbft/node/api/apitypes"
)

// logRejected logs the requests h rejects as bad input (400, 405, 413, 415, 422, and 404 for a path that
// is no endpoint): each at debug with its method, path, client address and the error the API answered,
// and a summary by error code at info at most every interval (logs.Rejections). A 404 for a missing key
// or block is an answer, not a rejection; 5xx answers are the node's state, logged where they arise.
func logRejected(h http.Handler, rejects *logs.Rejections) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		if !rejection(sw.status, r) {
			return
		}
		var er apitypes.ErrorResponse
		_ = json.Unmarshal(sw.body, &er) // an error answer is an apitypes.ErrorResponse; if not, the status says enough
		reason := er.Code
		if reason == "" {
			reason = http.StatusText(sw.status)
		}
		rejects.Reject(reason, 1, "method", r.Method, "path", r.URL.Path, "status", sw.status,
			"remote", r.RemoteAddr, "err", er.Error)
	})
}

func rejection(status int, r *http.Request) bool {
	switch status {
	case http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusRequestEntityTooLarge,
		http.StatusUnsupportedMediaType, http.StatusUnprocessableEntity:
		return true
	case http.StatusNotFound:
		return r.Pattern == "/" // the catch-all: no such endpoint
	}
	return false
}

// maxErrorBody is how much of an error answer statusWriter keeps: an apitypes.ErrorResponse is far smaller.
const maxErrorBody = 4 << 10

// statusWriter records the status code and, for error answers, the start of the body. Unwrap lets
// http.ResponseController reach the underlying writer (flushing, deadlines), as handlers that stream
// need.
type statusWriter struct {
	http.ResponseWriter
	status int
	body   []byte
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.status >= 400 && len(w.body) < maxErrorBody {
		w.body = append(w.body, b[:min(len(b), maxErrorBody-len(w.body))]...)
	}
	return w.ResponseWriter.Write(b)
}

// Flush forwards to the underlying writer, for handlers that assert http.Flusher directly.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
