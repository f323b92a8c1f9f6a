package statesync

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/p2pbft/p2pbft/node/app"
	"github.com/p2pbft/p2pbft/node/store"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
	"github.com/p2pbft/p2pbft/wire/wiretest"
)

// Fakes of the Syncer's interfaces: peers that serve a chain and a snapshot (honestly or not), an
// installer that records what the Syncer hands it, a clock, metrics and a log that remember.

const testChain = "statesync-test"

var (
	certKey   = wiretest.NewKey("replica-0") // signs the only COMMIT of every genuine certificate
	forgerKey = wiretest.NewKey("forger")
	clientKey = wiretest.NewKey("client")
	peerKey   = wiretest.NewKey("peer")
)

// checkCert is the fake certificate check: a certificate is one COMMIT by certKey.
func checkCert(_ *store.Block, cert []*wire.Envelope) error {
	if len(cert) != 1 || !bytes.Equal(cert[0].Author, certKey.PublicKey()) {
		return errors.New("certificate not signed by a quorum")
	}
	return nil
}

func stateDigest(state []byte) wire.Digest { return sha256.Sum256(state) }

// fixture is what the honest peers hold: blocks 1..height and the snapshot at seq.
type fixture struct {
	blocks    []*store.Block // blocks[h] for h >= 1
	seq       uint64
	state     []byte // the application state at seq
	appDigest wire.Digest
	table     []byte
	digest    wire.Digest // the certified checkpoint digest at seq
}

func newFixture(t *testing.T, height, seq uint64) *fixture {
	t.Helper()
	f := &fixture{blocks: make([]*store.Block, height+1), seq: seq,
		state: bytes.Repeat([]byte("state!"), 50), table: bytes.Repeat([]byte("table"), 20)}
	f.appDigest = stateDigest(f.state)
	f.digest = pbft.CheckpointDigest(seq, f.appDigest, pbft.ClientTableDigest(f.table))
	var prev wire.Digest
	for h := uint64(1); h <= height; h++ {
		ad := wire.Digest{byte(h), byte(h >> 8)}
		if h == seq {
			ad = f.appDigest
		}
		f.blocks[h] = makeBlock(t, h, prev, ad, certKey)
		prev = f.blocks[h].Hash()
	}
	return f
}

func makeBlock(t *testing.T, h uint64, prev, appDigest wire.Digest, signer *wiretest.Key) *store.Block {
	t.Helper()
	req, err := wire.Seal(clientKey, testChain, wire.KindRequest, fmt.Appendf(nil, "request %d", h))
	if err != nil {
		t.Fatal(err)
	}
	commit, err := wire.Seal(signer, testChain, wire.KindCommit, fmt.Appendf(nil, "commit %d", h))
	if err != nil {
		t.Fatal(err)
	}
	return &store.Block{Height: h, Prev: prev, View: 1, BatchDigest: pbft.BatchDigest([]wire.Digest{req.ID()}),
		AppDigest: appDigest, Batch: [][]byte{encode(t, req)}, Cert: [][]byte{encode(t, commit)}}
}

