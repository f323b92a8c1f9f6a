package testnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/p2pbft/p2pbft/node/api/apitypes"
)

// Partitions through the replicas' experiment admin API (POST /admin/partition and /admin/heal, served
// when [experiment] admin_api is on: Config.AdminAPI). A replica cut off from another refuses its
// connections both ways (its p2p connection gater); clients still reach every replica.

func (n *Network) admin(ctx context.Context, i int, path string, body any) (*apitypes.PartitionResponse, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.APIURL(i)+path, strings.NewReader(string(b)))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("testnet: %s: %w", n.man.Nodes[i].Name, err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusNotFound {
		return nil, fmt.Errorf("testnet: %s serves no admin API: create the testnet with it (p2pbft testnet --experiment-admin-api, or [experiment] admin_api = true in each config.toml)", n.man.Nodes[i].Name)
	}
	if resp.StatusCode != http.StatusOK {
		var er apitypes.ErrorResponse
		if json.Unmarshal(rb, &er) == nil && er.Error != "" {
			return nil, fmt.Errorf("testnet: %s %s: %s", n.man.Nodes[i].Name, path, er.Error)
		}
		return nil, fmt.Errorf("testnet: %s %s: %s", n.man.Nodes[i].Name, path, resp.Status)
	}
	var out apitypes.PartitionResponse
	return &out, json.Unmarshal(rb, &out)
}

// Partition cuts replica i off from the given replicas (added to those it is cut off from already).
func (n *Network) Partition(ctx context.Context, i int, peers []int) error {
	_, err := n.admin(ctx, i, "/admin/partition", apitypes.PartitionRequest{Peers: peers})
	return err
}

// Heal undoes every partition of replica i.
func (n *Network) Heal(ctx context.Context, i int) error {
	_, err := n.admin(ctx, i, "/admin/heal", struct{}{})
	return err
}

// Isolate cuts replica i off from every other replica: it is told to refuse them, and every other
// running replica is told to refuse it.
func (n *Network) Isolate(ctx context.Context, i int) error {
	if !n.Running(i) {
		return fmt.Errorf("testnet: %s does not run", n.man.Nodes[i].Name)
	}
	var others []int
	for j := range n.N() {
		if j != i {
			others = append(others, j)
		}
	}
	if err := n.Partition(ctx, i, others); err != nil {
		return err
	}
	var errs []error
	for _, j := range others {
		if n.Running(j) {
			errs = append(errs, n.Partition(ctx, j, []int{i}))
		}
	}
	return errors.Join(errs...)
}

// HealAll undoes every partition on every running replica.
func (n *Network) HealAll(ctx context.Context) error {
	var errs []error
	for i := range n.N() {
		if n.Running(i) {
			errs = append(errs, n.Heal(ctx, i))
		}
	}
	return errors.Join(errs...)
}
