package api

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/node"
	"github.com/p2pbft/p2pbft/node/api/apitypes"
	"github.com/p2pbft/p2pbft/node/app/kv"
	"github.com/p2pbft/p2pbft/node/store"
	"github.com/p2pbft/p2pbft/node/trace"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(apitypes.ErrorResponse{Error: "encode response: " + err.Error(), Code: "internal"})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, apitypes.ErrorResponse{Error: msg, Code: code})
}

// fail maps a backend error to a status code.
func (s *Server) fail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, node.ErrRequestRejected):
		writeError(w, http.StatusUnprocessableEntity, "rejected", err.Error())
	case errors.Is(err, node.ErrStopped):
		writeError(w, http.StatusServiceUnavailable, "stopped", err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusGatewayTimeout, "timeout", err.Error()+" (the transaction may still execute)")
	case errors.Is(err, context.Canceled):
		writeError(w, http.StatusServiceUnavailable, "canceled", err.Error()+" (the transaction may still execute)")
	case errors.Is(err, node.ErrNoQuerier):
		writeError(w, http.StatusNotImplemented, "no_query", err.Error())
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	default:
		s.log.Warn("API request failed", "err", err)
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
	}
}

func parseBool(r *http.Request, name string, def bool) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("?%s=%q: want true or false", name, v)
	}
	return b, nil
}

// handleTx: POST /v1/tx.
func (s *Server) handleTx(w http.ResponseWriter, r *http.Request) {
	wait, err := parseBool(r, "wait", true)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	timeout := s.opts.CommitTimeout
	if v := r.URL.Query().Get("timeout"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("?timeout=%q: want a positive duration such as 10s", v))
			return
		}
		timeout = min(d, s.opts.MaxCommitTimeout)
	}
	ctype := "application/json"
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil {
			writeError(w, http.StatusUnsupportedMediaType, "bad_content_type", fmt.Sprintf("Content-Type %q: %v", ct, err))
			return
		}
		ctype = mt
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body larger than %d bytes", mbe.Limit))
			return
		}
		writeError(w, http.StatusBadRequest, "bad_request", "read body: "+err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	switch ctype {
	case "application/cbor", "application/octet-stream":
		env, err := wire.DecodeEnvelope(body)
		if err != nil {
			writeError(w, http.StatusBadRequest, "bad_envelope", err.Error())
			return
		}
		s.submitEnvelope(ctx, w, env, wait)
	case "application/json", "application/x-www-form-urlencoded":
		// (The second is what `curl -d` sends by default; the body is JSON all the same.)
		var req apitypes.TxRequest
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, "bad_json", "decode body: "+err.Error())
			return
		}
		if dec.More() {
			writeError(w, http.StatusBadRequest, "bad_json", "decode body: data after the JSON object")
			return
		}
		switch {
		case req.Op != nil && req.Envelope != "":
			writeError(w, http.StatusBadRequest, "bad_request", "give either op or envelope, not both")
		case req.Envelope != "":
			raw, err := base64.StdEncoding.DecodeString(req.Envelope)
			if err != nil {
				writeError(w, http.StatusBadRequest, "bad_envelope", "envelope: not standard base64: "+err.Error())
				return
			}
			env, err := wire.DecodeEnvelope(raw)
			if err != nil {
				writeError(w, http.StatusBadRequest, "bad_envelope", err.Error())
				return
			}
			s.submitEnvelope(ctx, w, env, wait)
		case req.Op != nil:
			op, err := req.Op.KVOp(req.Encoding)
			if err != nil {
				writeError(w, http.StatusBadRequest, "bad_op", err.Error())
				return
			}
			enc, err := kv.EncodeOp(op)
			if err != nil {
				writeError(w, http.StatusBadRequest, "bad_op", err.Error())
				return
			}
			s.submitOp(ctx, w, enc, wait, timeout)
		default:
			writeError(w, http.StatusBadRequest, "bad_request", `the body needs "op" (for example {"op": {"type": "put", "key": "k", "value": "v"}}) or "envelope"`)
		}
	default:
		writeError(w, http.StatusUnsupportedMediaType, "bad_content_type", fmt.Sprintf("Content-Type %s: want application/json or application/cbor", ctype))
	}
}

