package statesync

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/p2pbft/p2pbft/node/app"
	"github.com/p2pbft/p2pbft/node/store"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// pageBlocks bounds the blocks asked for in one request.
const pageBlocks = 64

// Block is a block received from a peer that passed VerifyBlock, with its decoded parts.
type Block struct {
	Block    *store.Block
	Requests []*wire.Envelope
	Cert     []*wire.Envelope
}

// Snapshot is a copied snapshot, ready to install: every application chunk went into Restore.
type Snapshot struct {
	// Seq is the checkpoint; AppDigest and Table (the engine's client table) its certified state.
	Seq       uint64
	AppDigest wire.Digest
	Table     []byte
	// Block is the anchor block at Seq, whose hash f+1 replicas agreed on.
	Block *store.Block
	// Restore holds the application's restored state, to finish.
	Restore app.SnapshotRestore
}

// VerifyBlock decodes a block a peer sent and checks it on its own: the height, that the batch digest is the
// digest of the batch, and the certificate (check). Its link to the block below and its application digest
// are not covered by the certificate; the caller checks what it can.
func VerifyBlock(data []byte, height uint64, check store.CertCheck) (*Block, error) {
	b, err := store.DecodeBlock(data)
	if err != nil {
		return nil, err
	}
	if b.Height != height {
		return nil, fmt.Errorf("block at height %d, want %d", b.Height, height)
	}
	reqs, err := store.DecodeBatch(b.Batch)
	if err != nil {
		return nil, fmt.Errorf("block %d: %w", height, err)
	}
	ids := make([]wire.Digest, len(reqs))
	for i, e := range reqs {
		ids[i] = e.ID()
	}
	if d := pbft.BatchDigest(ids); d != b.BatchDigest {
		return nil, fmt.Errorf("block %d: batch digest %s, the batch hashes to %s", height, b.BatchDigest, d)
	}
	cert, err := store.DecodeCert(b.Cert)
	if err != nil {
		return nil, fmt.Errorf("block %d: %w", height, err)
	}
	if err := check(b, cert); err != nil {
		return nil, fmt.Errorf("block %d: %w", height, err)
	}
	return &Block{Block: b, Requests: reqs, Cert: cert}, nil
}

// syncBlocks fetches the blocks after the applied height up to the target and hands them to the replica.
func (t *transfer) syncBlocks(ctx context.Context) error {
	o := t.o
	next := t.target.Applied + 1
	lastLog := o.Clock.Now()
	for next <= t.target.Seq {
		peers := t.peers()
		if len(peers) == 0 {
			return errors.New("no replica connected")
		}
		var page []*Block
		var lastErr error
		for _, p := range peers {
			req := &Request{Type: TypeBlocks, Seq: next, To: min(t.target.Seq, next+pageBlocks-1),
				MaxBytes: uint32(o.ChunkBytes)}
			resp, err := t.ask(ctx, p, req)
			if err == nil {
				page, err = t.checkPage(resp, next)
			}
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				lastErr = fmt.Errorf("replica %d: %w", p, err)
				t.bad[p] = true
				continue
			}
			break
		}
		if page == nil {
			return fmt.Errorf("blocks from %d: %w", next, lastErr)
		}
		if err := o.Installer.ApplyBlocks(ctx, page); err != nil {
			return err
		}
		t.blocks.Add(uint64(len(page)))
		o.Metrics.Blocks(len(page))
		next += uint64(len(page))
		if t.since(lastLog) >= 2*time.Second {
			lastLog = o.Clock.Now()
			el := t.since(t.started).Seconds()
			o.Log.Info("state transfer progress", "target", t.target.Seq, "at", next-1,
				"blocks_per_s", fmt.Sprintf("%.0f", float64(t.blocks.Load())/el))
		}
	}
	return nil
}

// checkPage verifies a page of blocks: contiguous from next, each with a valid certificate.
func (t *transfer) checkPage(resp *Response, next uint64) ([]*Block, error) {
	page := make([]*Block, 0, len(resp.Blocks))
	for i, data := range resp.Blocks {
		cb, err := VerifyBlock(data, next+uint64(i), t.o.CertCheck)
		if err != nil {
			return nil, err
		}
		if cb.Block.Height > t.target.Seq {
			break
		}
		page = append(page, cb)
	}
	if len(page) == 0 {
		return nil, errors.New("no block in the answer")
	}
	return page, nil
}

// manifest is a checked manifest and who sent it.
type manifest struct {
	peer int
	resp *Response
	blk  *Block
	hash wire.Digest
}