func encode(t *testing.T, v interface{ Marshal() ([]byte, error) }) []byte {
	t.Helper()
	b, err := v.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Peer behaviours.
const (
	honest     = "honest"
	garbage    = "garbage"     // answers bytes that do not decode
	wrongKind  = "wrong-kind"  // answers with an envelope of another kind
	forged     = "forged"      // blocks whose batch does not hash to their batch digest
	uncertain  = "uncertified" // blocks whose certificate is signed by someone else
	lying      = "lying"       // a manifest whose application digest is not the certified one
	badTable   = "bad-table"   // a client table that does not hash to the certified digest
	badState   = "bad-state"   // application chunks of another state
	silent     = "silent"      // never answers
	shortBlock = "short"       // blocks from the wrong height
)

type peer struct {
	t    *testing.T
	f    *fixture
	mode string
}

func (p *peer) serve(ctx context.Context, req *Request) (*wire.Envelope, error) {
	f := p.f
	switch p.mode {
	case silent:
		<-ctx.Done()
		return nil, ctx.Err()
	case garbage:
		return &wire.Envelope{Kind: wire.KindStateResponse, Payload: []byte{0xff, 0x13, 0x37}}, nil
	case wrongKind:
		return wire.Seal(peerKey, testChain, wire.KindRequest, []byte("hello"))
	case honest: // answers as a replica does
		limit := MaxPart // what was asked, within the node's bound (Node.serveLimit)
		if req.MaxBytes > 0 && int(req.MaxBytes) < limit {
			limit = int(req.MaxBytes)
		}
		r, err := Serve(fixtureSource{f}, req, limit)
		if err != nil {
			return nil, err
		}
		return NewResponse(peerKey, testChain, r)
	}
	r := &Response{Type: req.Type, Seq: req.Seq}
	switch req.Type {
	case TypeManifest:
		r.AppDigest, r.TableDigest, r.TableSize = f.appDigest, pbft.ClientTableDigest(f.table), uint64(len(f.table))
		r.Block = encode(p.t, f.blocks[req.Seq])
		if p.mode == lying {
			r.AppDigest = wire.Digest{0xba, 0xd}
		}
	case TypeTable:
		data := f.table
		if p.mode == badTable {
			data = bytes.ToUpper(data)
		}
		r.Data, r.More = part(data, req.Offset, int(req.MaxBytes))
	case TypeChunk:
		data := f.state
		if p.mode == badState {
			data = bytes.ToUpper(data)
		}
		var off uint64
		if len(req.Cursor) == 8 {
			off = binary.BigEndian.Uint64(req.Cursor)
		}
		r.Data, r.More = part(data, off, int(req.MaxBytes))
	case TypeBlocks:
		for h := req.Seq; h <= req.To && h < uint64(len(f.blocks)); h++ {
			b := *f.blocks[h]
			switch p.mode {
			case forged:
				b.BatchDigest = wire.Digest{0xf0}
			case uncertain:
				b = *makeBlock(p.t, h, b.Prev, b.AppDigest, forgerKey)
			case shortBlock:
				b.Height++
			}
			r.Blocks = append(r.Blocks, encode(p.t, &b))
		}
	}
	return NewResponse(peerKey, testChain, r)
}

func part(data []byte, off uint64, max int) ([]byte, bool) {
	if off > uint64(len(data)) {
		return nil, false
	}
	end := min(len(data), int(off)+max)
	return data[off:end], end < len(data)
}

// fetcher is a set of peers, replica i+1 behaving as modes[i].
type fetcher struct{ peers map[int]*peer }

func (f *fetcher) Replicas() []int {
	var ps []int
	for p := range f.peers {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

func (f *fetcher) Fetch(ctx context.Context, p int, req *Request) (*wire.Envelope, error) {
	pr := f.peers[p]
	if pr == nil {
		return nil, fmt.Errorf("replica %d not connected", p)
	}
	return pr.serve(ctx, req)
}

// restore is an application restore: it accepts any chunk and checks the state's digest on Finish.
type restore struct {
	mu                sync.Mutex
	got               []byte
	want              wire.Digest
	finished, aborted bool
	applies           int
}

func (r *restore) Cursor() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.got) == 0 {
		return nil
	}
	return binary.BigEndian.AppendUint64(nil, uint64(len(r.got)))
}

func (r *restore) Apply(chunk []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, chunk...)
	r.applies++
	return nil
}

func (r *restore) Finish(app.Writer) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if d := stateDigest(r.got); d != r.want {
		return fmt.Errorf("%w: state %s, want %s", app.ErrDigestMismatch, d, r.want)
	}
	r.finished = true
	return nil
}

func (r *restore) Abort() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.aborted = true
	return nil
}

// installer records what the Syncer hands the replica, and the Syncer's progress at each step.
type installer struct {
	mu        sync.Mutex
	s         *Syncer
	applied   []*Block
	restores  []*restore
	installed *Snapshot
	progress  []Progress
}

func (in *installer) record() {
	if p := in.s.Progress(); p != nil {
		in.progress = append(in.progress, *p)
	}
}

func (in *installer) ApplyBlocks(_ context.Context, blocks []*Block) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if len(in.applied) > 0 && blocks[0].Block.Height != in.applied[len(in.applied)-1].Block.Height+1 {
		return fmt.Errorf("blocks from %d after %d", blocks[0].Block.Height, in.applied[len(in.applied)-1].Block.Height)
	}
	in.applied = append(in.applied, blocks...)
	in.record()
	return nil
}

