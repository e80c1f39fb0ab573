// Package generations is what every service knows about generations of aggregates. A
// generation is a consumer group and the key namespace its members write; the pointer
// key names the current one (see the README, "Replay: rebuilding every count from the
// stream"). Processors follow the pointer and create the current generation's group,
// queryapi reads only the generation it names, ingest measures the lag of its group,
// and a rebuild moves it in one atomic step once the new generation has counted
// everything the current one has, pausing the processors around that step.
//
// Here are the pieces they share: reading the pointer and the pause, creating a
// generation's group, the rebuild's recorded state, the lease that keeps a second
// rebuild (or retention pass) out, and the errors Redis gives when a generation's
// stream or group does not exist.
package generations

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/redis/go-redis/v9"
)

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

// EnsureGroup makes sure the group of the current generation exists and returns that
// generation's keys. It retries when a switch happens between reading the pointer and
// creating the group.
func EnsureGroup(ctx context.Context, rdb redis.UniversalClient, keys events.Keys) (events.GenKeys, error) {
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

// ReadPointer returns, in one round trip, whether processing is paused for a switch
// and which generation is current.
func ReadPointer(ctx context.Context, rdb redis.UniversalClient, keys events.Keys) (paused bool, gen int64, err error) {
	vals, err := rdb.MGet(ctx, keys.Pause(), keys.Generation()).Result()
	if err != nil {
		return false, 0, err
	}
	s, _ := vals[1].(string)
	gen, err = events.ParseGeneration(s)
	return vals[0] != nil, gen, err
}

// Current returns the generation a GET of the pointer names, queued on a pipeline
// with other reads: 1 when there is no pointer. An error is the GET's, or a pointer
// that is not a generation.
func Current(get *redis.StringCmd) (int64, error) {
	if err := get.Err(); err != nil && !errors.Is(err, redis.Nil) {
		return 0, err
	}
	return events.ParseGeneration(get.Val())
}

// Pause tells the processors to start no new read, for at most ttl: a rebuild sets it
// for the moment of its switch, holder naming the rebuild.
func Pause(ctx context.Context, rdb redis.UniversalClient, keys events.Keys, holder string, ttl time.Duration) error {
	return rdb.Set(ctx, keys.Pause(), holder, ttl).Err()
}

// Resume lifts the pause.
func Resume(ctx context.Context, rdb redis.UniversalClient, keys events.Keys) error {
	return rdb.Del(ctx, keys.Pause()).Err()
}

// Follower remembers which generation the pointer named at the last read, for a
// reader that reads the pointer in the same MULTI/EXEC as the data and does the read
// again if the pointer had moved: so an answer always comes whole from the generation
// that was current at the moment it was read, never from one a rebuild is still
// building or one it has replaced.
type Follower struct {
	keys events.Keys
	cur  atomic.Pointer[events.GenKeys]
}

// NewFollower returns a Follower that starts at generation 1, the current one until a
// rebuild has run; its first Check moves it on if it is not.
func NewFollower(keys events.Keys) *Follower {
	f := &Follower{keys: keys}
	first := keys.Gen(1)
	f.cur.Store(&first)
	return f
}

// Load returns the generation last seen current.
func (f *Follower) Load() events.GenKeys { return *f.cur.Load() }

// QueuePointer queues the GET of the pointer on pipe: put it on the MULTI/EXEC of the
// data, and hand its value to Check.
func (f *Follower) QueuePointer(ctx context.Context, pipe redis.Pipeliner) *redis.StringCmd {
	return pipe.Get(ctx, f.keys.Generation())
}

// MaxRedo bounds how often one read is done again because the pointer moved; it moves
// once per rebuild, so a second redo means something is wrong.
const MaxRedo = 3

// ErrPointerMoving is what a read returns after MaxRedo redos.
var ErrPointerMoving = errors.New("the generation pointer keeps moving")

// Check compares the pointer value read with the data (ptr; "" when unset) with the
// generation the data was read from. If they differ it remembers the pointer's
// generation and returns it with moved set: the data must be read again.
func (f *Follower) Check(used events.GenKeys, ptr string) (gen events.GenKeys, moved bool, err error) {
	n, err := events.ParseGeneration(ptr)
	if err != nil {
		return used, false, err
	}
	if n == used.Number {
		return used, false, nil
	}
	next := f.keys.Gen(n)
	f.cur.Store(&next)
	return next, true, nil
}
