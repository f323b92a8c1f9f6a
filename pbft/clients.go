package pbft

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/p2pbft/p2pbft/wire"
)

// The client table: per client, the last executed timestamp and its result (the cached reply). It is part of
// the checkpointed state (its digest goes into every checkpoint digest), so that exactly-once execution
// survives view changes, restarts and state transfer. Replicas deduplicate by the client's timestamps, never
// by their own clocks.

// RequestAge is what the exactly-once rule (ClassifyRequest) makes of a client's request.
type RequestAge int

const (
	// RequestNew is newer than the client's last executed request: it executes, once, when ordered.
	RequestNew RequestAge = iota
	// RequestRepeat is the client's last executed request again: it is answered from the stored reply and
	// not executed again.
	RequestRepeat
	// RequestStale is older than the client's last executed request: it is dropped.
	RequestStale
)

// ClassifyRequest is the exactly-once rule: it classifies a client's request with timestamp ts against
// last, the last timestamp executed for that client (0 for none). Timestamps, not replica clocks, decide.
func ClassifyRequest(ts, last uint64) RequestAge {
	switch {
	case ts > last:
		return RequestNew
	case ts == last:
		return RequestRepeat
	}
	return RequestStale
}

// ExactlyOnce applies ClassifyRequest along a chain of committed batches, as the engine does when it
// delivers them: it keeps per client the last timestamp executed, and only a RequestNew request executes.
// Replayed from the first batch, it tells which requests of each batch executed. Make it with
// make(ExactlyOnce) or ExactlyOnce{}.
type ExactlyOnce map[string]uint64

// Admit reports whether the request with timestamp ts of client (its public key), ordered next, executes,
// and if so records it as the client's last executed request.
func (x ExactlyOnce) Admit(client []byte, ts uint64) bool {
	c := string(client)
	if ClassifyRequest(ts, x[c]) != RequestNew {
		return false
	}
	x[c] = ts
	return true
}

type clientEntry struct {
	execTS uint64 // last executed timestamp, 0 for none
	seq    uint64 // sequence number of the batch that executed it
	result []byte
	// delivTS is the last timestamp handed to the driver for execution (>= execTS): the filter for batches
	// delivered before the previous ones were reported executed.
	delivTS uint64
	// reply caches the signed reply this replica sends for a duplicate of the last request. Local to this
	// replica (signed by it), not part of the checkpointed state.
	reply *wire.Envelope
}

type clientTable struct {
	m map[string]*clientEntry
}

func newClientTable() *clientTable { return &clientTable{m: make(map[string]*clientEntry)} }

// ClientRecord is one row of the encoded client table.
type ClientRecord struct {
	_         struct{} `cbor:",toarray"`
	Client    []byte
	Timestamp uint64
	Seq       uint64
	Result    []byte
}

// encode returns the table's canonical encoding: the executed rows sorted by client key.
func (t *clientTable) encode() ([]byte, error) {
	keys := make([]string, 0, len(t.m))
	for k, e := range t.m {
		if e.execTS > 0 {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	recs := make([]ClientRecord, len(keys))
	for i, k := range keys {
		e := t.m[k]
		recs[i] = ClientRecord{Client: []byte(k), Timestamp: e.execTS, Seq: e.seq, Result: e.result}
	}
	return wire.Marshal(recs)
}

// DecodeClientTable decodes an encoded client table and checks that it is canonical: rows sorted by client
// key without duplicates, keys of public-key size, timestamps > 0.
func DecodeClientTable(b []byte) ([]ClientRecord, error) {
	var recs []ClientRecord
	if err := wire.Unmarshal(b, &recs); err != nil {
		return nil, fmt.Errorf("pbft: decode client table: %w", err)
	}
	for i := range recs {
		r := &recs[i]
		if len(r.Client) != wire.PublicKeySize || r.Timestamp == 0 {
			return nil, fmt.Errorf("pbft: decode client table: row %d malformed", i)
		}
		if i > 0 && bytes.Compare(recs[i-1].Client, r.Client) >= 0 {
			return nil, errors.New("pbft: decode client table: rows not sorted or duplicated")
		}
	}
	return recs, nil
}

func clientTableFrom(b []byte) (*clientTable, error) {
	recs, err := DecodeClientTable(b)
	if err != nil {
		return nil, err
	}
	t := newClientTable()
	for _, r := range recs {
		t.m[string(r.Client)] = &clientEntry{execTS: r.Timestamp, seq: r.Seq, result: r.Result, delivTS: r.Timestamp}
	}
	return t, nil
}

func (t *clientTable) get(c string) *clientEntry { return t.m[c] }

func (t *clientTable) getOrAdd(c string) *clientEntry {
	e := t.m[c]
	if e == nil {
		e = &clientEntry{}
		t.m[strings.Clone(c)] = e
	}
	return e
}

// resetDelivered forgets deliveries that were not executed (after a restart or a snapshot install).
func (t *clientTable) resetDelivered() {
	for k, e := range t.m {
		if e.execTS == 0 {
			delete(t.m, k)
			continue
		}
		e.delivTS = e.execTS
	}
}
