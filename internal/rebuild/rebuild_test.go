package rebuild

import (
	"context"
	"io"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/aggregate"
	"github.com/clickstream/pipeline/internal/generations"
	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/clickstream/pipeline/internal/testlog"
	"github.com/redis/go-redis/v9"
)

var testConfig = Config{Batch: 7, RedisTimeout: 5 * time.Second, LockTTL: 5 * time.Second, StatsRetention: events.DefaultRetention}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testEvents are several users and products, all three types, repeats within and
// across batches.
var testEvents = []events.Event{
	{UserID: "u1", ProductID: "p1", Type: events.Click},
	{UserID: "u1", ProductID: "p1", Type: events.Click},
	{UserID: "u1", ProductID: "p2", Type: events.PageView},
	{UserID: "u2", ProductID: "p1", Type: events.Dwell, DurationMs: 1500},
	{UserID: "u2", ProductID: "p2", Type: events.Dwell, DurationMs: 250},
	{UserID: "u3", ProductID: "p3", Type: events.PageView},
	{UserID: "u1", ProductID: "p4", Type: events.Click},
	{UserID: "u4", ProductID: "p4", Type: events.Click},
	{UserID: "u2", ProductID: "p1", Type: events.Dwell, DurationMs: 86_400_000},
	{UserID: "u3", ProductID: "p2", Type: events.Click},
	{UserID: "u1", ProductID: "p1", Type: events.PageView},
	{UserID: "u4", ProductID: "p3", Type: events.Dwell, DurationMs: 1},
	{UserID: "u5", ProductID: "p3", Type: events.PageView},
	{UserID: "u2", ProductID: "p2", Type: events.Click},
}

// live writes events (and an undecodable entry) to the stream and counts them into
// generation 1 the way a processor does, returning the keys it wrote.
func live(t *testing.T, rdb redis.UniversalClient, keys events.Keys) map[string]map[string]string {
	t.Helper()
	ctx := context.Background()
	gen := keys.Gen(1)
	if err := rdb.XGroupCreateMkStream(ctx, keys.Stream(), gen.Group(), "0").Err(); err != nil {
		t.Fatal(err)
	}
	for i := range testEvents {
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: keys.Stream(), Values: testEvents[i].AppendFields(nil)}).Err(); err != nil {
			t.Fatal(err)
		}
		if i == 5 {
			rdb.XAdd(ctx, &redis.XAddArgs{Stream: keys.Stream(), Values: []string{"foo", "bar"}})
		}
	}
	res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: gen.Group(), Consumer: "live",
		Streams: []string{keys.Stream(), ">"}, Block: -1}).Result()
	if err != nil {
		t.Fatal(err)
	}
	a := aggregate.NewApplier(rdb, keys, gen, "live", events.DefaultRetention)
	if _, _, err := a.Apply(ctx, aggregate.Decode(res[0].Messages)); err != nil {
		t.Fatal(err)
	}
	counts := dump(t, rdb, gen)
	if len(counts) < len(testEvents) {
		t.Fatalf("the live apply wrote %d keys", len(counts))
	}
	return counts
}

// dump reads every key of gen but its claim epoch, named without gen's prefix: a
// hash's fields, a sorted set's scores, a HyperLogLog's count, and each key's expiry.
func dump(t *testing.T, rdb redis.UniversalClient, gen events.GenKeys) map[string]map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]map[string]string{}
	for _, k := range scanKeys(t, rdb, gen.Pattern()) {
		if k == gen.ClaimEpoch() {
			continue
		}
		var v map[string]string
		switch typ := rdb.Type(ctx, k).Val(); typ {
		case "hash":
			v = rdb.HGetAll(ctx, k).Val()
		case "zset":
			v = map[string]string{}
			for _, z := range rdb.ZRangeWithScores(ctx, k, 0, -1).Val() {
				v[z.Member.(string)] = strconv.FormatFloat(z.Score, 'f', -1, 64)
			}
		case "string":
			v = map[string]string{"pfcount": strconv.FormatInt(rdb.PFCount(ctx, k).Val(), 10)}
		default:
			t.Fatalf("%s is a %s", k, typ)
		}
		if at := rdb.PExpireTime(ctx, k).Val(); at > 0 {
			v["(expires)"] = strconv.FormatInt(int64(at/time.Millisecond), 10)
		}
		out[strings.TrimPrefix(k, gen.Prefix())] = v
	}
	return out
}

// scanKeys lists the keys matching pattern, on every master of a cluster.
func scanKeys(t *testing.T, rdb redis.UniversalClient, pattern string) []string {
	t.Helper()
	ctx := context.Background()
	var mu sync.Mutex
	var keys []string
	scan := func(ctx context.Context, c *redis.Client) error {
		iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			mu.Lock()
			keys = append(keys, iter.Val())
			mu.Unlock()
		}
		return iter.Err()
	}
	var err error
	switch c := rdb.(type) {
	case *redis.Client:
		err = scan(ctx, c)
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, scan)
	default:
		t.Fatalf("scanKeys: a %T", rdb)
	}
	if err != nil {
		t.Fatalf("SCAN %s: %v", pattern, err)
	}
	return keys
}

