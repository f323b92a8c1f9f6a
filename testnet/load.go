package testnet

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/p2pbft/p2pbft/client"
	"github.com/p2pbft/p2pbft/node/app/kv"
)

// LoadConfig describes a key-value write load.
type LoadConfig struct {
	// Client sends the requests; it needs at least Workers sessions to run them concurrently.
	Client *client.Client
	// Workers is the number of concurrent request loops. Default 4.
	Workers int
	// Rate is the target of requests per second over all workers; 0 runs closed-loop, as fast as the
	// replies come.
	Rate float64
	// MaxOps stops the load after this many requests were issued (0: until Stop or the context ends);
	// Wait returns when all of them are answered or abandoned.
	MaxOps int
	// Prefix starts every key. Default "load".
	Prefix string
	// Unique makes every write go to a new key (prefix-worker-n), so that every acknowledged write can be
	// checked afterwards; otherwise writes go to Keys keys at random.
	Unique bool
	// Keys is the key space of non-unique writes. Default 1000.
	Keys int
	// ValueSize pads values to at least this many bytes. Default 0.
	ValueSize int
	// OpTimeout bounds one request. Default 30s.
	OpTimeout time.Duration
	// Seed seeds the key choice. 0: random.
	Seed uint64
}

// Ack is one acknowledged write.
type Ack struct {
	Key, Value string
	// Height is the block the replies reported.
	Height  uint64
	Latency time.Duration
	At      time.Time
}

// Load runs a write load in the background. Its methods are safe for concurrent use.
type Load struct {
	cfg    LoadConfig
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	issued   int
	acks     []Ack
	failed   int
	lastErr  error
	window   []time.Duration // latencies since the last Interval call
	windowAt time.Time
}

// StartLoad starts a load; it runs until ctx ends, Stop is called, or MaxOps requests are done.
func StartLoad(ctx context.Context, cfg LoadConfig) (*Load, error) {
	if cfg.Client == nil {
		return nil, errors.New("testnet: load: no client")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "load"
	}
	if cfg.Keys <= 0 {
		cfg.Keys = 1000
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = 30 * time.Second
	}
	if cfg.Seed == 0 {
		cfg.Seed = rand.Uint64()
	}
	ctx, cancel := context.WithCancel(ctx)
	l := &Load{cfg: cfg, cancel: cancel, windowAt: time.Now()}
	var tokens chan struct{}
	if cfg.Rate > 0 {
		tokens = make(chan struct{}, cfg.Workers)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.pace(ctx, tokens)
		}()
	}
	for w := range cfg.Workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.work(ctx, w, tokens)
		}()
	}
	return l, nil
}

// pace hands out tokens at the target rate.
func (l *Load) pace(ctx context.Context, tokens chan<- struct{}) {
	interval := time.Duration(float64(time.Second) / l.cfg.Rate)
	every := max(interval, time.Millisecond)
	per := max(1, int(every/interval))
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for range per {
				select {
				case tokens <- struct{}{}:
				default: // the workers are behind: the offered load is what they can take
				}
			}
		}
	}
}

func (l *Load) work(ctx context.Context, w int, tokens <-chan struct{}) {
	rng := rand.New(rand.NewPCG(l.cfg.Seed, uint64(w)))
	for i := 0; ; i++ {
		if tokens != nil {
			select {
			case <-tokens:
			case <-ctx.Done():
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		l.mu.Lock()
		if l.cfg.MaxOps > 0 && l.issued >= l.cfg.MaxOps {
			l.mu.Unlock()
			return
		}
		l.issued++
		l.mu.Unlock()
		var key, value string
		if l.cfg.Unique {
			key = fmt.Sprintf("%s-%d-%d", l.cfg.Prefix, w, i)
		} else {
			key = fmt.Sprintf("%s-%d", l.cfg.Prefix, rng.IntN(l.cfg.Keys))
		}
		value = fmt.Sprintf("v-%d-%d-%d", w, i, time.Now().UnixNano())
		for len(value) < l.cfg.ValueSize {
			value += "."
		}
		octx, cancel := context.WithTimeout(ctx, l.cfg.OpTimeout)
		start := time.Now()
		_, rep, err := l.cfg.Client.KV(octx, kv.Put([]byte(key), []byte(value)))
		cancel()
		lat := time.Since(start)
		l.mu.Lock()
		if err != nil {
			if ctx.Err() == nil {
				l.failed++
				l.lastErr = err
			}
		} else {
			l.acks = append(l.acks, Ack{Key: key, Value: value, Height: rep.Seq, Latency: lat, At: time.Now()})
			l.window = append(l.window, lat)
		}
		l.mu.Unlock()
	}
}

// Stop ends the load and waits for the requests in flight (each bounded by OpTimeout).
func (l *Load) Stop() {
	l.cancel()
	l.wg.Wait()
}

// Wait waits until the load ends by itself (MaxOps or its context).
func (l *Load) Wait() { l.wg.Wait() }

// Acked returns the acknowledged writes so far.
func (l *Load) Acked() []Ack {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.acks)
}

// Counts returns the number of acknowledged and failed requests, and the last failure.
func (l *Load) Counts() (acked, failed int, lastErr error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acks), l.failed, l.lastErr
}

// Interval returns how many requests were acknowledged since the previous call, over how long, and their
// median and 99th percentile latency.
func (l *Load) Interval() (n int, d time.Duration, p50, p99 time.Duration) {
	l.mu.Lock()
	w := l.window
	l.window = nil
	now := time.Now()
	d = now.Sub(l.windowAt)
	l.windowAt = now
	l.mu.Unlock()
	if len(w) == 0 {
		return 0, d, 0, 0
	}
	slices.Sort(w)
	return len(w), d, Percentile(w, 0.50), Percentile(w, 0.99)
}

// Percentile returns the q-quantile (0..1) of sorted durations (nearest rank).
func Percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