// syncSnapshot copies the snapshot at the target checkpoint.
func (t *transfer) syncSnapshot(ctx context.Context) error {
	o := t.o
	seq := t.target.Seq
	peers := t.peers()
	if len(peers) == 0 {
		return errors.New("no replica connected")
	}
	// Manifests from every connected peer, at once.
	var mu sync.Mutex
	var ms []manifest
	var errs []error
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := t.fetchManifest(ctx, p)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("replica %d: %w", p, err))
				return
			}
			ms = append(ms, *m)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	hashes := make([]wire.Digest, len(ms))
	for i, m := range ms {
		hashes[i] = m.hash
	}
	_, idx, ok := Agreement(hashes, o.Quorums.Weak())
	if !ok {
		return fmt.Errorf("no %d replicas agree on the snapshot at %d (%d valid manifests; %w)", o.Quorums.Weak(), seq, len(ms), errors.Join(errs...))
	}
	var providers []manifest
	for _, i := range idx {
		if !t.bad[ms[i].peer] {
			providers = append(providers, ms[i])
		}
	}
	for _, i := range idx {
		if t.bad[ms[i].peer] {
			providers = append(providers, ms[i])
		}
	}
	m0 := providers[0].resp
	o.Log.Info("state transfer: snapshot found", "target", seq, "providers", len(providers),
		"table_bytes", m0.TableSize, "app_digest", m0.AppDigest)

	table, err := t.fetchTable(ctx, providers, m0)
	if err != nil {
		return err
	}

	restore, err := o.Installer.Restore(seq, m0.AppDigest)
	if err != nil {
		return fmt.Errorf("start restore: %w", err)
	}
	installed := false
	defer func() {
		if installed {
			return
		}
		if err := restore.Abort(); err != nil {
			o.Log.Warn("abort restore", "err", err)
		}
	}()
	used, err := t.fetchChunks(ctx, providers, restore)
	if err != nil {
		return err
	}
	snap := &Snapshot{Seq: seq, AppDigest: m0.AppDigest, Table: table, Block: providers[0].blk.Block, Restore: restore}
	if err := o.Installer.Install(ctx, snap); err != nil {
		if errors.Is(err, app.ErrDigestMismatch) {
			for p := range used {
				t.bad[p] = true
			}
		}
		return err
	}
	installed = true
	return nil
}

func (t *transfer) fetchManifest(ctx context.Context, p int) (*manifest, error) {
	seq := t.target.Seq
	resp, err := t.ask(ctx, p, &Request{Type: TypeManifest, Seq: seq})
	if err != nil {
		return nil, err
	}
	if !resp.CheckpointMatches(seq, t.target.Digest) {
		return nil, errors.New("manifest does not match the certified checkpoint")
	}
	blk, err := VerifyBlock(resp.Block, seq, t.o.CertCheck)
	if err != nil {
		return nil, err
	}
	if blk.Block.AppDigest != resp.AppDigest {
		return nil, errors.New("manifest block has another application digest")
	}
	return &manifest{peer: p, resp: resp, blk: blk, hash: blk.Block.Hash()}, nil
}

// fetchTable fetches the client table from one provider after another until one sends a table with the
// certified digest.
func (t *transfer) fetchTable(ctx context.Context, providers []manifest, m *Response) ([]byte, error) {
	var lastErr error
	for _, pv := range providers {
		table := make([]byte, 0, m.TableSize)
		var err error // this provider's failure: one bad provider must not condemn the next
		for {
			resp, aerr := t.ask(ctx, pv.peer, &Request{Type: TypeTable, Seq: t.target.Seq,
				Offset: uint64(len(table)), MaxBytes: uint32(t.o.ChunkBytes)})
			if aerr != nil {
				err = fmt.Errorf("replica %d: %w", pv.peer, aerr)
				break
			}
			if uint64(len(table)+len(resp.Data)) > m.TableSize || (len(resp.Data) == 0 && resp.More) {
				err = fmt.Errorf("replica %d: client table larger than announced", pv.peer)
				break
			}
			table = append(table, resp.Data...)
			t.bytes.Add(uint64(len(resp.Data)))
			t.o.Metrics.Bytes(len(resp.Data))
			if !resp.More {
				break
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err == nil && pbft.ClientTableDigest(table) == m.TableDigest && uint64(len(table)) == m.TableSize {
			return table, nil
		}
		if err == nil {
			err = fmt.Errorf("replica %d: client table does not match the certified digest", pv.peer)
		}
		lastErr = err
		t.bad[pv.peer] = true
	}
	return nil, lastErr
}

// fetchChunks streams the application snapshot into restore, switching provider on a failure (the cursor
// makes the transfer resumable). It returns the providers that contributed chunks.
func (t *transfer) fetchChunks(ctx context.Context, providers []manifest, restore app.SnapshotRestore) (map[int]bool, error) {
	o := t.o
	used := map[int]bool{}
	i := 0
	failures := 0
	chunks := 0
	lastLog := o.Clock.Now()
	for {
		pv := providers[i%len(providers)]
		resp, err := t.ask(ctx, pv.peer, &Request{Type: TypeChunk, Seq: t.target.Seq,
			Cursor: restore.Cursor(), MaxBytes: uint32(o.ChunkBytes)})
		if err == nil {
			err = restore.Apply(resp.Data)
			if err != nil {
				t.bad[pv.peer] = true
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			failures++
			if failures >= 2*len(providers) {
				return nil, fmt.Errorf("snapshot chunks: replica %d: %w", pv.peer, err)
			}
			o.Log.Debug("state transfer: chunk failed, trying another replica", "peer_replica", pv.peer, "err", err)
			i++
			continue
		}
		failures = 0
		used[pv.peer] = true
		chunks++
		t.chunks.Add(1)
		t.bytes.Add(uint64(len(resp.Data)))
		o.Metrics.Bytes(len(resp.Data))
		if t.since(lastLog) >= 2*time.Second {
			lastLog = o.Clock.Now()
			el := t.since(t.started).Seconds()
			o.Log.Info("state transfer progress", "target", t.target.Seq, "chunks", chunks, "bytes", t.bytes.Load(),
				"mb_per_s", fmt.Sprintf("%.1f", float64(t.bytes.Load())/el/1e6), "from", pv.peer)
		}
		if !resp.More {
			return used, nil
		}
	}
}
