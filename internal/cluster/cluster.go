// Package cluster is what the pipeline needs of Redis Cluster beyond go-redis's
// ClusterClient: a client that notices a failover at once, the connection of the node
// that holds a key (to wait for replicas on the connection that wrote), and every
// master (for the admin commands that scan the keyspace). On a single Redis each is
// the plain client, so callers need no second code path.
package cluster

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// StateReloadInterval is how old go-redis lets its map of slots to nodes get before it
// reloads it on the next command (its default is a minute).
const StateReloadInterval = 10 * time.Second

// NewClient builds the one client type every component takes from opt (see
// config.Reader.Redis). A cluster client also reloads its slot map as soon as a
// command meets a connection error or a reply that says the map is wrong:
// go-redis's ClusterClient does not (redis/go-redis#3979), so after a master dies it
// keeps sending that master's slots to the dead address, and every write fails with
// "connection refused", until the map is a minute old, long after a replica has
// taken over. A reload is a CLUSTER SLOTS to some live node, run in the background
// and at most one every 200 ms whatever the number of failures.
func NewClient(opt *redis.UniversalOptions) redis.UniversalClient {
	if !(len(opt.Addrs) > 1 || opt.IsClusterMode) || opt.MasterName != "" {
		return redis.NewUniversalClient(opt)
	}
	copt := opt.Cluster()
	copt.ClusterStateReloadInterval = StateReloadInterval
	c := redis.NewClusterClient(copt)
	// Node clients: both the cluster client's own commands and a pipeline sent to a node
	// directly (NodeFor) go through them.
	c.OnNewNode(func(node *redis.Client) { node.AddHook(reloadHook{c}) })
	return c
}

// reloadHook reloads the cluster's slot map after a command fails in a way that a
// changed map explains.
type reloadHook struct{ c *redis.ClusterClient }

func (h reloadHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h reloadHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if StaleMap(err) {
			h.c.ReloadState(ctx)
		}
		return err
	}
}

func (h reloadHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		stale := StaleMap(err)
		for _, c := range cmds {
			stale = stale || StaleMap(c.Err())
		}
		if stale {
			h.c.ReloadState(ctx)
		}
		return err
	}
}

// StaleMap reports an error that a cluster's changed map of slots explains: no
// answer from the node (refused, reset, timed out: it may be dead, and a replica may
// have taken over), or a reply that says the node no longer serves the slot (MOVED,
// READONLY from a master turned replica, CLUSTERDOWN while a failover is under way).
// Any other reply from Redis, and a caller's cancellation, are not.
func StaleMap(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) || errors.Is(err, context.Canceled) {
		return false
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		msg := rerr.Error()
		return strings.HasPrefix(msg, "MOVED ") || strings.HasPrefix(msg, "READONLY") || strings.HasPrefix(msg, "CLUSTERDOWN")
	}
	return true
}

// NodeFor returns the client of the node that holds key: for a cluster, its master's
// own client (go-redis's view of the slot map), on which a pipeline is one connection
// to that node; otherwise rdb itself. A command that must run on the connection that
// wrote, such as WAIT, is sent in the same pipeline as the write, on this client.
func NodeFor(ctx context.Context, rdb redis.UniversalClient, key string) (redis.Cmdable, error) {
	c, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return rdb, nil
	}
	return c.MasterForKey(ctx, key)
}

// ForEachMaster calls fn on every master, at once, with that master's own client, and
// returns the first error; on a single Redis it calls fn once with rdb.
func ForEachMaster(ctx context.Context, rdb redis.UniversalClient, fn func(ctx context.Context, node redis.Cmdable) error) error {
	c, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return fn(ctx, rdb)
	}
	return c.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error { return fn(ctx, node) })
}
