package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/redis/go-redis/v9"
)

// claimScript takes over entries left pending longer than min-idle, and bumps the claim
// epoch when it took any, in one atomic step (see GenKeys.ClaimEpoch and
// internal/aggregate/apply.lua).
var claimScript = redis.NewScript(`#!lua
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
if #r[2] > 0 then redis.call('INCR', KEYS[2]) end
return r
`)

// claimPending runs claimScript from start and returns the claimed entries and the
// cursor for the next call ("0-0" when the scan is complete).
func claimPending(ctx context.Context, rdb redis.Scripter, gen events.GenKeys, stream, consumer string, minIdle time.Duration, start string, count int) ([]redis.XMessage, string, error) {
	v, err := claimScript.Run(ctx, rdb, []string{stream, gen.ClaimEpoch()},
		gen.Group(), consumer, minIdle.Milliseconds(), start, count).Slice()
	if err != nil {
		return nil, "", err
	}
	if len(v) < 2 {
		return nil, "", fmt.Errorf("XAUTOCLAIM reply has %d elements", len(v))
	}
	next, _ := v[0].(string)
	raw, _ := v[1].([]any)
	msgs := make([]redis.XMessage, 0, len(raw))
	for _, m := range raw {
		msg, err := parseEntry(m)
		if err != nil {
			return nil, "", err
		}
		msgs = append(msgs, msg)
	}
	return msgs, next, nil
}

// parseEntry reads one [id, [field, value, ...]] entry of a raw stream reply. An entry
// deleted from the stream while pending comes back with no fields.
func parseEntry(m any) (redis.XMessage, error) {
	pair, ok := m.([]any)
	if !ok || len(pair) != 2 {
		return redis.XMessage{}, errors.New("malformed stream entry in reply")
	}
	id, _ := pair[0].(string)
	kv, _ := pair[1].([]any)
	vals := make(map[string]any, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		k, _ := kv[i].(string)
		vals[k] = kv[i+1]
	}
	return redis.XMessage{ID: id, Values: vals}, nil
}

// readBatch reads the claim epoch and then a batch, in one round trip. The epoch is read
// first: a claim that happens after it makes the apply take the checked path, whatever
// the read returns.
func readBatch(ctx context.Context, rdb redis.UniversalClient, gen events.GenKeys, args *redis.XReadGroupArgs) ([]redis.XMessage, string, error) {
	pipe := rdb.Pipeline()
	epoch := pipe.Get(ctx, gen.ClaimEpoch())
	read := pipe.XReadGroup(ctx, args)
	_, err := pipe.Exec(ctx)
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, "", err
	}
	if err := read.Err(); err != nil {
		return nil, "", err // redis.Nil: nothing arrived within the block time
	}
	e := epoch.Val()
	if e == "" {
		e = "0"
	}
	return read.Val()[0].Messages, e, nil
}
