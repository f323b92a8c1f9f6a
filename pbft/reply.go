package pbft

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/p2pbft/p2pbft/wire"
)

// Replies. A replica signs one KindReply envelope per executed batch, not one per request: the signed
// payload (ReplyHeader) carries the root of a Merkle tree whose leaves are the batch's (client, timestamp,
// result) triples, and each client's copy of the envelope carries its leaf and the path to the root in the
// unsigned Body (ReplyProof). A client checks the signature, then the path (OpenReply), and accepts a result
// once f+1 distinct replicas sent matching (timestamp, result) pairs (ReplyCollector). Signing per batch keeps
// reply cost flat in the batch size (one signature per batch instead of a thousand).

// ReplyHeader is the signed payload of a KindReply envelope.
type ReplyHeader struct {
	_       struct{}    `cbor:",toarray"`
	View    uint64      // view in which the replica executed the batch (or answered a duplicate)
	Seq     uint64      // sequence number of the batch
	Replica uint32      // index of the replying replica (must match the envelope's author)
	Count   uint32      // number of leaves
	Root    wire.Digest // Merkle root over the leaves
}

// ReplyProof travels in the Body of a KindReply envelope: one client's leaf and its Merkle path.
type ReplyProof struct {
	_         struct{} `cbor:",toarray"`
	Index     uint32
	Client    []byte
	Timestamp uint64
	Result    []byte
	Path      []wire.Digest
}

// Reply is a reply as a client sees it after OpenReply.
type Reply struct {
	View      uint64
	Seq       uint64
	Replica   uint32
	Client    []byte
	Timestamp uint64
	Result    []byte
}

const replyLeafTag = "p2pbft/reply/v1\x00"

// ReplyLeafHash is the Merkle leaf of one reply, the (client, timestamp, result) triple, in the tree whose
// root a ReplyHeader signs: SHA-256 over a zero byte, the tag "p2pbft/reply/v1\x00", then the client's
// length and bytes, the timestamp and the result's length and bytes (integers 8 bytes big-endian). A
// one-leaf tree's root is its leaf.
func ReplyLeafHash(client []byte, ts uint64, result []byte) wire.Digest {
	h := sha256.New()
	var b [8]byte
	h.Write([]byte{0})
	h.Write([]byte(replyLeafTag))
	binary.BigEndian.PutUint64(b[:], uint64(len(client)))
	h.Write(b[:])
	h.Write(client)
	binary.BigEndian.PutUint64(b[:], ts)
	h.Write(b[:])
	binary.BigEndian.PutUint64(b[:], uint64(len(result)))
	h.Write(b[:])
	h.Write(result)
	var d wire.Digest
	h.Sum(d[:0])
	return d
}

func replyNode(l, r wire.Digest) wire.Digest {
	var b [65]byte
	b[0] = 1
	copy(b[1:], l[:])
	copy(b[33:], r[:])
	return sha256.Sum256(b[:])
}

// merkleLevels builds the tree bottom-up: nodes are paired left to right and an odd last node is promoted
// to the next level unchanged.
func merkleLevels(leaves []wire.Digest) [][]wire.Digest {
	levels := [][]wire.Digest{leaves}
	for cur := leaves; len(cur) > 1; {
		next := make([]wire.Digest, (len(cur)+1)/2)
		for i := 0; i < len(cur)/2; i++ {
			next[i] = replyNode(cur[2*i], cur[2*i+1])
		}
		if len(cur)%2 == 1 {
			next[len(next)-1] = cur[len(cur)-1]
		}
		levels = append(levels, next)
		cur = next
	}
	return levels
}

func merklePath(levels [][]wire.Digest, i int) []wire.Digest {
	var path []wire.Digest
	for _, lv := range levels[:len(levels)-1] {
		if i%2 == 1 {
			path = append(path, lv[i-1])
		} else if i+1 < len(lv) {
			path = append(path, lv[i+1])
		}
		i /= 2
	}
	return path
}

func merkleRoot(leaf wire.Digest, index, count int, path []wire.Digest) (wire.Digest, error) {
	cur := leaf
	width := count
	for width > 1 {
		switch {
		case index%2 == 1:
			if len(path) == 0 {
				return cur, errors.New("path too short")
			}
			cur = replyNode(path[0], cur)
			path = path[1:]
		case index+1 < width:
			if len(path) == 0 {
				return cur, errors.New("path too short")
			}
			cur = replyNode(cur, path[0])
			path = path[1:]
		}
		index /= 2
		width = (width + 1) / 2
	}
	if len(path) != 0 {
		return cur, errors.New("path too long")
	}
	return cur, nil
}

