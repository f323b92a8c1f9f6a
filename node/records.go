package node

import (
	"errors"
	"fmt"

	"github.com/p2pbft/p2pbft/node/store"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// The consensus log in the store holds two kinds of records, told apart by their first byte:
//
//   - recEntry: a pbft.Entry the engine asked to persist (Ready.Entries);
//   - recResults: the results and application digest of an executed block, written in the same batch as
//     the block. After a restart the engine replays the committed batches between its snapshot and the
//     application's height (CommittedBatch.AlreadyApplied) and needs their results to rebuild its client
//     table exactly (the table, results included, is part of every checkpoint digest). The records live
//     exactly as long as they are needed: the engine truncates the log at its snapshot, and replays start
//     above it.
const (
	recEntry   byte = 'e'
	recResults byte = 'r'
)

// resultsRecord is the outcome of one executed block.
type resultsRecord struct {
	_       struct{} `cbor:",toarray"`
	Seq     uint64
	Digest  wire.Digest
	Results [][]byte
}

func encodeEntry(e *pbft.Entry) ([]byte, error) {
	b, err := e.Marshal()
	if err != nil {
		return nil, err
	}
	return append([]byte{recEntry}, b...), nil
}

func encodeResults(r *resultsRecord) ([]byte, error) {
	b, err := wire.Marshal(r)
	if err != nil {
		return nil, err
	}
	return append([]byte{recResults}, b...), nil
}

// loadPersisted reads what the engine persisted and the stored block results. It returns a nil
// *pbft.Persisted for a store the engine never wrote to.
func loadPersisted(st *store.Store) (*pbft.Persisted, map[uint64]*resultsRecord, error) {
	hsData, err := st.HardState()
	if err != nil {
		return nil, nil, err
	}
	p := &pbft.Persisted{}
	results := make(map[uint64]*resultsRecord)
	any := hsData != nil
	if hsData != nil {
		hs, err := pbft.DecodeHardState(hsData)
		if err != nil {
			return nil, nil, fmt.Errorf("node: stored hard state: %w", err)
		}
		p.HardState = *hs
	}
	for rec, err := range st.Records(0) {
		if err != nil {
			return nil, nil, err
		}
		any = true
		if len(rec.Data) == 0 {
			return nil, nil, fmt.Errorf("node: empty log record at %d", rec.Seq)
		}
		switch rec.Data[0] {
		case recEntry:
			e, err := pbft.DecodeEntry(rec.Data[1:])
			if err != nil {
				return nil, nil, fmt.Errorf("node: log record at %d: %w", rec.Seq, err)
			}
			p.Entries = append(p.Entries, *e)
		case recResults:
			r := new(resultsRecord)
			if err := wire.Unmarshal(rec.Data[1:], r); err != nil {
				return nil, nil, fmt.Errorf("node: results record at %d: %w", rec.Seq, err)
			}
			if r.Seq != rec.Seq {
				return nil, nil, fmt.Errorf("node: results record at %d names block %d", rec.Seq, r.Seq)
			}
			results[r.Seq] = r
		default:
			return nil, nil, fmt.Errorf("node: log record at %d has unknown type %q", rec.Seq, rec.Data[0])
		}
	}
	if !any {
		return nil, results, nil
	}
	if hsData == nil {
		return nil, nil, errors.New("node: the consensus log has records but no hard state")
	}
	return p, results, nil
}