// assertRebuilt checks the end of a rebuild from generation 1 to 2: the pointer names
// 2, generation 2 holds exactly what generation 1 held, generation 1's keys are gone
// (but its claim epoch) and so is its group, and the state says done.
func assertRebuilt(t *testing.T, rdb redis.UniversalClient, keys events.Keys, want map[string]map[string]string, out string) {
	t.Helper()
	ctx := context.Background()
	if got := dump(t, rdb, keys.Gen(2)); !reflect.DeepEqual(got, want) {
		t.Errorf("generation 2:\n%v\nwant generation 1's keys:\n%v\n%s", got, want, out)
	}
	if left := scanKeys(t, rdb, keys.Gen(1).Pattern()); len(left) != 1 || left[0] != keys.Gen(1).ClaimEpoch() {
		t.Errorf("generation 1's keys left after the rebuild: %v, want only its claim epoch", left)
	}
	if v := rdb.Get(ctx, keys.Generation()).Val(); v != "2" {
		t.Errorf("pointer %q, want 2", v)
	}
	groups, err := rdb.XInfoGroups(ctx, keys.Stream()).Result()
	if err != nil || len(groups) != 1 || groups[0].Name != keys.Gen(2).Group() || groups[0].Pending != 0 {
		t.Errorf("groups %+v, %v; want only %s, nothing pending", groups, err, keys.Gen(2).Group())
	}
	pipe := rdb.Pipeline()
	rc := generations.QueueRebuild(ctx, pipe, keys)
	pipe.Exec(ctx)
	if st, cur, err := rc.Result(); err != nil || st.State != events.RebuildStateDone || st.Target != 2 || cur != 2 ||
		st.Applied != int64(len(testEvents)+1) {
		t.Errorf("state %+v, current %d, %v; want done, generation 2, %d applied", st, cur, err, len(testEvents)+1)
	}
	if !strings.Contains(out, "rebuild: done: generation 2 is current") {
		t.Errorf("output does not say it is done:\n%s", out)
	}
}

// A rebuild replays the stream, seven entries at a time, into generation 2, which
// then holds exactly generation 1's keys; it switches, and removes generation 1.
func TestRebuild(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	keys := events.NewKeys(redistest.Namespace(t))
	want := live(t, rdb, keys)

	out := &testlog.Buffer{}
	if err := New(rdb, keys, testConfig, out, discard()).Run(context.Background()); err != nil {
		t.Fatalf("Run: %v\n%s", err, out)
	}
	assertRebuilt(t, rdb, keys, want, out.String())
	if n := rdb.Exists(context.Background(), keys.RebuildLock(), keys.Pause()).Val(); n != 0 {
		t.Errorf("the lock or the pause outlived the rebuild")
	}
}

// A second rebuild is refused while one holds the lock, and changes nothing.
func TestRebuildRefusedWhileLocked(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	keys := events.NewKeys(redistest.Namespace(t))
	live(t, rdb, keys)
	if err := rdb.Set(ctx, keys.RebuildLock(), "host:42:other", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	out := &testlog.Buffer{}
	err := New(rdb, keys, testConfig, out, discard()).Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "refused: another rebuild is running") || !strings.Contains(err.Error(), "host:42:other") {
		t.Fatalf("Run while locked: %v, want a refusal naming the holder\n%s", err, out)
	}
	if n := len(scanKeys(t, rdb, keys.Gen(2).Pattern())); n != 0 || rdb.Exists(ctx, keys.RebuildState()).Val() != 0 {
		t.Errorf("a refused rebuild wrote %d keys of generation 2, or its state", n)
	}
}

// --cancel discards an unfinished rebuild whose process is gone: its group first,
// then its keys; the current generation is untouched.
func TestCancelUnfinished(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	keys := events.NewKeys(redistest.Namespace(t))
	want := live(t, rdb, keys)
	// What a killed rebuild leaves: its group, part of its keys, its state, a pause.
	target := keys.Gen(2)
	rdb.XGroupCreate(ctx, keys.Stream(), target.Group(), "0")
	rdb.HSet(ctx, target.User("u1"), events.FieldClicks, 1)
	rdb.ZAdd(ctx, target.TopProducts(), redis.Z{Score: 1, Member: "p1"})
	rdb.HSet(ctx, keys.RebuildState(), events.RebuildFieldState, events.RebuildStateBuilding,
		events.RebuildFieldTarget, 2, events.RebuildFieldFrom, 1, events.RebuildFieldSeeded, 1)
	rdb.Set(ctx, keys.Pause(), "dead", time.Minute)

	out := &testlog.Buffer{}
	if err := New(rdb, keys, testConfig, out, discard()).Cancel(ctx); err != nil {
		t.Fatalf("Cancel: %v\n%s", err, out)
	}
	if !strings.Contains(out.String(), "generation 2 deleted (2 keys); generation 1 stays current") {
		t.Errorf("output:\n%s", out)
	}
	if left := scanKeys(t, rdb, target.Pattern()); len(left) != 0 {
		t.Errorf("generation 2's keys left: %v", left)
	}
	groups, _ := rdb.XInfoGroups(ctx, keys.Stream()).Result()
	if len(groups) != 1 || groups[0].Name != keys.Gen(1).Group() {
		t.Errorf("groups %+v, want only generation 1's", groups)
	}
	if st := rdb.HGet(ctx, keys.RebuildState(), events.RebuildFieldState).Val(); st != events.RebuildStateCancelled {
		t.Errorf("state %q, want cancelled", st)
	}
	if rdb.Exists(ctx, keys.Pause()).Val() != 0 {
		t.Error("the pause outlived the cancel")
	}
	if got := dump(t, rdb, keys.Gen(1)); !reflect.DeepEqual(got, want) {
		t.Errorf("generation 1 changed:\n%v\nwant\n%v", got, want)
	}

	// Nothing left to cancel now.
	out = &testlog.Buffer{}
	if err := New(rdb, keys, testConfig, out, discard()).Cancel(ctx); err != nil || !strings.Contains(out.String(), "nothing to cancel (cancelled)") {
		t.Errorf("second Cancel: %v\n%s", err, out)
	}
}
