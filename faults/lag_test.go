package faults

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/clickstream/pipeline/internal/metrics/metricstest"
	"github.com/clickstream/pipeline/internal/proctest"
	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/clickstream/pipeline/internal/workload"
	"github.com/redis/go-redis/v9"
)

// TestLagAfterRedisRestart stops the whole pipeline and Redis cleanly, as someone
// stopping scripts/run.sh does, and starts it all again on the same AOF. Redis 7.0
// rebuilds a consumer group's position from the AOF without its entries-read counter
// (redis/redis#10569): the counter comes back as of the last AOF rewrite, so XINFO
// GROUPS reports a lag that never clears, however caught up the group is. The
// pipeline must not believe it: ingest, started with a MAX_LAG below that false lag,
// accepts events; /v1/pipeline and consumer_group_lag say 0 while every entry has been
// delivered, and the exact number of entries posted while no processor runs.
func TestLagAfterRedisRestart(t *testing.T) {
	const (
		maxLag      = 1000
		beforeAOF   = 2_000 // events counted into the AOF rewrite's snapshot
		afterAOF    = 6_000 // events read after it: the counter Redis loses
		undelivered = 300   // posted while no processor runs
	)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// scripts/run.sh's Redis: AOF, fsync every second, and Redis's default RDB preamble
	// in a rewritten AOF.
	p := startPipeline(ctx, t, setup{
		processors: 1,
		redis:      []redistest.Option{redistest.Args("--appendonly", "yes", "--appendfsync", "everysec")},
		ingestEnv:  []string{fmt.Sprintf("MAX_LAG=%d", maxLag), "BACKPRESSURE_INTERVAL=50ms"},
	})
	group := p.keys.Gen(1).Group()
	src := workload.NewSource(11, "lag-", users, products)
	exp := workload.NewExpected()
	poster := p.poster(exp)
	postAndDrain := func(n int) {
		t.Helper()
		if err := postAll(ctx, poster, src.Batches(n, batchMin, batchMax), clients, nil).wait(); err != nil {
			t.Fatal(err)
		}
		if _, err := p.query.WaitDrained(ctx); err != nil {
			t.Fatal(err)
		}
	}
	postAndDrain(beforeAOF)
	// Redis rewrites the AOF by itself once it has doubled; the test asks for it.
	p.redis.RewriteAOF()
	postAndDrain(afterAOF)

	// Everything stops cleanly: the services, then Redis (SIGTERM flushes the AOF).
	procs := append([]*proctest.Process{p.ingest, p.queryapi}, p.procs...)
	if err := proctest.Stop(proctest.StopGrace, procs...); err != nil {
		t.Fatal(err)
	}
	p.redis.Shutdown()
	p.redis.Restart()
	rdb := p.redis.Client()
	if g := rawGroup(ctx, t, rdb, p.keys.Stream(), group); g["pending"] != int64(0) || !redisLagExceeds(g["lag"], maxLag) {
		// A Redis that keeps the counter: the checks below still hold.
		t.Logf("Redis reports %v after the restart; this Redis does not lose the counter", g)
	} else {
		t.Logf("Redis reports, with every entry delivered and acked: %v", g)
	}

	// Ingest starts, with MAX_LAG below the lag Redis reports, and is ready: it accepts.
	ing, err := p.startIngest()
	if err != nil {
		o, a, perr := poster.Try(ctx, src.Batch(1), false)
		t.Fatalf("ingest after the Redis restart: %v; a POST got %v %v (%v)", err, o, a, perr)
	}
	p.ingest = ing
	qaddr, err := proctest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	p.queryAddr = qaddr
	if p.queryapi, err = p.fleet.Start(ctx, "queryapi-1", "queryapi", qaddr, p.envWith("QUERY_ADDR="+qaddr)...); err != nil {
		t.Fatal(err)
	}
	p.query = workload.NewQuery(p.client, "http://"+qaddr)
	distinct := int64(beforeAOF + afterAOF)
	checkLag(ctx, t, p, group, distinct, 0, "every entry delivered")

	// No processor runs: what is posted now is undelivered, and the lag counts it exactly.
	for _, b := range src.Batches(undelivered, batchMin, batchMin) {
		o, a, err := poster.Try(ctx, b, false)
		if err != nil {
			t.Fatal(err)
		}
		if o != workload.Accepted {
			t.Fatalf("POST of %d events with %d undelivered entries and MAX_LAG %d: %v %v, want 202", len(b), undelivered, maxLag, o, a)
		}
	}
	checkLag(ctx, t, p, group, distinct+undelivered, undelivered, "no processor running")

	// A processor starts, catches up, and the totals are exact.
	proc, err := p.startProcessor("proc-a-1")
	if err != nil {
		t.Fatal(err)
	}
	p.procs = []*proctest.Process{proc}
	p.check(verdict{scenario: "g. Redis restart: lag from the AOF", src: src, exp: exp, poster: poster})
	checkLag(ctx, t, p, group, distinct+undelivered, 0, "after the processor caught up")
}

// rawGroup returns XINFO GROUPS's fields of group as Redis sends them (RESP3, the
// test client's protocol), nil values included.
func rawGroup(ctx context.Context, t *testing.T, rdb *redis.Client, stream, group string) map[any]any {
	t.Helper()
	v, err := rdb.Do(ctx, "XINFO", "GROUPS", stream).Slice()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range v {
		if m, ok := g.(map[any]any); ok && m["name"] == group {
			return m
		}
	}
	t.Fatalf("no group %s in %v", group, v)
	return nil
}

func redisLagExceeds(v any, n int64) bool {
	lag, ok := v.(int64)
	return ok && lag > n
}

// checkLag checks what /v1/pipeline, queryapi's consumer_group_lag and ingest's
// /readyz say about group: the stream holds length entries, lag of them undelivered.
func checkLag(ctx context.Context, t *testing.T, p *pipeline, group string, length, lag int64, when string) {
	t.Helper()
	pl, err := p.query.Pipeline(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if pl.Length != length || len(pl.Groups) != 1 || pl.Groups[0].Name != group || pl.Groups[0].Lag != lag || pl.Groups[0].Pending != 0 {
		t.Errorf("%s: /v1/pipeline says %+v, want length %d and group %s with lag %d, pending 0", when, pl, length, group, lag)
	}
	series := fmt.Sprintf("consumer_group_lag{group=%q}", group)
	metricstest.Scrape(t, "http://"+p.queryAddr+"/metrics").Check(t, map[string]float64{series: float64(lag)})
	resp, err := p.client.Get("http://" + p.ingestAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("%s: ingest /readyz %d, want 200 (lag %d, MAX_LAG above it)", when, resp.StatusCode, lag)
	}
}
