package rebuild

import (
	"context"
	"slices"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// SCAN visits the whole keyspace (dedup markers included, which can be most of it),
// so each call looks at scanCount keys to keep round trips few; the matches are handed
// on in chunks of at most keyChunk, which bounds one UNLINK or COPY pipeline.
const (
	scanCount = 5000
	keyChunk  = 500
)

// scan calls fn with the keys matching pattern, a chunk at a time, and returns how many
// there were. It is for admin commands only: SCAN walks the whole keyspace.
//
// On Redis Cluster each master holds its own part of the keyspace, and a SCAN sent
// through the cluster client reaches one node: go-redis sends one whose pattern has a
// hash tag to the master of that slot, any other to some node. So every master is
// scanned, all at once, which finds every match whatever the pattern: today all keys
// of a namespace share its hash tag, but a pattern that spans tags (partitions of the
// stream, each with its own) would otherwise miss the keys of the other masters. fn
// must be safe for concurrent use; its own commands go through the cluster client,
// which sends each key to the master that holds it.
func (b *Rebuilder) scan(ctx context.Context, pattern string, fn func(context.Context, []string) error) (int, error) {
	cluster, ok := b.rdb.(*redis.ClusterClient)
	if !ok {
		return b.scanNode(ctx, b.rdb, pattern, fn)
	}
	var n atomic.Int64
	err := cluster.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		k, err := b.scanNode(ctx, node, pattern, fn)
		n.Add(int64(k))
		return err
	})
	return int(n.Load()), err
}

// scanNode is scan on one node.
func (b *Rebuilder) scanNode(ctx context.Context, node redis.Cmdable, pattern string, fn func(context.Context, []string) error) (int, error) {
	var cursor uint64
	n := 0
	for {
		sctx, cancel := b.rctx(ctx)
		keys, next, err := node.Scan(sctx, cursor, pattern, scanCount).Result()
		cancel()
		if err != nil {
			return n, err
		}
		for chunk := range slices.Chunk(keys, keyChunk) {
			cctx, cancel := b.rctx(ctx)
			err := fn(cctx, chunk)
			cancel()
			if err != nil {
				return n, err
			}
			n += len(chunk)
		}
		if next == 0 {
			return n, nil
		}
		cursor = next
	}
}

// unlinkAll removes every key matching pattern, except keep, with UNLINK, a chunk at a
// time, so that Redis frees the memory in the background and never blocks on a big
// delete. It returns how many keys it removed.
func (b *Rebuilder) unlinkAll(ctx context.Context, pattern string, keep ...string) (int, error) {
	var kept atomic.Int64
	n, err := b.scan(ctx, pattern, func(ctx context.Context, keys []string) error {
		before := len(keys)
		keys = slices.DeleteFunc(keys, func(k string) bool { return slices.Contains(keep, k) })
		kept.Add(int64(before - len(keys)))
		if len(keys) == 0 {
			return nil
		}
		return b.rdb.Unlink(ctx, keys...).Err()
	})
	return n - int(kept.Load()), err
}
