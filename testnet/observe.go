package testnet

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/p2pbft/p2pbft/client"
	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/node/api/apitypes"
	"github.com/p2pbft/p2pbft/node/store"
)

var httpClient = &http.Client{Timeout: 5 * time.Second}

func (n *Network) get(ctx context.Context, i int, path string) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.APIURL(i)+path, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("testnet: %s: %w", n.man.Nodes[i].Name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, resp.StatusCode, fmt.Errorf("testnet: %s: %w", n.man.Nodes[i].Name, err)
	}
	if resp.StatusCode != http.StatusOK {
		var er apitypes.ErrorResponse
		if json.Unmarshal(b, &er) == nil && er.Error != "" {
			return b, resp.StatusCode, fmt.Errorf("testnet: %s %s: %d: %s", n.man.Nodes[i].Name, path, resp.StatusCode, er.Error)
		}
		return b, resp.StatusCode, fmt.Errorf("testnet: %s %s: %s", n.man.Nodes[i].Name, path, resp.Status)
	}
	return b, resp.StatusCode, nil
}

// Status reads replica i's status from its HTTP API.
func (n *Network) Status(ctx context.Context, i int) (apitypes.Status, error) {
	var st apitypes.Status
	b, _, err := n.get(ctx, i, "/v1/status")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("testnet: %s status: %w", n.man.Nodes[i].Name, err)
	}
	return st, nil
}

// Statuses reads the status of every running replica; entries of replicas that do not run or do not
// answer are nil.
func (n *Network) Statuses(ctx context.Context) []*apitypes.Status {
	out := make([]*apitypes.Status, n.N())
	done := make(chan struct{}, n.N())
	for i := range n.N() {
		go func() {
			defer func() { done <- struct{}{} }()
			if !n.Running(i) {
				return
			}
			if st, err := n.Status(ctx, i); err == nil {
				out[i] = &st
			}
		}()
	}
	for range n.N() {
		<-done
	}
	return out
}

// Metrics reads replica i's Prometheus metrics (ParseMetrics).
func (n *Network) Metrics(ctx context.Context, i int) (Metrics, error) {
	b, _, err := n.get(ctx, i, "/metrics")
	if err != nil {
		return nil, err
	}
	return ParseMetrics(b), nil
}

// Metrics are the samples of one scrape of a Prometheus text exposition: by series ("name" or
// `name{label="value",...}` exactly as exposed) and, under the bare name, the sum over a metric's labelled
// series.
type Metrics map[string]float64

// ParseMetrics reads the Prometheus text format. Lines it cannot read are skipped.
func ParseMetrics(b []byte) Metrics {
	out := make(Metrics)
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		series := line[:sp]
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		name := series
		if j := strings.IndexByte(series, '{'); j >= 0 {
			name = series[:j]
			out[series] = v
		}
		out[name] += v
	}
	return out
}

// Sum adds the series of metric name whose labels contain every one of the given label="value" pairs.
func (m Metrics) Sum(name string, labels ...string) float64 {
	if len(labels) == 0 {
		return m[name]
	}
	total := 0.0
	for k, v := range m {
		if !strings.HasPrefix(k, name+"{") {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(k, l) {
				ok = false
				break
			}
		}
		if ok {
			total += v
		}
	}
	return total
}

// Has reports whether the scrape holds metric name.
func (m Metrics) Has(name string) bool {
	_, ok := m[name]
	return ok
}

// Block reads block h from replica i, decoded from the API's raw encoding.
func (n *Network) Block(ctx context.Context, i int, h uint64) (*store.Block, error) {
	b, _, err := n.get(ctx, i, fmt.Sprintf("/v1/blocks/%d", h))
	if err != nil {
		return nil, err
	}
	var bj apitypes.Block
	if err := json.Unmarshal(b, &bj); err != nil {
		return nil, err
	}
	raw, err := base64.StdEncoding.DecodeString(bj.Raw)
	if err != nil {
		return nil, err
	}
	return store.DecodeBlock(raw)
}

// WaitFor polls cond every tick until it returns nil or ctx ends; the error then says what was awaited
// and cond's last error.
func WaitFor(ctx context.Context, what string, tick time.Duration, cond func() error) error {
	t := time.NewTicker(tick)
	defer t.Stop()
	var last error
	for {
		if last = cond(); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("testnet: waiting for %s: %w (last: %v)", what, ctx.Err(), last)
		case <-t.C:
		}
	}
}

// WaitConnected waits until every running replica is healthy and connected to every other running one.
func (n *Network) WaitConnected(ctx context.Context) error {
	return WaitFor(ctx, "a fully connected network", 100*time.Millisecond, func() error {
		sts := n.Statuses(ctx)
		running := 0
		for i := range n.N() {
			if n.Running(i) {
				running++
			}
		}
		for i, st := range sts {
			if !n.Running(i) {
				continue
			}
			if st == nil {
				return fmt.Errorf("%s does not answer", n.man.Nodes[i].Name)
			}
			if len(st.Peers) < running-1 {
				return fmt.Errorf("%s is connected to %d of %d replicas", n.man.Nodes[i].Name, len(st.Peers), running-1)
			}
		}
		return nil
	})
}

// NewClient returns a Go client of the testnet, bootstrapped from every replica; mutate adjusts its
// configuration (Sessions, RetryTimeout, ...). key nil: a new random client key.
func (n *Network) NewClient(key *identity.Key, log *slog.Logger, mutate func(*client.Config)) (*client.Client, error) {
	if key == nil {
		var err error
		if key, err = identity.GenerateKey(); err != nil {
			return nil, err
		}
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	cfg := client.Config{Key: key, Genesis: n.genesis, Bootstrap: n.Bootstrap(), Logger: log}
	if mutate != nil {
		mutate(&cfg)
	}
	return client.New(cfg)
}

// Put writes key=value through replica i's HTTP API and waits until that replica executed it.
func (n *Network) Put(ctx context.Context, i int, key, value string) error {
	body, _ := json.Marshal(apitypes.TxRequest{Op: &apitypes.Op{Type: "put", Key: key, Value: value}})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.APIURL(i)+"/v1/tx", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	hc := &http.Client{}
	if d, ok := ctx.Deadline(); ok {
		hc.Timeout = time.Until(d)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("testnet: %s: %w", n.man.Nodes[i].Name, err)
	}
	defer resp.Body.Close()
	var tr apitypes.TxResponse
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("testnet: %s: put: %s: %s", n.man.Nodes[i].Name, resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.Unmarshal(b, &tr); err != nil {
		return err
	}
	if tr.Result == nil || tr.Result.Status != "ok" {
		return fmt.Errorf("testnet: %s: put: result %+v", n.man.Nodes[i].Name, tr.Result)
	}
	return nil
}