// submitEnvelope submits a request signed by its author.
func (s *Server) submitEnvelope(ctx context.Context, w http.ResponseWriter, env *wire.Envelope, wait bool) {
	if env.Kind != wire.KindRequest {
		writeError(w, http.StatusBadRequest, "bad_envelope", fmt.Sprintf("a %s envelope is not a request", env.Kind))
		return
	}
	if !wait {
		if err := s.b.SubmitAsync(env); err != nil {
			s.fail(w, err)
			return
		}
		writeJSON(w, http.StatusAccepted, s.accepted(env))
		return
	}
	reply, err := s.submit(ctx, env)
	if err != nil {
		s.fail(w, err)
		return
	}
	s.committed(w, env, reply)
}

// submitOp signs op with a free session and submits it. The session stays busy until the request has
// executed (or the commit timeout passed), also in async mode: a second request under the same key could
// supersede it.
func (s *Server) submitOp(ctx context.Context, w http.ResponseWriter, op []byte, wait bool, timeout time.Duration) {
	sess := s.sessions.Acquire(ctx.Done())
	if sess == nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			writeError(w, http.StatusGatewayTimeout, "timeout", fmt.Sprintf("all %d signing sessions stayed busy: too many transactions outstanding", s.sessions.Len()))
		} else {
			writeError(w, http.StatusServiceUnavailable, "canceled", "canceled while waiting for a signing session")
		}
		return
	}
	env, _, err := sess.NewRequest(s.chainID, op)
	if err != nil {
		s.sessions.Release(sess)
		s.fail(w, err)
		return
	}
	if wait {
		defer s.sessions.Release(sess)
		reply, err := s.submit(ctx, env)
		if err != nil {
			s.fail(w, err)
			return
		}
		s.committed(w, env, reply)
		return
	}
	if err := s.b.SubmitAsync(env); err != nil {
		s.sessions.Release(sess)
		s.fail(w, err)
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.sessions.Release(sess)
		ctx, cancel := context.WithTimeout(s.ctx, timeout)
		defer cancel()
		// Submitting the same envelope again waits for its execution (a replica treats the repeat as a
		// duplicate of the pending request, or answers it from its reply cache).
		if _, err := s.submit(ctx, env); err != nil && s.ctx.Err() == nil {
			s.log.Warn("async transaction did not execute in time", "client", sess.Key().PeerID(), "err", err)
		}
	}()
	writeJSON(w, http.StatusAccepted, s.accepted(env))
}

func (s *Server) accepted(env *wire.Envelope) apitypes.TxResponse {
	resp := apitypes.TxResponse{Status: "accepted", ID: hexDigest(env.ID())}
	if id, err := identity.PeerIDFromPublicKey(env.Author); err == nil {
		resp.Client = id.String()
	}
	if p, err := pbft.DecodeRequest(env.Payload); err == nil {
		resp.Timestamp = p.Timestamp
	}
	return resp
}

// committed writes the response for an executed request.
func (s *Server) committed(w http.ResponseWriter, env *wire.Envelope, reply *wire.Envelope) {
	resp := s.accepted(env)
	resp.Status = "committed"
	rep, err := pbft.OpenReply(reply)
	if err != nil {
		s.fail(w, fmt.Errorf("api: the replica's reply does not open: %w", err))
		return
	}
	replica := int(rep.Replica)
	resp.Height, resp.View, resp.Replica = rep.Seq, rep.View, &replica
	resp.ResultBase64 = base64.StdEncoding.EncodeToString(rep.Result)
	if res, err := kv.DecodeResult(rep.Result); err == nil {
		resp.Result = resultJSON(res)
	}
	if b, err := reply.Marshal(); err == nil {
		resp.Reply = base64.StdEncoding.EncodeToString(b)
	}
	writeJSON(w, http.StatusOK, resp)
}

