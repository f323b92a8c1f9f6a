package sim

import (
	"fmt"

	"github.com/p2pbft/p2pbft/pbft"
)

// memStore is a node's durable storage of consensus state: the encoded hard state and log entries, exactly
// as a node would write them to disk (so restarts go through the decoders).
type memStore struct {
	hs      []byte
	entries []storedEntry
}

type storedEntry struct {
	seq  uint64
	data []byte
}

func (s *memStore) apply(rd *pbft.Ready) error {
	if rd.HardState != nil {
		b, err := rd.HardState.Marshal()
		if err != nil {
			return err
		}
		s.hs = b
	}
	for i := range rd.Entries {
		b, err := rd.Entries[i].Marshal()
		if err != nil {
			return err
		}
		s.entries = append(s.entries, storedEntry{seq: rd.Entries[i].Seq, data: b})
	}
	if rd.Truncate > 0 {
		kept := s.entries[:0]
		for _, e := range s.entries {
			if e.seq > rd.Truncate {
				kept = append(kept, e)
			}
		}
		s.entries = kept
	}
	return nil
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
