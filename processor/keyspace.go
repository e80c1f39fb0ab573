package main

import (
	"context"
	"slices"
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
func (b *rebuilder) scan(ctx context.Context, pattern string, fn func(context.Context, []string) error) (int, error) {
	var cursor uint64
	n := 0
	for {
		sctx, cancel := b.rctx(ctx)
		keys, next, err := b.rdb.Scan(sctx, cursor, pattern, scanCount).Result()
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
func (b *rebuilder) unlinkAll(ctx context.Context, pattern string, keep ...string) (int, error) {
	kept := 0
	n, err := b.scan(ctx, pattern, func(ctx context.Context, keys []string) error {
		before := len(keys)
		keys = slices.DeleteFunc(keys, func(k string) bool { return slices.Contains(keep, k) })
		kept += before - len(keys)
		if len(keys) == 0 {
			return nil
		}
		return b.rdb.Unlink(ctx, keys...).Err()
	})
	return n - kept, err
}
