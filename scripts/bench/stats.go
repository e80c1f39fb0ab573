package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/redis/go-redis/v9"
)

// Targets of the time-dimension issue.
const (
	targetStatsDrain = 200_000.0
	targetStatsP99   = 20 * time.Millisecond
)

// The day model, for the time dimension: a day of a shop's traffic, events in time
// order over 24 hours, from 10,000 users and 1,000 products with Zipf-distributed
// activity. It sizes the statistics buckets (the README quotes Redis memory per day of
// buckets from it) and measures the processor with every bucket written.
const (
	dayUsers    = 10_000
	dayProducts = 1_000
)

var dayUsersDraw, dayProductsDraw = zipfDraws(2, dayUsers, dayProducts)

// dayEvents returns the i-th of n events spread evenly over the 24 hours before end.
func dayEvents(n int, end time.Time) func(int) events.Event {
	start := end.Add(-24 * time.Hour).UnixMilli()
	step := float64(24*time.Hour.Milliseconds()) / float64(n)
	return func(i int) events.Event {
		j := i % drawN
		e := withType(events.Event{UserID: userID(int(dayUsersDraw[j])), ProductID: productID(int(dayProductsDraw[j]))}, i)
		e.TS = start + int64(float64(i)*step)
		return e
	}
}

// dayModel preloads a day of events with their times into the "day" namespace, and
// measures how fast one processor drains it with every statistics bucket written,
// where Redis spends its time doing it, and the memory of a day of buckets.
func (b *bench) dayModel(ctx context.Context) (float64, error) {
	keys := events.NewKeys("day")
	if err := b.preload(ctx, keys, b.o.events, dayEvents(b.o.events, time.Now())); err != nil {
		return 0, err
	}
	if err := b.rdb.ConfigResetStat(ctx).Err(); err != nil {
		return 0, err
	}
	redisCPU0 := cpuTime(b.redis.Process.Pid)
	rate, err := b.drainOnce(ctx, "day")
	if err != nil {
		return 0, err
	}
	b.logf("processor drained a day of %d events (with time buckets) at %s events/s", b.o.events, num(rate))
	cpu := cpuTime(b.redis.Process.Pid) - redisCPU0
	if err := b.redisProfile(ctx, "the day model's drain", cpu, b.o.events); err != nil {
		return 0, err
	}
	b.add(fmt.Sprintf("processor drain with time buckets: a day of %s events (%s users, %s products, Zipf, in time order over 24 h), 1 process",
		num(float64(b.o.events)), num(dayUsers), num(dayProducts)),
		fmt.Sprintf("%s events/s; Redis %.2f µs CPU per event", num(rate), float64(cpu.Microseconds())/float64(b.o.events)),
		"≥ "+num(targetStatsDrain), pass(rate >= targetStatsDrain))

	mem, n, err := b.bucketMemory(ctx, keys.Gen(1))
	if err != nil {
		return 0, err
	}
	b.logf("a day of statistics buckets: %d keys, %d bytes", n, mem)
	b.add(fmt.Sprintf("Redis memory of one day of statistics buckets (%s events, %s users, %s products)",
		num(float64(b.o.events)), num(dayUsers), num(dayProducts)),
		fmt.Sprintf("%.1f MiB in %s keys", float64(mem)/(1<<20), num(float64(n))), "", "")
	return rate, nil
}

// bucketMemory sums MEMORY USAGE over the statistics keys of a generation (a scan: the
// bench may, the services never do).
func (b *bench) bucketMemory(ctx context.Context, gen events.GenKeys) (bytes int64, keys int, err error) {
	var kinds []string
	for _, k := range []string{gen.Stats(events.Bucket{}), gen.Uniques(events.Bucket{}), gen.TopClicks(events.Bucket{}),
		gen.TopViews(events.Bucket{}), gen.ProductStats(events.Bucket{}, "x")} {
		// "{day}:g1:s:m:0" -> "{day}:g1:s:*": every bucket of that kind
		rest := strings.TrimPrefix(k, gen.Prefix())
		kinds = append(kinds, gen.Prefix()+rest[:strings.IndexByte(rest, ':')+1]+"*")
	}
	kinds = append(kinds, gen.Active())
	for _, pattern := range kinds {
		iter := b.rdb.Scan(ctx, 0, pattern, 5000).Iterator()
		pipe := b.rdb.Pipeline()
		var cmds []*redis.IntCmd
		for iter.Next(ctx) {
			cmds = append(cmds, pipe.MemoryUsage(ctx, iter.Val()))
		}
		if err := iter.Err(); err != nil {
			return 0, 0, err
		}
		if len(cmds) > 0 {
			if _, err := pipe.Exec(ctx); err != nil {
				return 0, 0, err
			}
		}
		for _, c := range cmds {
			bytes += c.Val()
		}
		keys += len(cmds)
	}
	return bytes, keys, nil
}

// statsQueries drives queryapi with statistics reads of the day model over 30 days.
func (b *bench) statsQueries(ctx context.Context) error {
	addr := freeAddr()
	p, err := b.start("queryapi-day", []string{b.dir + "/queryapi"},
		[]string{"REDIS_URL=" + b.url, "REDIS_NAMESPACE=day", "QUERY_ADDR=" + addr, "LOG_LEVEL=warn"}, "http://"+addr+"/readyz")
	if err != nil {
		return err
	}
	defer stopProc(p)
	for _, path := range []string{"/v1/stats/summary?range=30d", "/v1/stats/timeseries?metric=clicks&interval=hour&range=30d",
		"/v1/stats/top-products?range=24h&limit=10"} {
		l := httpLoad{addr: addr, conns: b.o.conns, duration: b.o.window, okStatus: http.StatusOK,
			request: func(_, _ int) []byte { return getRequest(addr, path) }}
		l.run() // warm-up
		m := newCPUMeter(p.Process.Pid, b.redis.Process.Pid, os.Getpid())
		r := l.run()
		b.logf("GET %s: %s req/s; %s", path, num(r.rps()), b.cpuSummary(m))
		if r.firstErr != nil {
			return fmt.Errorf("GET %s: %w", path, r.firstErr)
		}
		target, verdict := "", ""
		if !strings.Contains(path, "top-products") {
			target, verdict = "p99 ≤ "+ms(targetStatsP99), pass(r.pct(0.99) <= targetStatsP99)
		}
		b.add(fmt.Sprintf("GET %s, %d conns (the day model)", path, b.o.conns),
			fmt.Sprintf("%s req/s, p50 %s, p99 %s", num(r.rps()), ms(r.pct(0.5)), ms(r.pct(0.99))), target, verdict)
	}
	return nil
}
