package main

import (
	"context"
	"slices"
)

// scanChunk is how many keys one SCAN asks for and one UNLINK or COPY pipeline takes.
const scanChunk = 500

// scan calls fn with the keys matching pattern, a chunk at a time, and returns how many
// there were. It is for admin commands only: SCAN walks the whole keyspace.
func (b *rebuilder) scan(ctx context.Context, pattern string, fn func(context.Context, []string) error) (int, error) {
	var cursor uint64
	n := 0
	for {
		sctx, cancel := b.rctx(ctx)
		keys, next, err := b.rdb.Scan(sctx, cursor, pattern, scanChunk).Result()
		if err == nil && len(keys) > 0 {
			err = fn(sctx, keys)
		}
		cancel()
		if err != nil {
			return n, err
		}
		n += len(keys)
		if next == 0 {
			return n, nil
		}
		cursor = next
	}
}

// unlinkAll removes every key matching pattern, except keep, with UNLINK, a chunk at a
// time, so that Redis frees the memory in the background and never blocks on a big
// delete. It returns how many keys matched.
func (b *rebuilder) unlinkAll(ctx context.Context, pattern string, keep ...string) (int, error) {
	return b.scan(ctx, pattern, func(ctx context.Context, keys []string) error {
		keys = slices.DeleteFunc(keys, func(k string) bool { return slices.Contains(keep, k) })
		if len(keys) == 0 {
			return nil
		}
		return b.rdb.Unlink(ctx, keys...).Err()
	})
}