func (in *installer) Restore(_ uint64, appDigest wire.Digest) (app.SnapshotRestore, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	r := &restore{want: appDigest}
	in.restores = append(in.restores, r)
	return r, nil
}

func (in *installer) Install(_ context.Context, s *Snapshot) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.record()
	if err := s.Restore.Finish(nil); err != nil {
		return err
	}
	in.installed = s
	return nil
}

type replica struct {
	mu    sync.Mutex
	needs bool
}

func (r *replica) View() uint64 { return 3 }
func (r *replica) Needs(uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.needs
}

type metrics struct {
	mu        sync.Mutex
	transfers map[string]int
	bytes     int
	blocks    int
}

func (m *metrics) Transfer(method, result string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.transfers[method+"/"+result]++
}

func (m *metrics) Bytes(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.bytes += n
}

func (m *metrics) Blocks(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.blocks += n
}

func (m *metrics) get(key string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.transfers[key]
}

// clock moves by step at every reading, and by advance; After waits a millisecond, whatever asked.
type clock struct {
	mu   sync.Mutex
	now  time.Time
	step time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(c.step)
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func (c *clock) After(time.Duration) <-chan time.Time { return time.After(time.Millisecond) }

// logs remembers every record, its attributes as text.
type logs struct {
	mu   sync.Mutex
	recs []logRecord
}

type logRecord struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

type logHandler struct{ l *logs }

func (h logHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h logHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h logHandler) WithGroup(string) slog.Handler            { return h }
func (h logHandler) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{level: r.Level, msg: r.Message, attrs: map[string]string{}}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.String()
		return true
	})
	h.l.mu.Lock()
	defer h.l.mu.Unlock()
	h.l.recs = append(h.l.recs, rec)
	return nil
}

// find returns the records with message msg.
func (l *logs) find(msg string) []logRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []logRecord
	for _, r := range l.recs {
		if r.msg == msg {
			out = append(out, r)
		}
	}
	return out
}

// harness is a Syncer wired to fakes.
type harness struct {
	t       *testing.T
	f       *fixture
	s       *Syncer
	fetcher *fetcher
	ins     *installer
	rep     *replica
	m       *metrics
	logs    *logs
	clock   *clock
}

// newHarness returns a Syncer for replica 0 of 1+len(modes) replicas, with peer i+1 behaving as modes[i].
func newHarness(t *testing.T, f *fixture, modes ...string) *harness {
	h := &harness{t: t, f: f, fetcher: &fetcher{peers: map[int]*peer{}}, ins: &installer{}, rep: &replica{needs: true},
		m: &metrics{transfers: map[string]int{}}, logs: &logs{}, clock: &clock{now: time.Unix(1e9, 0)}}
	for i, m := range modes {
		h.fetcher.peers[i+1] = &peer{t: t, f: f, mode: m}
	}
	n := len(modes) + 1
	h.s = New(Options{Quorums: pbft.QuorumsOf(n), BlockSyncMax: 50, RequestTimeout: 5 * time.Second, ChunkBytes: 64,
		Fetcher: h.fetcher, CertCheck: checkCert, Installer: h.ins, Replica: h.rep, Metrics: h.m, Clock: h.clock,
		Log: slog.New(logHandler{h.logs})})
	h.ins.s = h.s
	t.Cleanup(h.s.Stop)
	return h
}

func (h *harness) start(st pbft.StateTransfer) {
	h.s.Start(context.Background(), st)
}

// wait waits until cond holds.
func (h *harness) wait(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.logs.mu.Lock()
			defer h.logs.mu.Unlock()
			h.t.Fatalf("timed out waiting for %s; logs: %+v", what, h.logs.recs)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitFailure waits for a failed attempt whose error mentions want.
func (h *harness) waitFailure(want string) {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var errs []string
		for _, r := range h.logs.find("state transfer attempt failed") {
			if strings.Contains(r.attrs["err"], want) {
				return
			}
			errs = append(errs, r.attrs["err"])
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("no failed attempt mentions %q; failures: %q", want, errs)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