// replyBatch is one signed reply header and the leaves it covers; client envelopes are built on demand.
type replyBatch struct {
	header  *wire.Envelope
	levels  [][]wire.Digest
	clients [][]byte
	stamps  []uint64
	results [][]byte
}

// ReplyMessage is a reply the driver must send to a client (Ready.Replies).
type ReplyMessage struct {
	// Client is the client's public key (the request envelope's Author).
	Client    []byte
	Timestamp uint64
	// Seq is the block the request executed in, or 0 for a reply resent to a repeated request.
	Seq   uint64
	batch *replyBatch
	index int
}

// Envelope builds the client's KindReply envelope: the shared signed header with this client's leaf and
// Merkle path in Body.
func (m ReplyMessage) Envelope() (*wire.Envelope, error) {
	b := m.batch
	proof := ReplyProof{Index: uint32(m.index), Client: b.clients[m.index], Timestamp: b.stamps[m.index],
		Result: b.results[m.index], Path: merklePath(b.levels, m.index)}
	body, err := wire.Marshal(&proof)
	if err != nil {
		return nil, err
	}
	e := b.header.WithoutBody()
	e.Body = body
	return e, nil
}

// Result returns the result the reply carries.
func (m ReplyMessage) Result() []byte { return m.batch.results[m.index] }

// newReplyBatch signs a reply header over the given leaves.
func newReplyBatch(s wire.Signer, chainID string, view, seq uint64, replica int, clients [][]byte, stamps []uint64, results [][]byte) (*replyBatch, error) {
	leaves := make([]wire.Digest, len(clients))
	for i := range clients {
		leaves[i] = ReplyLeafHash(clients[i], stamps[i], results[i])
	}
	levels := merkleLevels(leaves)
	hdr := ReplyHeader{View: view, Seq: seq, Replica: uint32(replica), Count: uint32(len(leaves)), Root: levels[len(levels)-1][0]}
	p, err := wire.Marshal(&hdr)
	if err != nil {
		return nil, err
	}
	env, err := wire.Seal(s, chainID, wire.KindReply, p)
	if err != nil {
		return nil, err
	}
	return &replyBatch{header: env, levels: levels, clients: clients, stamps: stamps, results: results}, nil
}

// DecodeReplyHeader decodes a ReplyHeader payload.
func DecodeReplyHeader(b []byte) (*ReplyHeader, error) {
	h, err := decodeStrict[ReplyHeader]("reply header", b)
	if err == nil && h.Count == 0 {
		err = errors.New("pbft: decode reply header: no leaves")
	}
	return h, err
}

// DecodeReplyProof decodes a ReplyProof body.
func DecodeReplyProof(b []byte) (*ReplyProof, error) {
	p, err := decodeStrict[ReplyProof]("reply proof", b)
	if err == nil && len(p.Path) > maxReplyPathDepth {
		err = fmt.Errorf("pbft: decode reply proof: path of %d: %w", len(p.Path), errBounds)
	}
	return p, err
}

// OpenReply decodes a KindReply envelope and checks its Merkle proof against the signed root. It does not
// check the signature (verify the envelope with a wire.Verifier first) or that the author is a replica and
// matches Replica (ReplyCollector does both).
func OpenReply(e *wire.Envelope) (*Reply, error) {
	if e == nil || e.Kind != wire.KindReply {
		return nil, errors.New("pbft: open reply: not a reply envelope")
	}
	h, err := DecodeReplyHeader(e.Payload)
	if err != nil {
		return nil, err
	}
	p, err := DecodeReplyProof(e.Body)
	if err != nil {
		return nil, err
	}
	if p.Index >= h.Count {
		return nil, fmt.Errorf("pbft: open reply: leaf %d of %d", p.Index, h.Count)
	}
	root, err := merkleRoot(ReplyLeafHash(p.Client, p.Timestamp, p.Result), int(p.Index), int(h.Count), p.Path)
	if err != nil {
		return nil, fmt.Errorf("pbft: open reply: %w", err)
	}
	if root != h.Root {
		return nil, errors.New("pbft: open reply: Merkle proof does not match the signed root")
	}
	return &Reply{View: h.View, Seq: h.Seq, Replica: h.Replica, Client: p.Client, Timestamp: p.Timestamp, Result: p.Result}, nil
}

