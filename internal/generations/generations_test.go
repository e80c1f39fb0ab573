package generations

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// EnsureGroup creates the current generation's group (at the start of the stream,
// and the stream with it), is a no-op when it exists, and never brings back the group
// of a generation the pointer no longer names: after a switch it returns the new one.
func TestEnsureGroup(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	keys := events.NewKeys(redistest.Namespace(t))

	for range 2 { // the second time the group exists already
		gen, err := EnsureGroup(ctx, rdb, keys)
		if err != nil || gen.Number != 1 {
			t.Fatalf("EnsureGroup = generation %d, %v; want 1", gen.Number, err)
		}
	}
	if got := groups(t, rdb, keys); len(got) != 1 || got[0] != "aggregator-g1" {
		t.Fatalf("groups %v, want [aggregator-g1]", got)
	}

	// A rebuild switched to generation 2 and destroyed generation 1's group.
	if err := rdb.Set(ctx, keys.Generation(), "2", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.XGroupDestroy(ctx, keys.Stream(), "aggregator-g1").Err(); err != nil {
		t.Fatal(err)
	}
	gen, err := EnsureGroup(ctx, rdb, keys)
	if err != nil || gen.Number != 2 {
		t.Fatalf("EnsureGroup after the switch = generation %d, %v; want 2", gen.Number, err)
	}
	if got := groups(t, rdb, keys); len(got) != 1 || got[0] != "aggregator-g2" {
		t.Errorf("groups %v, want [aggregator-g2]: the replaced generation's group must stay gone", got)
	}

	if err := rdb.Set(ctx, keys.Generation(), "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureGroup(ctx, rdb, keys); err == nil {
		t.Error("EnsureGroup with a pointer that is not a number: no error")
	}
}

func groups(t *testing.T, rdb *redis.Client, keys events.Keys) []string {
	t.Helper()
	gs, err := rdb.XInfoGroups(context.Background(), keys.Stream()).Result()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range gs {
		names = append(names, g.Name)
	}
	return names
}

// ReadPointer and Current read an unset pointer as generation 1; Pause and Resume set
// and lift the pause ReadPointer reports.
func TestPointerAndPause(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	keys := events.NewKeys(redistest.Namespace(t))

	check := func(wantPaused bool, wantGen int64) {
		t.Helper()
		paused, gen, err := ReadPointer(ctx, rdb, keys)
		if err != nil || paused != wantPaused || gen != wantGen {
			t.Errorf("ReadPointer = paused %v, generation %d, %v; want %v, %d", paused, gen, err, wantPaused, wantGen)
		}
		pipe := rdb.Pipeline()
		get := pipe.Get(ctx, keys.Generation())
		pipe.Exec(ctx)
		if n, err := Current(get); err != nil || n != wantGen {
			t.Errorf("Current = %d, %v; want %d", n, err, wantGen)
		}
	}
	check(false, 1)
	if err := Pause(ctx, rdb, keys, "rebuilder", time.Minute); err != nil {
		t.Fatal(err)
	}
	check(true, 1)
	if err := rdb.Set(ctx, keys.Generation(), "7", 0).Err(); err != nil {
		t.Fatal(err)
	}
	check(true, 7)
	if err := Resume(ctx, rdb, keys); err != nil {
		t.Fatal(err)
	}
	check(false, 7)
	if n := rdb.Exists(ctx, keys.Pause()).Val(); n != 0 {
		t.Error("the pause key is still there after Resume")
	}
}

// A Follower starts at generation 1 and moves to whatever pointer value it is shown.
func TestFollowerCheck(t *testing.T) {
	keys := events.NewKeys("cs")
	f := NewFollower(keys)
	if got := f.Load(); got != keys.Gen(1) {
		t.Fatalf("Load = %+v, want generation 1", got)
	}
	for _, tc := range []struct {
		used      int64
		ptr       string
		want      int64
		wantMoved bool
	}{
		{1, "", 1, false}, {1, "1", 1, false}, {1, "2", 2, true}, {2, "2", 2, false}, {2, "", 1, true},
	} {
		gen, moved, err := f.Check(keys.Gen(tc.used), tc.ptr)
		if err != nil || gen.Number != tc.want || moved != tc.wantMoved {
			t.Errorf("Check(%d, %q) = %d, moved %v, %v; want %d, %v", tc.used, tc.ptr, gen.Number, moved, err, tc.want, tc.wantMoved)
		}
		if f.Load().Number != tc.want {
			t.Errorf("after Check(%d, %q), Load = %d, want %d", tc.used, tc.ptr, f.Load().Number, tc.want)
		}
	}
	if _, _, err := f.Check(keys.Gen(1), "two"); err == nil {
		t.Error("Check of a pointer that is not a number: no error")
	}
}

// The errors Redis itself gives for a missing stream and a missing group are told
// apart from each other and from anything else.
func TestMissingStreamAndGroup(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	keys := events.NewKeys(redistest.Namespace(t))

	noStream := []error{
		rdb.XInfoStream(ctx, keys.Stream()).Err(),
		rdb.XInfoGroups(ctx, keys.Stream()).Err(),
		rdb.XGroupDestroy(ctx, keys.Stream(), "g").Err(),
		rdb.Get(ctx, keys.Stream()).Err(),
		redis.NewScript("#!lua\nreturn redis.call('XINFO', 'STREAM', KEYS[1])\n").Run(ctx, rdb, []string{keys.Stream()}).Err(),
	}
	for i, err := range noStream {
		if !IsNoStream(err) || IsNoGroup(err) {
			t.Errorf("missing stream, case %d: %v: IsNoStream %v, IsNoGroup %v; want true, false", i, err, IsNoStream(err), IsNoGroup(err))
		}
	}
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: keys.Stream(), Values: []string{"u", "u1"}}).Err(); err != nil {
		t.Fatal(err)
	}
	noGroup := []error{
		rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{keys.Stream(), ">"}, Block: -1}).Err(),
		rdb.XInfoConsumers(ctx, keys.Stream(), "g").Err(),
		redis.NewScript("#!lua\nreturn redis.call('XREADGROUP', 'GROUP', 'g', 'c', 'STREAMS', KEYS[1], '>')\n").
			Run(ctx, rdb, []string{keys.Stream()}).Err(),
	}
	for i, err := range noGroup {
		if !IsNoGroup(err) || IsNoStream(err) {
			t.Errorf("missing group, case %d: %v: IsNoGroup %v, IsNoStream %v; want true, false", i, err, IsNoGroup(err), IsNoStream(err))
		}
	}
	for _, err := range []error{nil, context.DeadlineExceeded, errors.New("WRONGTYPE Operation against a key holding the wrong kind of value"),
		rdb.HGet(ctx, keys.Stream(), "f").Err()} {
		if IsNoStream(err) || IsNoGroup(err) {
			t.Errorf("%v: IsNoStream %v, IsNoGroup %v; want false, false", err, IsNoStream(err), IsNoGroup(err))
		}
	}
}
