package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/p2pbft/p2pbft/node/app/kv"
)

// Helpers for the built-in key-value application (package kv). Each is one request through consensus;
// Get is therefore a linearizable read.

// ErrInvalidOp is wrapped by the kv helpers' error when the replicas agreed that the operation was
// malformed (kv.StatusInvalid).
var ErrInvalidOp = errors.New("client: invalid operation")

// KV runs one key-value operation and returns the agreed result.
func (c *Client) KV(ctx context.Context, op kv.Op) (kv.Result, *Reply, error) {
	b, err := kv.EncodeOp(op)
	if err != nil {
		return kv.Result{}, nil, fmt.Errorf("client: %w", err)
	}
	rep, err := c.Do(ctx, b)
	if err != nil {
		return kv.Result{}, nil, err
	}
	res, err := kv.DecodeResult(rep.Result)
	if err != nil {
		// f+1 replicas agreed on bytes that are not a kv result: the chain does not run the kv app.
		return kv.Result{}, rep, fmt.Errorf("client: the replicas' result is not a key-value result (does the chain run the kv application?): %w", err)
	}
	if res.Status == kv.StatusInvalid {
		return res, rep, fmt.Errorf("%w: %s", ErrInvalidOp, res.Error)
	}
	return res, rep, nil
}

// Put sets key to value.
func (c *Client) Put(ctx context.Context, key, value []byte) error {
	_, _, err := c.KV(ctx, kv.Put(key, value))
	return err
}

// Get reads key through consensus. found is false if the key does not exist.
func (c *Client) Get(ctx context.Context, key []byte) (value []byte, found bool, err error) {
	res, _, err := c.KV(ctx, kv.Get(key))
	if err != nil {
		return nil, false, err
	}
	return res.Value, res.Status == kv.StatusOK, nil
}

// Delete removes key. existed reports whether there was something to remove.
func (c *Client) Delete(ctx context.Context, key []byte) (existed bool, err error) {
	res, _, err := c.KV(ctx, kv.Delete(key))
	if err != nil {
		return false, err
	}
	return res.Status == kv.StatusOK, nil
}

// CAS sets key to value if it holds expect. If not, swapped is false and current is the value it holds
// (exists says whether it exists at all).
func (c *Client) CAS(ctx context.Context, key, expect, value []byte) (swapped bool, current []byte, exists bool, err error) {
	return c.cas(ctx, kv.CAS(key, expect, value))
}

// CreateIfAbsent sets key to value only if key does not exist.
func (c *Client) CreateIfAbsent(ctx context.Context, key, value []byte) (created bool, current []byte, err error) {
	ok, cur, _, err := c.cas(ctx, kv.CreateIfAbsent(key, value))
	return ok, cur, err
}

func (c *Client) cas(ctx context.Context, op kv.Op) (bool, []byte, bool, error) {
	res, _, err := c.KV(ctx, op)
	if err != nil {
		return false, nil, false, err
	}
	switch res.Status {
	case kv.StatusOK:
		return true, nil, true, nil
	case kv.StatusConflict:
		return false, res.Value, res.Exists, nil
	}
	return false, nil, false, fmt.Errorf("client: cas: unexpected status %s", res.Status)
}
