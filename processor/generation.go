package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/clickstream/pipeline/events"
	"github.com/redis/go-redis/v9"
)

// A generation is a consumer group and the key namespace its members write (see
// DESIGN.md §5). The pointer key names the current one; processors follow it, and a
// rebuild moves it in one atomic step once the new generation has counted everything
// the current one has.

// ensureGroupScript creates a generation's consumer group, at the start of the stream,
// only if the pointer still names that generation, and returns the pointer (as a
// number string, "1" when unset). Checking and creating in one step matters after a
// switch: the old group is destroyed on purpose, and a processor that has not yet seen
// the new pointer must not bring it back.
var ensureGroupScript = redis.NewScript(`#!lua
local cur = redis.call('GET', KEYS[2]) or '1'
if cur ~= ARGV[1] then return cur end
local r = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[2], '0', 'MKSTREAM')
if type(r) == 'table' and r.err and not string.find(r.err, '^BUSYGROUP') then
  return redis.error_reply(r.err)
end
return cur
`)

// ensureGroup makes sure the group of the current generation exists and returns that
// generation's keys. It retries when a switch happens between reading the pointer and
// creating the group.
func ensureGroup(ctx context.Context, rdb redis.UniversalClient, keys events.Keys) (events.GenKeys, error) {
	v, err := rdb.Get(ctx, keys.Generation()).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return events.GenKeys{}, err
	}
	for range 10 {
		n, err := events.ParseGeneration(v)
		if err != nil {
			return events.GenKeys{}, err
		}
		gen := keys.Gen(n)
		cur, err := ensureGroupScript.Run(ctx, rdb, []string{keys.Stream(), keys.Generation()}, n, gen.Group()).Text()
		if err != nil {
			return events.GenKeys{}, fmt.Errorf("create group %s: %w", gen.Group(), err)
		}
		if cur == v || (v == "" && cur == "1") {
			return gen, nil
		}
		v = cur
	}
	return events.GenKeys{}, errors.New("the generation pointer keeps changing")
}

// readPointer returns, in one round trip, whether processing is paused for a switch
// and which generation is current.
func readPointer(ctx context.Context, rdb redis.UniversalClient, keys events.Keys) (paused bool, gen int64, err error) {
	vals, err := rdb.MGet(ctx, keys.Pause(), keys.Generation()).Result()
	if err != nil {
		return false, 0, err
	}
	s, _ := vals[1].(string)
	gen, err = events.ParseGeneration(s)
	return vals[0] != nil, gen, err
}

// isNoGroup reports the error Redis gives for a consumer group that does not exist,
// which a script passes through with the same prefix.
func isNoGroup(err error) bool {
	return err != nil && strings.Contains(err.Error(), "NOGROUP")
}
