package sim

import (
	"fmt"
	"slices"

	"github.com/p2pbft/p2pbft/pbft"
)

// memStore is a node's storage of consensus state: the encoded hard state and log entries, exactly as a node
// would write them to disk (so restarts go through the decoders). A node persisting synchronously has one,
// durable as soon as written; one persisting asynchronously (persist.go) has two: what it wrote (visible at
// once) and what is durable.
type memStore struct {
	hs      []byte
	entries []storedEntry
}

type storedEntry struct {
	seq  uint64
	data []byte
}

// write is one Ready's writes, encoded: a hard state (nil: unchanged), entries to append, and the log
// truncation.
type write struct {
	hs       []byte
	entries  []storedEntry
	truncate uint64
}

func (w *write) empty() bool { return w.hs == nil && len(w.entries) == 0 && w.truncate == 0 }

// encodeWrite encodes a Ready's HardState, Entries and Truncate.
func encodeWrite(rd *pbft.Ready) (write, error) {
	w := write{truncate: rd.Truncate}
	if rd.HardState != nil {
		b, err := rd.HardState.Marshal()
		if err != nil {
			return w, err
		}
		w.hs = b
	}
	for i := range rd.Entries {
		b, err := rd.Entries[i].Marshal()
		if err != nil {
			return w, err
		}
		w.entries = append(w.entries, storedEntry{seq: rd.Entries[i].Seq, data: b})
	}
	return w, nil
}

func (s *memStore) apply(rd *pbft.Ready) error {
	w, err := encodeWrite(rd)
	if err != nil {
		return err
	}
	s.write(&w)
	return nil
}

// write applies one Ready's writes atomically.
func (s *memStore) write(w *write) {
	if w.hs != nil {
		s.hs = w.hs
	}
	s.entries = append(s.entries, w.entries...)
	if w.truncate > 0 {
		kept := s.entries[:0]
		for _, e := range s.entries {
			if e.seq > w.truncate {
				kept = append(kept, e)
			}
		}
		s.entries = kept
	}
}

// clone returns a copy that shares no slice with s (write truncates in place).
func (s *memStore) clone() memStore {
	return memStore{hs: s.hs, entries: slices.Clone(s.entries)}
}

func (s *memStore) persisted() (*pbft.Persisted, error) {
	if s.hs == nil && len(s.entries) == 0 {
		return nil, nil
	}
	p := &pbft.Persisted{}
	if s.hs != nil {
		hs, err := pbft.DecodeHardState(s.hs)
		if err != nil {
			return nil, err
		}
		p.HardState = *hs
	}
	for i, e := range s.entries {
		d, err := pbft.DecodeEntry(e.data)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		p.Entries = append(p.Entries, *d)
	}
	return p, nil
}