// ReplyCollector is the client side of replies: it accepts a result once f+1 distinct replicas sent matching
// replies for the awaited request. It verifies each envelope's signature and that the author is the replica
// the reply names. Not safe for concurrent use.
type ReplyCollector struct {
	chainID  string
	replicas map[string]int
	verifier wire.Verifier
	quorum   Quorums
	client   []byte
	ts       uint64
	votes    map[int]*Reply
	// View is the highest view seen in an accepted-quorum reply; a client sends its next request to
	// replica View mod n.
	View uint64
}

// NewReplyCollector returns a collector for a client (its public key) of the replica set given by public keys
// in replica order.
func NewReplyCollector(chainID string, replicas [][]byte, v wire.Verifier, client []byte) *ReplyCollector {
	m := make(map[string]int, len(replicas))
	for i, k := range replicas {
		m[string(k)] = i
	}
	return &ReplyCollector{chainID: chainID, replicas: m, verifier: v, quorum: QuorumsOf(len(replicas)), client: client}
}

// Await starts waiting for the replies to the request with the given timestamp, forgetting earlier ones.
func (c *ReplyCollector) Await(ts uint64) {
	c.ts = ts
	c.votes = make(map[int]*Reply)
}

// Add offers one reply envelope. It returns the accepted reply once f+1 distinct replicas agree on the result,
// nil while waiting, and an error for an envelope that is invalid or not for the awaited request.
func (c *ReplyCollector) Add(e *wire.Envelope) (*Reply, error) {
	if e == nil || e.ChainID != c.chainID {
		return nil, errors.New("pbft: reply: wrong chain")
	}
	idx, ok := c.replicas[string(e.Author)]
	if !ok {
		return nil, errors.New("pbft: reply: author is not a replica")
	}
	r, err := OpenReply(e)
	if err != nil {
		return nil, err
	}
	if int(r.Replica) != idx {
		return nil, fmt.Errorf("pbft: reply: names replica %d but is signed by %d", r.Replica, idx)
	}
	if !bytes.Equal(r.Client, c.client) || r.Timestamp != c.ts || c.votes == nil {
		return nil, fmt.Errorf("pbft: reply: not for the awaited request (timestamp %d)", r.Timestamp)
	}
	if err := c.verifier.Verify(e); err != nil {
		return nil, fmt.Errorf("pbft: reply: %w", err)
	}
	c.votes[idx] = r
	n := 0
	for _, o := range c.votes {
		if bytes.Equal(o.Result, r.Result) {
			n++
		}
	}
	if n >= c.quorum.Weak() {
		if r.View > c.View {
			c.View = r.View
		}
		return r, nil
	}
	return nil, nil
}

// Reply bundles. A replica answers the clients of one link with one bundle per executed batch: the signed
// header once, the leaves of the link's requests, and the fewest tree nodes that rebuild the signed root from
// them (a Merkle multiproof: a sibling is sent only when no leaf of the bundle lies under it). A client
// checks the header's signature once per batch and replica and the multiproof once per bundle: about two
// hashes per reply, however large the batch, where separate paths would cost log2(batch size) each.

// maxBundleLeaves bounds the leaves of one bundle (and the leaves of a reply header's tree it accepts).
const maxBundleLeaves = 1 << 16

// ReplyLeaf is one reply in a bundle: the leaf at Index of the header's tree.
type ReplyLeaf struct {
	_         struct{} `cbor:",toarray"`
	Index     uint32
	Client    []byte
	Timestamp uint64
	Result    []byte
}

// ReplyBundle is the replies of one batch for the clients of one link.
type ReplyBundle struct {
	_ struct{} `cbor:",toarray"`
	// Header is the signed KindReply envelope of the batch, without Body.
	Header *wire.Envelope
	// Leaves are the replies, in increasing Index order.
	Leaves []ReplyLeaf
	// Nodes are the tree nodes the leaves need to rebuild the root, 32 bytes each, in the order the
	// rebuild consumes them (level by level from the leaves up, left to right).
	Nodes []byte
}