// handleKV: GET /v1/kv/{key}, a local read.
func (s *Server) handleKV(w http.ResponseWriter, r *http.Request) {
	keyText := r.PathValue("key")
	key := []byte(keyText)
	switch enc := r.URL.Query().Get("encoding"); enc {
	case "", "utf8":
	case "base64":
		b, err := base64.URLEncoding.DecodeString(keyText)
		if err != nil {
			if b, err = base64.RawURLEncoding.DecodeString(keyText); err != nil {
				writeError(w, http.StatusBadRequest, "bad_key", "key: not URL-safe base64: "+err.Error())
				return
			}
		}
		key = b
	default:
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("?encoding=%q: want utf8 or base64", enc))
		return
	}
	q, err := kv.EncodeOp(kv.Get(key))
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_key", err.Error())
		return
	}
	ans, height, err := s.b.Query(q)
	if err != nil {
		s.fail(w, err)
		return
	}
	res, err := kv.DecodeResult(ans)
	if err != nil {
		s.fail(w, fmt.Errorf("api: the application's answer is not a key-value result: %w", err))
		return
	}
	out := apitypes.KVResponse{Key: keyText, Height: height, Found: res.Status == kv.StatusOK}
	if !out.Found {
		writeJSON(w, http.StatusNotFound, out)
		return
	}
	j := resultJSON(res)
	out.Value, out.ValueBase64 = j.Value, j.ValueBase64
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.b.Status())
}

func (s *Server) handlePeers(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.b.Status().Peers)
}

// handleHealth: 200 while the event loop runs.
func (s *Server) handleHealth(w http.ResponseWriter, _ *http.Request) {
	select {
	case <-s.b.Stopped():
		writeError(w, http.StatusServiceUnavailable, "stopped", "the replica has stopped")
		return
	default:
	}
	select {
	case <-s.b.Started():
	default:
		writeError(w, http.StatusServiceUnavailable, "starting", "the replica is starting")
		return
	}
	st := s.b.Status()
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "mode": st.Mode, "height": st.Height, "view": st.View, "peers": len(st.Peers)})
}

// handleBlock: GET /v1/blocks/{height}.
func (s *Server) handleBlock(w http.ResponseWriter, r *http.Request) {
	hs := r.PathValue("height")
	var height uint64
	if hs == "latest" {
		height = s.b.Head()
		if height == 0 {
			writeError(w, http.StatusNotFound, "not_found", "no blocks yet")
			return
		}
	} else {
		h, err := strconv.ParseUint(hs, 10, 64)
		if err != nil || h == 0 {
			writeError(w, http.StatusBadRequest, "bad_height", fmt.Sprintf("height %q: want a number >= 1 or \"latest\"", hs))
			return
		}
		height = h
	}
	raw, err := parseBool(r, "raw", true)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	b, err := s.b.Block(height)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no block %d on this replica (head %d): %v", height, s.b.Head(), err))
			return
		}
		s.fail(w, err)
		return
	}
	out, err := s.blockJSON(b, raw)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// handleBlocks: GET /v1/blocks?from=&limit=.
func (s *Server) handleBlocks(w http.ResponseWriter, r *http.Request) {
	head := s.b.Head()
	limit := uint64(20)
	if v := r.URL.Query().Get("limit"); v != "" {
		l, err := strconv.ParseUint(v, 10, 64)
		if err != nil || l == 0 || l > 100 {
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("?limit=%q: want 1 to 100", v))
			return
		}
		limit = l
	}
	from := uint64(1)
	if head > limit {
		from = head - limit + 1
	}
	if v := r.URL.Query().Get("from"); v != "" {
		f, err := strconv.ParseUint(v, 10, 64)
		if err != nil || f == 0 {
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("?from=%q: want a height >= 1", v))
			return
		}
		from = f
	}
	out := struct {
		Head   uint64                  `json:"head"`
		Blocks []apitypes.BlockSummary `json:"blocks"`
	}{Head: head, Blocks: []apitypes.BlockSummary{}}
	for h := from; h <= head && h < from+limit; h++ {
		b, err := s.b.Block(h)
		if errors.Is(err, store.ErrNotFound) {
			continue // below a snapshot this replica copied
		}
		if err != nil {
			s.fail(w, err)
			return
		}
		out.Blocks = append(out.Blocks, apitypes.BlockSummary{Height: b.Height, Hash: hexDigest(b.Hash()), Prev: hexDigest(b.Prev),
			View: b.View, Requests: len(b.Batch), AppDigest: hexDigest(b.AppDigest)})
	}
	writeJSON(w, http.StatusOK, out)
}

