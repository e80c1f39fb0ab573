package main

import (
	"context"
	"testing"
	"time"

	"github.com/clickstream/pipeline/internal/lag"
	"github.com/clickstream/pipeline/internal/redistest"
)

// Redis 7.0 restarted from its AOF has a consumer group's entries-read counter as of the
// last AOF rewrite (redis/redis#10569), so the lag it reports is wrong by every entry
// read since, and stays so. A processor that reads up to the end of the stream sets the
// counter right: entries added afterwards are then counted exactly, by Redis and by
// lag.Of, even once no processor runs.
func TestProcessorRepairsLagAfterRedisRestart(t *testing.T) {
	t.Parallel()
	// scripts/run.sh's Redis settings.
	rs := redistest.Start(t, redistest.Args("--appendonly", "yes", "--appendfsync", "everysec"))
	p := newPipeline(t, rs)
	evs := randomEvents(12, 3000, 50, 20)
	stop := p.startProcessor(t, "proc-1", nil)
	p.xadd(t, evs[:1000])
	p.waitDrained(t)
	rs.RewriteAOF()
	p.xadd(t, evs[1000:])
	p.waitDrained(t)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	rs.Shutdown()
	rs.Restart()

	groupLag := func() (redisLag, of int64) {
		t.Helper()
		s, groups, err := lag.Read(context.Background(), p.rdb, p.keys.Stream())
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range groups {
			if g.Name == p.gen.Group() {
				return g.RedisLag, lag.Of(s, g)
			}
		}
		t.Fatalf("no group %s", p.gen.Group())
		return 0, 0
	}
	if r, of := groupLag(); r != 0 {
		t.Logf("after the restart, every entry delivered: Redis reports lag %d, lag.Of %d", r, of)
	}
	stop = p.startProcessor(t, "proc-2", nil)
	var r, of int64
	for i := 0; ; i++ {
		if r, of = groupLag(); r == 0 && of == 0 {
			break
		}
		if i == 2400 { // 60 s: generous under -race on a busy machine
			t.Fatalf("a running processor never repaired the group's counter: Redis reports lag %d, lag.Of %d", r, of)
		}
		time.Sleep(25 * time.Millisecond)
	}
	p.assertTotals(t, evs)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	p.xadd(t, randomEvents(13, 5, 50, 20))
	if r, of := groupLag(); r != 5 || of != 5 {
		t.Errorf("5 entries added while no processor runs: Redis reports lag %d, lag.Of %d; want 5 and 5", r, of)
	}
}
