package sim

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"maps"

	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// counterApp is the replicated application of the simulation: every operation names a counter and
// increments it; the result is the new value. Its digest chains every executed batch, so two replicas that
// executed different requests, or the same ones in another order, end with different digests.
type counterApp struct {
	applied  uint64
	digest   wire.Digest
	counters map[string]uint64
	// history keeps the outcome of every applied batch (a node stores results with its blocks), for
	// AlreadyApplied replays after a restart.
	history map[uint64]outcome
	// snaps keeps the state at checkpoint sequence numbers, for serving state transfers.
	snaps map[uint64]appState
}

type outcome struct {
	results [][]byte
	digest  wire.Digest
}

type appState struct {
	seq      uint64
	digest   wire.Digest
	counters map[string]uint64
}

func newCounterApp() *counterApp {
	return &counterApp{counters: map[string]uint64{}, history: map[uint64]outcome{}, snaps: map[uint64]appState{}}
}

func (a *counterApp) execute(seq uint64, reqs []pbft.ClientRequest) ([][]byte, wire.Digest, error) {
	if seq != a.applied+1 {
		return nil, a.digest, fmt.Errorf("app: execute %d after %d", seq, a.applied)
	}
	h := sha256.New()
	h.Write(a.digest[:])
	h.Write(binary.BigEndian.AppendUint64(nil, seq))
	results := make([][]byte, len(reqs))
	for i, q := range reqs {
		k := string(q.Op)
		a.counters[k]++
		results[i] = binary.BigEndian.AppendUint64([]byte(k+"="), a.counters[k])
		h.Write(q.Client)
		h.Write(binary.BigEndian.AppendUint64(nil, q.Timestamp))
		h.Write(q.Op)
		h.Write(results[i])
	}
	h.Sum(a.digest[:0])
	a.applied = seq
	a.history[seq] = outcome{results: results, digest: a.digest}
	return results, a.digest, nil
}

func (a *counterApp) snapshot() appState {
	return appState{seq: a.applied, digest: a.digest, counters: maps.Clone(a.counters)}
}

func (a *counterApp) restore(s appState) {
	a.applied, a.digest, a.counters = s.seq, s.digest, maps.Clone(s.counters)
}

// keepSnapshot records the state at a checkpoint and drops old ones.
func (a *counterApp) keepSnapshot(keep int) {
	a.snaps[a.applied] = a.snapshot()
	for len(a.snaps) > keep {
		lo := uint64(1<<63 - 1)
		for s := range a.snaps {
			lo = min(lo, s)
		}
		delete(a.snaps, lo)
	}
}