// blockJSON renders a block, decoding its requests and checking its certificate.
func (s *Server) blockJSON(b *store.Block, withRaw bool) (*apitypes.Block, error) {
	out := &apitypes.Block{Height: b.Height, Hash: hexDigest(b.Hash()), Prev: hexDigest(b.Prev), View: b.View,
		BatchDigest: hexDigest(b.BatchDigest), AppDigest: hexDigest(b.AppDigest),
		Requests: []apitypes.BlockRequest{}, Certificate: []apitypes.CommitMessage{}}
	for _, rb := range b.Batch {
		var br apitypes.BlockRequest
		env, err := wire.DecodeEnvelope(rb)
		if err != nil {
			br.Error = err.Error()
			out.Requests = append(out.Requests, br)
			continue
		}
		br.ID = hexDigest(env.ID())
		if id, err := identity.PeerIDFromPublicKey(env.Author); err == nil {
			br.Client = id.String()
		}
		if p, err := pbft.DecodeRequest(env.Payload); err == nil {
			br.Timestamp = p.Timestamp
			br.OpBase64 = base64.StdEncoding.EncodeToString(p.Op)
			if op, err := kv.DecodeOp(p.Op); err == nil {
				br.Op = opJSON(op)
			}
		} else {
			br.Error = err.Error()
		}
		out.Requests = append(out.Requests, br)
	}
	for _, cb := range b.Cert {
		out.Certificate = append(out.Certificate, s.commitJSON(cb, b))
	}
	if withRaw {
		raw, err := b.Marshal()
		if err != nil {
			return nil, err
		}
		out.Raw = base64.StdEncoding.EncodeToString(raw)
	}
	return out, nil
}

func (s *Server) commitJSON(data []byte, b *store.Block) apitypes.CommitMessage {
	cm := apitypes.CommitMessage{Replica: -1}
	env, err := wire.DecodeEnvelope(data)
	if err != nil {
		cm.Error = err.Error()
		return cm
	}
	cm.Signature = base64.StdEncoding.EncodeToString(env.Sig)
	if i, ok := s.g.IndexOfKey(env.Author); ok {
		cm.Replica = i
		cm.PeerID = s.g.PeerID(i).String()
	}
	if env.Kind != wire.KindCommit {
		cm.Error = fmt.Sprintf("a %s envelope, not a commit", env.Kind)
		return cm
	}
	c, err := pbft.DecodeCommit(env.Payload)
	if err != nil {
		cm.Error = err.Error()
		return cm
	}
	cm.View, cm.Seq, cm.Digest = c.View, c.Seq, hex.EncodeToString(c.Digest[:])
	switch {
	case cm.Replica < 0:
		cm.Error = "signed by a key that is not a replica"
	case env.ChainID != s.chainID:
		cm.Error = "another chain"
	case c.Seq != b.Height || c.Digest != b.BatchDigest:
		cm.Error = "does not commit this block's height and batch"
	case s.verifier.Verify(env) != nil:
		cm.Error = "signature does not verify"
	default:
		cm.Valid = true
	}
	return cm
}

// Trace limits: the default number of slots returned and the most one request may ask for.
const (
	defaultTraceLimit = 100
	maxTraceLimit     = 10000
)

// handleTrace serves GET /v1/trace?from=SEQ&limit=N: the replica's slot records from sequence number SEQ
// upward (without from: the latest N), at most N (default 100), and its view change records.
func (s *Server) handleTrace(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := defaultTraceLimit
	if v := q.Get("limit"); v != "" {
		l, err := strconv.Atoi(v)
		if err != nil || l < 1 || l > maxTraceLimit {
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("?limit=%q: want 1 to %d", v, maxTraceLimit))
			return
		}
		limit = l
	}
	var from uint64
	if v := q.Get("from"); v != "" {
		f, err := strconv.ParseUint(v, 10, 64)
		if err != nil || f == 0 {
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("?from=%q: want a sequence number >= 1", v))
			return
		}
		from = f
	}
	slots, vcs := s.b.Traces(from, limit)
	out := apitypes.TraceResponse{Replica: s.b.Status().Replica, Enabled: s.b.TraceEnabled(), Now: time.Now().UnixNano(),
		Slots: slots, ViewChanges: vcs}
	if out.Slots == nil {
		out.Slots = []trace.Slot{}
	}
	if out.ViewChanges == nil {
		out.ViewChanges = []trace.ViewChange{}
	}
	writeJSON(w, http.StatusOK, out)
}
