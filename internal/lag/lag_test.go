package lag

import (
	"context"
	"testing"

	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/redis/go-redis/v9"
)

func TestOf(t *testing.T) {
	// A stream of 10 entries, 1-1 … 10-1 added over time, 100 ever added (90 trimmed).
	s := Stream{Length: 10, FirstID: "1-1", LastID: "10-1", EntriesAdded: 100}
	for _, c := range []struct {
		name string
		s    Stream
		g    Group
		want int64
	}{
		{"caught up, Redis agrees", s, Group{LastDeliveredID: "10-1", EntriesRead: 100, RedisLag: 0}, 0},
		{"caught up, counter lost in a restart", s, Group{LastDeliveredID: "10-1", EntriesRead: 40, RedisLag: 60}, 0},
		{"caught up, counter unknown", s, Group{LastDeliveredID: "10-1", EntriesRead: -1, RedisLag: -1}, 0},
		{"past the last id (set by hand)", s, Group{LastDeliveredID: "11-0", EntriesRead: 100, RedisLag: 0}, 0},
		{"empty stream, entries trimmed", Stream{LastID: "10-1", EntriesAdded: 100}, Group{LastDeliveredID: "5-0", RedisLag: 7}, 0},
		{"stream never written", Stream{LastID: "0-0"}, Group{LastDeliveredID: "0-0", RedisLag: -1}, 0},
		{"no stream", Stream{}, Group{LastDeliveredID: "0-0", RedisLag: -1}, 0},
		{"before the first entry: all", s, Group{LastDeliveredID: "0-0", EntriesRead: -1, RedisLag: -1}, 10},
		{"before the first entry, counter lost", s, Group{LastDeliveredID: "0-5", EntriesRead: 3, RedisLag: 97}, 10},
		{"inside, Redis right", s, Group{LastDeliveredID: "7-1", EntriesRead: 97, RedisLag: 3}, 3},
		{"inside, counter lost: capped", s, Group{LastDeliveredID: "7-1", EntriesRead: 40, RedisLag: 60}, 9},
		{"inside, lag unknown, counter known", s, Group{LastDeliveredID: "7-1", EntriesRead: 95, RedisLag: -1}, 5},
		{"inside, nothing known", s, Group{LastDeliveredID: "7-1", EntriesRead: -1, RedisLag: -1}, -1},
		{"at the first entry", s, Group{LastDeliveredID: "1-1", EntriesRead: 91, RedisLag: 9}, 9},
	} {
		if got := Of(c.s, c.g); got != c.want {
			t.Errorf("%s: Of(%+v, %+v) = %d, want %d", c.name, c.s, c.g, got, c.want)
		}
	}
}

// Redis 7.0 restarted from its AOF has a group's entries-read counter as of the last
// AOF rewrite. Of is right anyway while the group is caught up; Repair sets the counter
// right, so that entries added afterwards are counted exactly, and the repair itself
// survives the next restart.
func TestRestartFromAOF(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t, redistest.Args("--appendonly", "yes", "--appendfsync", "everysec"))
	ctx := context.Background()
	const stream, group = "{t}:events", "g"
	rdb := rs.Client()
	add := func(n int) {
		t.Helper()
		pipe := rdb.Pipeline()
		for i := range n {
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"i", i}})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	readAll := func() {
		t.Helper()
		if err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: "c", Streams: []string{stream, ">"}, Count: 100_000, Block: -1}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	read := func() (Stream, Group) {
		t.Helper()
		s, gs, err := Read(ctx, rdb, stream)
		if err != nil || len(gs) != 1 {
			t.Fatalf("Read: %+v, %v", gs, err)
		}
		return s, gs[0]
	}
	restart := func() {
		t.Helper()
		rs.Shutdown()
		rs.Restart()
		rdb = rs.Client()
	}
	if err := rdb.XGroupCreateMkStream(ctx, stream, group, "0").Err(); err != nil {
		t.Fatal(err)
	}
	add(100)
	readAll()
	rs.RewriteAOF()
	add(250)
	readAll()
	restart()

	s, g := read()
	if g.LastDeliveredID != s.LastID || g.RedisLag == 0 {
		t.Logf("this Redis keeps the counter (lag %d): nothing to repair", g.RedisLag)
	} else {
		t.Logf("after the restart Redis reports lag %d, entries-read %d, with every entry delivered", g.RedisLag, g.EntriesRead)
	}
	if got := Of(s, g); got != 0 {
		t.Errorf("lag after the restart, every entry delivered: %d, want 0", got)
	}
	if !Repairable(s, g) && g.RedisLag != 0 {
		t.Errorf("Repairable(%+v, %+v) = false, want true", s, g)
	}

	// Not caught up: Repair changes nothing.
	add(5)
	if ok, _, _, err := Repair(ctx, rdb, stream, group); err != nil || ok {
		t.Errorf("Repair with 5 entries undelivered: %v, %v; want no repair", ok, err)
	}
	readAll()
	ok, was, now, err := Repair(ctx, rdb, stream, group)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Repair: %v, entries-read %d -> %d", ok, was, now)
	if ok && now != 355 {
		t.Errorf("Repair set entries-read %d, want 355", now)
	}
	if ok, _, _, err := Repair(ctx, rdb, stream, group); err != nil || ok {
		t.Errorf("second Repair: %v, %v; want nothing left to repair", ok, err)
	}

	add(7)
	s, g = read()
	if got := Of(s, g); got != 7 || g.RedisLag != 7 {
		t.Errorf("7 entries undelivered after the repair: Of %d, Redis %d; want 7 and 7", Of(s, g), g.RedisLag)
	}
	// The repair is in the AOF: after another restart Redis still counts the 7.
	restart()
	s, g = read()
	if got := Of(s, g); got != 7 || g.RedisLag != 7 {
		t.Errorf("7 entries undelivered after a second restart: Of %d, Redis %d; want 7 and 7", got, g.RedisLag)
	}

	// Missing stream or group: nothing to repair, no error.
	for _, sg := range [][2]string{{"{t}:none", group}, {stream, "none"}} {
		if ok, _, _, err := Repair(ctx, rdb, sg[0], sg[1]); ok || err != nil {
			t.Errorf("Repair(%s, %s) = %v, %v; want false, nil", sg[0], sg[1], ok, err)
		}
	}
	if s, gs, err := Read(ctx, rdb, "{t}:none"); err != nil || len(gs) != 0 || s != (Stream{}) {
		t.Errorf("Read of a missing stream: %+v, %v, %v; want nothing and no error", s, gs, err)
	}
}