// EncodeReplyBundle encodes the replies msgs, which must all come from one batch, as one ReplyBundle.
func EncodeReplyBundle(msgs []ReplyMessage) ([]byte, error) {
	if len(msgs) == 0 {
		return nil, errors.New("pbft: reply bundle: no replies")
	}
	b := msgs[0].batch
	idx := make([]int, len(msgs))
	for i, m := range msgs {
		if m.batch != b {
			return nil, errors.New("pbft: reply bundle: replies of different batches")
		}
		idx[i] = m.index
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	rb := ReplyBundle{Header: b.header.WithoutBody(), Leaves: make([]ReplyLeaf, len(idx))}
	for i, k := range idx {
		rb.Leaves[i] = ReplyLeaf{Index: uint32(k), Client: b.clients[k], Timestamp: b.stamps[k], Result: b.results[k]}
	}
	rb.Nodes = multiproofNodes(b.levels, idx)
	return wire.Marshal(&rb)
}

// multiproofNodes returns the nodes a multiproof for the leaves at idx (sorted, distinct) needs, in the
// order rebuildRoot consumes them.
func multiproofNodes(levels [][]wire.Digest, idx []int) []byte {
	var out []byte
	known := idx
	for _, lv := range levels[:len(levels)-1] {
		width := len(lv)
		next := make([]int, 0, len(known))
		for i := 0; i < len(known); {
			k := known[i]
			switch {
			case k%2 == 0 && k+1 < width:
				if i+1 < len(known) && known[i+1] == k+1 {
					i += 2
				} else {
					out = append(out, lv[k+1][:]...)
					i++
				}
			case k%2 == 0: // the last node of an odd level: promoted unchanged
				i++
			default:
				out = append(out, lv[k-1][:]...)
				i++
			}
			next = append(next, k/2)
		}
		known = next
	}
	return out
}

// rebuildRoot computes the root of a tree of count leaves from the leaves given (sorted by index, distinct)
// and the multiproof nodes; every node must be used.
func rebuildRoot(count int, idx []int, hashes []wire.Digest, nodes []byte) (wire.Digest, error) {
	if len(nodes)%32 != 0 {
		return wire.Digest{}, errors.New("multiproof nodes are not whole digests")
	}
	pop := func() (wire.Digest, bool) {
		var d wire.Digest
		if len(nodes) < 32 {
			return d, false
		}
		copy(d[:], nodes)
		nodes = nodes[32:]
		return d, true
	}
	width := count
	for width > 1 {
		nIdx := idx[:0:0]
		nHash := hashes[:0:0]
		for i := 0; i < len(idx); {
			k, h := idx[i], hashes[i]
			switch {
			case k%2 == 0 && k+1 < width:
				var right wire.Digest
				if i+1 < len(idx) && idx[i+1] == k+1 {
					right = hashes[i+1]
					i += 2
				} else {
					d, ok := pop()
					if !ok {
						return wire.Digest{}, errors.New("multiproof too short")
					}
					right = d
					i++
				}
				h = replyNode(h, right)
			case k%2 == 0:
				i++
			default:
				left, ok := pop()
				if !ok {
					return wire.Digest{}, errors.New("multiproof too short")
				}
				h = replyNode(left, h)
				i++
			}
			nIdx = append(nIdx, k/2)
			nHash = append(nHash, h)
		}
		idx, hashes = nIdx, nHash
		width = (width + 1) / 2
	}
	if len(nodes) != 0 {
		return wire.Digest{}, errors.New("multiproof too long")
	}
	return hashes[0], nil
}

// SameBatch reports whether two replies come from the same signed batch (and so may share a bundle).
func (m ReplyMessage) SameBatch(o ReplyMessage) bool { return m.batch == o.batch }

// OpenedBundle is a decoded reply bundle. Its header is decoded, not verified; Verify checks the
// multiproof.
type OpenedBundle struct {
	// Envelope is the signed header envelope; verify it with a wire.Verifier.
	Envelope *wire.Envelope
	// Header is its decoded payload.
	Header *ReplyHeader
	// Leaves are the bundle's replies, unchecked until Verify.
	Leaves []ReplyLeaf
	nodes  []byte
}

// DecodeReplyBundle decodes a bundle and its header and checks its bounds: leaves in increasing index order
// inside the header's tree. It neither verifies the header's signature nor the multiproof (Verify).
func DecodeReplyBundle(b []byte) (*OpenedBundle, error) {
	rb, err := decodeStrict[ReplyBundle]("reply bundle", b)
	if err != nil {
		return nil, err
	}
	if rb.Header == nil || rb.Header.Kind != wire.KindReply || len(rb.Header.Body) > 0 {
		return nil, errors.New("pbft: decode reply bundle: the header is not a bare reply envelope")
	}
	if err := rb.Header.CheckShape(); err != nil {
		return nil, fmt.Errorf("pbft: decode reply bundle: %w", err)
	}
	h, err := DecodeReplyHeader(rb.Header.Payload)
	if err != nil {
		return nil, err
	}
	if len(rb.Leaves) == 0 || len(rb.Leaves) > maxBundleLeaves || h.Count > maxBundleLeaves {
		return nil, fmt.Errorf("pbft: decode reply bundle: %d leaves of %d: %w", len(rb.Leaves), h.Count, errBounds)
	}
	for i, l := range rb.Leaves {
		if l.Index >= h.Count || (i > 0 && l.Index <= rb.Leaves[i-1].Index) {
			return nil, fmt.Errorf("pbft: decode reply bundle: leaf %d at index %d of %d: %w", i, l.Index, h.Count, errBounds)
		}
	}
	if len(rb.Nodes)%32 != 0 || len(rb.Nodes) > 32*maxReplyPathDepth*len(rb.Leaves) {
		return nil, fmt.Errorf("pbft: decode reply bundle: %d bytes of nodes: %w", len(rb.Nodes), errBounds)
	}
	return &OpenedBundle{Envelope: rb.Header, Header: h, Leaves: rb.Leaves, nodes: rb.Nodes}, nil
}

// Verify checks that the leaves and nodes rebuild the header's root. The header's signature must be
// verified separately.
func (b *OpenedBundle) Verify() error {
	idx := make([]int, len(b.Leaves))
	hashes := make([]wire.Digest, len(b.Leaves))
	for i, l := range b.Leaves {
		idx[i] = int(l.Index)
		hashes[i] = ReplyLeafHash(l.Client, l.Timestamp, l.Result)
	}
	root, err := rebuildRoot(int(b.Header.Count), idx, hashes, b.nodes)
	if err != nil {
		return fmt.Errorf("pbft: reply bundle: %w", err)
	}
	if root != b.Header.Root {
		return errors.New("pbft: reply bundle: the leaves do not rebuild the signed root")
	}
	return nil
}

// Reply returns leaf i as a Reply (meaningful once Verify passed).
func (b *OpenedBundle) Reply(i int) *Reply {
	l := &b.Leaves[i]
	h := b.Header
	return &Reply{View: h.View, Seq: h.Seq, Replica: h.Replica, Client: l.Client, Timestamp: l.Timestamp, Result: l.Result}
}

// What a replica pushes to a client on its link starts with one of these bytes.
const (
	// PushReplies: a ReplyBundle follows.
	PushReplies byte = 1
	// PushNotice: a Notice follows.
	PushNotice byte = 2
)

// Notice tells a client that a replica refused one of its requests. It is no vote: a client takes it as a
// hint to ask other replicas sooner, never as a result. Final says the refusal is one every correct replica
// makes alike (the request is malformed, too large, for another chain, badly signed, or older than the
// client's last executed one); a client that gets the same final refusal from f+1 replicas, one of them
// correct, knows the request will never execute.
type Notice struct {
	_         struct{} `cbor:",toarray"`
	Client    []byte
	Timestamp uint64
	Reason    string
	Final     bool
}

// FinalRefusal reports whether an error the engine returned for a proposed request is one every correct
// replica would return alike (Notice.Final).
func FinalRefusal(err error) bool {
	var se *StepError
	if !errors.As(err, &se) {
		return false
	}
	switch se.Reason {
	case ReasonMalformed, ReasonWrongChain, ReasonUnexpectedKind, ReasonBadSignature, ReasonStaleRequest:
		return true
	}
	return false
}

// maxNoticeReason bounds a notice's reason.
const maxNoticeReason = 1024

// DecodeNotice decodes a Notice.
func DecodeNotice(b []byte) (*Notice, error) {
	n, err := decodeStrict[Notice]("notice", b)
	if err == nil && len(n.Reason) > maxNoticeReason {
		err = fmt.Errorf("pbft: decode notice: reason of %d bytes: %w", len(n.Reason), errBounds)
	}
	return n, err
}
