package scenario

import (
	"context"
	"fmt"

	"github.com/p2pbft/p2pbft/bench"
)

// cluster is how a scenario acts on its replicas: local processes (signals, and partitions through the
// replicas' admin API) or docker containers (docker kill/stop/start/pause, and partitions by
// disconnecting containers from the docker network).
type cluster interface {
	kill(ctx context.Context, i int) error
	stop(ctx context.Context, i int) error
	start(ctx context.Context, i int) error
	restart(ctx context.Context, i int) error
	pause(ctx context.Context, i int) error
	resume(ctx context.Context, i int) error
	// partition separates the replicas by side (side[i] is replica i's group); live says which replicas
	// run and can be told.
	partition(ctx context.Context, side []int, live func(int) bool) error
	heal(ctx context.Context, live func(int) bool) error
	logPath(i int) string
	close() error
	describe() string
}

// localCluster: replicas as processes of this machine.
type localCluster struct{ t *bench.Target }

func (c localCluster) kill(_ context.Context, i int) error      { return c.t.Net.Kill(i) }
func (c localCluster) stop(_ context.Context, i int) error      { return c.t.Net.Stop(i) }
func (c localCluster) start(ctx context.Context, i int) error   { return c.t.Net.StartNode(ctx, i) }
func (c localCluster) restart(ctx context.Context, i int) error { return c.t.Net.Restart(ctx, i) }
func (c localCluster) pause(_ context.Context, i int) error     { return c.t.Net.Pause(i) }
func (c localCluster) resume(_ context.Context, i int) error    { return c.t.Net.Resume(i) }
func (c localCluster) logPath(i int) string                     { return c.t.Net.LogPath(i) }
func (c localCluster) close() error                             { return c.t.Close() }
func (c localCluster) describe() string                         { return "local processes" }

// partition tells every live replica to cut itself off from the replicas of the other sides, through its
// admin API (its connection gater). Partitions add up until heal.
func (c localCluster) partition(ctx context.Context, side []int, live func(int) bool) error {
	for i := range side {
		if !live(i) {
			continue
		}
		var cut []int
		for j := range side {
			if side[j] != side[i] {
				cut = append(cut, j)
			}
		}
		if len(cut) == 0 {
			continue
		}
		if err := c.t.Post(ctx, i, "/admin/partition", map[string]any{"peers": cut}, nil); err != nil {
			return fmt.Errorf("partition %s: %w (does the replica serve the admin API? [experiment] admin_api)", c.t.Nodes[i].Name, err)
		}
	}
	return nil
}

func (c localCluster) heal(ctx context.Context, live func(int) bool) error {
	for i := range c.t.Nodes {
		if !live(i) {
			continue
		}
		if err := c.t.Post(ctx, i, "/admin/heal", map[string]any{}, nil); err != nil {
			return fmt.Errorf("heal %s: %w", c.t.Nodes[i].Name, err)
		}
	}
	return nil
}

// dockerCluster: replicas as containers on a private docker network.
type dockerCluster struct {
	t *bench.Target
	d *bench.Docker
}

func (c dockerCluster) kill(ctx context.Context, i int) error    { return c.d.Kill(ctx, i) }
func (c dockerCluster) stop(ctx context.Context, i int) error    { return c.d.Stop(ctx, i) }
func (c dockerCluster) start(ctx context.Context, i int) error   { return c.d.Start(ctx, c.t, i) }
func (c dockerCluster) restart(ctx context.Context, i int) error { return c.d.Restart(ctx, c.t, i) }
func (c dockerCluster) pause(ctx context.Context, i int) error   { return c.d.Pause(ctx, i) }
func (c dockerCluster) resume(ctx context.Context, i int) error  { return c.d.Resume(ctx, i) }
func (c dockerCluster) logPath(i int) string                     { return c.d.LogPath(i) }
func (c dockerCluster) close() error                             { return c.d.Close() }
func (c dockerCluster) describe() string {
	return "docker containers on network " + c.d.Network()
}

// partition disconnects from the docker network every replica outside the largest side. A disconnected
// container reaches nobody, its own side included, and clients cannot reach it either.
func (c dockerCluster) partition(ctx context.Context, side []int, _ func(int) bool) error {
	count := map[int]int{}
	for _, s := range side {
		count[s]++
	}
	largest := side[0]
	for s, k := range count {
		if k > count[largest] || (k == count[largest] && s < largest) {
			largest = s
		}
	}
	for i, s := range side {
		if s != largest {
			if err := c.d.Isolate(ctx, i); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c dockerCluster) heal(ctx context.Context, _ func(int) bool) error { return c.d.Reconnect(ctx) }
