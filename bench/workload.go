package bench

import (
	"errors"
	"fmt"
	"math/rand"
	"runtime"
	"sync"
	"time"

	"github.com/p2pbft/p2pbft/client"
	clientsession "github.com/p2pbft/p2pbft/client/session"
	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/node/app/kv"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// Key distributions.
const (
	KeysUniform = "uniform"
	KeysZipf    = "zipf"
)

// Workload describes the requests: key-value puts of a given size over a key space.
type Workload struct {
	// Size is the size in bytes of each encoded key-value operation (the request's payload before the
	// timestamp and signature); the value is padded to reach it. Default 100.
	Size int `json:"size" toml:"size"`
	// Keys is the key distribution: "uniform" or "zipf". Default uniform.
	Keys string `json:"keys" toml:"keys"`
	// KeySpace is the number of distinct keys. Default 100000.
	KeySpace int `json:"key_space" toml:"key_space"`
	// ZipfS is the zipf exponent s (> 1; larger is more skewed). Default 1.1.
	ZipfS float64 `json:"zipf_s,omitempty" toml:"zipf_s"`
}

func (w Workload) withDefaults() Workload {
	if w.Size == 0 {
		w.Size = 100
	}
	if w.Keys == "" {
		w.Keys = KeysUniform
	}
	if w.KeySpace == 0 {
		w.KeySpace = 100000
	}
	if w.ZipfS == 0 {
		w.ZipfS = 1.1
	}
	return w
}

func (w Workload) validate() error {
	var errs []error
	if w.Size < minOpSize || w.Size > kv.MaxValueSize {
		errs = append(errs, fmt.Errorf("request size %d: want %d to %d bytes", w.Size, minOpSize, kv.MaxValueSize))
	}
	switch w.Keys {
	case KeysUniform, KeysZipf:
	default:
		errs = append(errs, fmt.Errorf("key distribution %q: want %s or %s", w.Keys, KeysUniform, KeysZipf))
	}
	if w.KeySpace < 1 {
		errs = append(errs, fmt.Errorf("key space %d: want at least 1", w.KeySpace))
	}
	if w.Keys == KeysZipf && w.ZipfS <= 1 {
		errs = append(errs, fmt.Errorf("zipf exponent %g: want more than 1", w.ZipfS))
	}
	return errors.Join(errs...)
}

// minOpSize is the smallest operation Workload.Size allows: a put of a short key and a one-byte value.
const minOpSize = 24

// keyChooser picks keys by index from the workload's distribution.
type keyChooser struct {
	w    Workload
	rng  *rand.Rand
	zipf *rand.Zipf
}

func newKeyChooser(w Workload, seed int64) *keyChooser {
	k := &keyChooser{w: w, rng: rand.New(rand.NewSource(seed))}
	if w.Keys == KeysZipf {
		k.zipf = rand.NewZipf(k.rng, w.ZipfS, 1, uint64(w.KeySpace-1))
	}
	return k
}

func (k *keyChooser) next() int {
	if k.zipf != nil {
		return int(k.zipf.Uint64())
	}
	return k.rng.Intn(k.w.KeySpace)
}

// keyName is the key of index i.
func keyName(i int) []byte { return fmt.Appendf(nil, "key-%08d", i) }

// buildOp returns a put of key whose encoding is size bytes (or as close as the encoding allows above it);
// tag makes the value unique (session and request number).
func buildOp(key []byte, tag string, size int) ([]byte, error) {
	value := []byte(tag)
	op, err := kv.EncodeOp(kv.Put(key, value))
	if err != nil {
		return nil, err
	}
	// CBOR length prefixes grow at 24, 256 and 65536 bytes, so pad in two steps.
	for range 3 {
		if len(op) >= size {
			break
		}
		pad := size - len(op)
		for range pad {
			value = append(value, '.')
		}
		if op, err = kv.EncodeOp(kv.Put(key, value)); err != nil {
			return nil, err
		}
		for len(op) > size && len(value) > len(tag) {
			value = value[:len(value)-1]
			if op, err = kv.EncodeOp(kv.Put(key, value)); err != nil {
				return nil, err
			}
		}
	}
	return op, nil
}

// prepared is a signed request ready to be sent.
type prepared struct {
	env *wire.Envelope
	ts  uint64
	key int
	// pr is env encoded for the client (client.Prepare), when the session has a client.
	pr *client.Prepared
}

// session is one signing identity: one request outstanding at a time, strictly increasing timestamps.
type session struct {
	cl     *client.Client // encodes the requests signed (nil in unit tests)
	index  int
	key    *identity.Key
	pub    []byte
	host   int // index of the client host that sends its requests
	keys   *keyChooser
	seq    int
	lastTS uint64
	queue  []prepared // pre-signed, in timestamp order
	next   int
	// signedLive counts requests signed during the run because the pre-signed ones ran out.
	signedLive int
}

// sign builds and signs the session's next request.
func (s *session) sign(chainID string, w Workload) (prepared, error) {
	ts := uint64(max(time.Now().UnixNano(), 1))
	if ts <= s.lastTS {
		ts = s.lastTS + 1
	}
	k := s.keys.next()
	op, err := buildOp(keyName(k), fmt.Sprintf("s%d-r%d", s.index, s.seq), w.Size)
	if err != nil {
		return prepared{}, err
	}
	env, err := pbft.NewRequest(s.key, chainID, ts, op)
	if err != nil {
		return prepared{}, err
	}
	p := prepared{env: env, ts: ts, key: k}
	if s.cl != nil {
		if p.pr, err = s.cl.Prepare(s.index, env, ts); err != nil {
			return prepared{}, err
		}
	}
	s.lastTS = ts
	s.seq++
	return p, nil
}

// take returns the session's next request: a pre-signed one, or one signed now.
func (s *session) take(chainID string, w Workload) (prepared, error) {
	if s.next < len(s.queue) {
		p := s.queue[s.next]
		s.queue[s.next] = prepared{} // let the envelope be collected once sent
		s.next++
		return p, nil
	}
	s.signedLive++
	return s.sign(chainID, w)
}

// newSessions derives count session keys from base and seeds each session's key chooser from seed.
func newSessions(base *identity.Key, count, perHost int, w Workload, seed int64) ([]*session, error) {
	out := make([]*session, count)
	for i := range out {
		k, err := clientsession.DeriveKey(base, i)
		if err != nil {
			return nil, err
		}
		out[i] = &session{index: i, key: k, pub: k.PublicKey(), host: i / perHost,
			keys: newKeyChooser(w, seed+int64(i)*7919)}
	}
	return out, nil
}

// presign signs perSession requests for every session, in parallel on every core (before the
// measurement starts, so the signatures do not compete with the replicas for CPU).
func presign(sessions []*session, perSession int, chainID string, w Workload) (time.Duration, error) {
	start := time.Now()
	if perSession <= 0 {
		return 0, nil
	}
	work := make(chan *session)
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range work {
				mu.Lock()
				failed := firstErr != nil
				mu.Unlock()
				if failed {
					continue // drain: the caller sends every session
				}
				s.queue = make([]prepared, 0, perSession)
				for range perSession {
					p, err := s.sign(chainID, w)
					if err != nil {
						mu.Lock()
						if firstErr == nil {
							firstErr = err
						}
						mu.Unlock()
						break
					}
					s.queue = append(s.queue, p)
				}
			}
		}()
	}
	for _, s := range sessions {
		work <- s
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return 0, fmt.Errorf("bench: pre-sign requests: %w", firstErr)
	}
	return time.Since(start), nil
}
