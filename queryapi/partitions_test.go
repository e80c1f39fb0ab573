package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/aggregate"
	"github.com/clickstream/pipeline/internal/partitions"
	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/clickstream/pipeline/internal/testlog"
	"github.com/redis/go-redis/v9"
)

// topAcross is exact: on random rankings of five partitions, with a skewed head, long
// tails and ties, its top k equals the top k of the summed rankings, ordered as
// ZREVRANGE orders one ranking (clicks descending, ties by id descending).
func TestTopAcrossExact(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(3, 4))
	for round := range 60 {
		l := events.NewLayout(fmt.Sprintf("%s-%d", redistest.Namespace(t), round), 5)
		products := 5 + rng.IntN(60)
		sums := map[string]int64{}
		pipe := rdb.Pipeline()
		for _, k := range l.Partitions() {
			for i := range products {
				if rng.IntN(3) == 0 {
					continue // not every product in every partition
				}
				id := fmt.Sprintf("p%02d", i)
				var c int64
				switch round % 3 {
				case 0: // skewed
					c = int64(1 + rng.IntN(1+1000/(i+1)))
				case 1: // flat, many ties
					c = int64(1 + rng.IntN(4))
				default: // one partition's head is another's tail
					c = int64(1 + rng.IntN(50*(1+(i+k.Partition())%5)))
				}
				pipe.ZAdd(ctx, k.Gen(1).TopProducts(), redis.Z{Member: id, Score: float64(c)})
				sums[id] += c
			}
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
		r := partitions.NewReader(rdb, l)
		for _, k := range []int64{1, 3, 10, 100} {
			got, err := topAcross(ctx, r, k)
			if err != nil {
				t.Fatal(err)
			}
			want := ranked(sums, nil, k)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round %d, k=%d: topAcross = %v, want %v", round, k, got, want)
			}
		}
	}
}

// startAPIAt runs queryapi on the Redis (or cluster) at url, for namespace ns.
func startAPIAt(t *testing.T, url, ns string, env ...string) *api {
	t.Helper()
	vars := map[string]string{"REDIS_URL": url, "REDIS_NAMESPACE": ns}
	for i := 0; i+1 < len(env); i += 2 {
		vars[env[i]] = env[i+1]
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	logs := &testlog.Buffer{}
	done := make(chan error, 1)
	go func() {
		err := runWith(ctx, func(k string) string { return vars[k] }, logs, ln)
		ln.Close()
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("queryapi returned %v", err)
		}
		if t.Failed() {
			t.Logf("queryapi log:\n%s", logs.String())
		}
	})
	return &api{t: t, base: "http://" + ln.Addr().String(), ns: ns}
}

// applyTo counts evs into generation 1 of their users' partitions of l, as the
// processors would at now.
func applyTo(t *testing.T, rdb redis.Scripter, l events.Layout, now time.Time, evs []timed) {
	t.Helper()
	byPart := make([][]timed, l.Count())
	for _, ev := range evs {
		p := l.PartitionOf(ev.UserID)
		byPart[p] = append(byPart[p], ev)
	}
	for p, part := range byPart {
		if len(part) == 0 {
			continue
		}
		in := aggregate.NewIncrements(l.Partition(p).Gen(1), events.DefaultRetention)
		in.Reset(now.UnixMilli())
		for i := range part {
			in.Add(&part[i].Event, part[i].at)
		}
		if err := applyIncrements.Run(context.Background(), rdb, in.Keys(), in.AppendArgs(nil, 1)...).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// mixedEvents returns n events of users users (few enough that HyperLogLogs count them
// exactly) and a skewed set of products, at times over the last 30 hours.
func mixedEvents(seed uint64, n, users, products int, now time.Time) []timed {
	rng := rand.New(rand.NewPCG(seed, 9))
	evs := make([]timed, n)
	for i := range evs {
		ev := events.Event{UserID: "u" + strconv.Itoa(rng.IntN(users)), ProductID: fmt.Sprintf("p%02d", int(float64(products)*rng.Float64()*rng.Float64()))}
		switch x := rng.IntN(10); {
		case x < 5:
			ev.Type = events.Click
		case x < 8:
			ev.Type = events.PageView
		default:
			ev.Type = events.Dwell
			ev.DurationMs = 1 + rng.Int64N(60_000)
		}
		at := now.Add(-time.Duration(rng.Int64N(int64(30 * time.Hour))))
		if i%10 == 0 {
			at = now.Add(-time.Duration(rng.Int64N(int64(20 * time.Minute)))) // some active users
		}
		evs[i] = timed{ev, at.UnixMilli()}
	}
	return evs
}

// samePaths are the reads whose answers must not depend on the partition count.
func samePaths(users, products int) []string {
	paths := []string{
		"/v1/top-products?limit=1", "/v1/top-products?limit=5", "/v1/top-products?limit=10", "/v1/top-products?limit=100",
		"/v1/stats/summary?range=24h", "/v1/stats/summary?range=7d", "/v1/stats/summary?range=1h",
		"/v1/stats/top-products?range=24h&limit=100", "/v1/stats/top-products?range=7d&by=page_views&limit=3",
		"/v1/stats/active?window=5m", "/v1/stats/active?window=60m",
	}
	for _, m := range seriesMetrics {
		for _, iv := range []string{"minute", "hour", "day"} {
			paths = append(paths, "/v1/stats/timeseries?range=24h&metric="+m+"&interval="+iv)
		}
	}
	for _, m := range productMetrics {
		paths = append(paths, "/v1/stats/timeseries?range=7d&interval=hour&product=p01&metric="+m)
	}
	for u := range users {
		paths = append(paths, "/v1/users/u"+strconv.Itoa(u))
	}
	for p := range products {
		paths = append(paths, fmt.Sprintf("/v1/products/p%02d", p))
	}
	return paths
}

// Partitioned, the same events read the same: every user's and product's totals, the
// all-time ranking at every limit (exact, though each partition holds partial sums), the
// statistics (summary, unique users added up over partitions whose users are disjoint,
// every series, the ranking of a range, active users), on one Redis with four
// partitions and on a cluster of three masters with six, as on one Redis with one.
func TestPartitionedAnswersEqualOnePartition(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	c := redistest.StartCluster(t, 3)
	now := time.Now()
	const users, products = 40, 30
	evs := mixedEvents(5, 3000, users, products, now)

	one := redistest.Namespace(t) + "-one"
	applyTo(t, s.Client(), events.NewLayout(one, 1), now, evs)
	want := startAPIAt(t, s.URL(), one)

	four := redistest.Namespace(t) + "-four"
	applyTo(t, s.Client(), events.NewLayout(four, 4), now, evs)
	six := redistest.Namespace(t) + "-six"
	applyTo(t, c.Client(), events.NewLayout(six, 6), now, evs)
	paths := samePaths(users, products)
	// The daily reports (JSON and CSV) and a summary as CSV, of fixed days.
	today := now.UTC().Truncate(24 * time.Hour)
	for _, day := range []time.Time{today, today.Add(-24 * time.Hour)} {
		d := day.Format(time.DateOnly)
		paths = append(paths, "/v1/reports/daily?date="+d, "/v1/reports/daily?format=csv&date="+d,
			fmt.Sprintf("/v1/stats/summary?format=csv&from=%d&to=%d", day.UnixMilli(), day.Add(24*time.Hour).UnixMilli()))
	}
	wantLive := openSnapshots(want)
	for _, got := range []*api{
		startAPIAt(t, s.URL(), four, "STREAM_PARTITIONS", "4"),
		startAPIAt(t, c.URL(), six, "STREAM_PARTITIONS", "6"),
	} {
		for _, path := range paths {
			w, g := want.get(path), got.get(path)
			if w.status != 200 || g.status != w.status || normal(g.body) != normal(w.body) {
				t.Errorf("GET %s (%s):\n got  %d %s\n want %d %s", path, got.ns, g.status, g.body, w.status, w.body)
			}
		}
		// /v1/live's statistics: every range and bucket in progress, summed over the
		// partitions. Its ranges end with the current minute, so two snapshots of the
		// same minute are compared.
		gotLive := openSnapshots(got)
		for try := 0; ; try++ {
			w, g := wantLive(), gotLive()
			if w.Time/60_000 != g.Time/60_000 && try < 5 {
				continue
			}
			for name, ws := range w.Ranges {
				if gs := g.Ranges[name]; !reflect.DeepEqual(gs, ws) {
					t.Errorf("/v1/live (%s) range %s:\n got  %+v\n want %+v", got.ns, name, gs, ws)
				}
			}
			for name, ws := range w.Current {
				if gs := g.Current[name]; !reflect.DeepEqual(gs, ws) {
					t.Errorf("/v1/live (%s) current %s:\n got  %+v\n want %+v", got.ns, name, gs, ws)
				}
			}
			if g.Pipeline.Length != 0 || len(g.Pipeline.Partitions) != g.Pipeline.Partitions[len(g.Pipeline.Partitions)-1].Partition+1 {
				t.Errorf("/v1/live (%s) pipeline %+v: want its partitions, with no events in their streams", got.ns, g.Pipeline)
			}
			break
		}
	}
}

// openSnapshots opens /v1/live on a and returns a function that reads its next
// snapshot.
func openSnapshots(a *api) func() LiveSnapshot {
	st, r := a.openLive()
	if st == nil {
		a.t.Fatalf("GET /v1/live: %d %s", r.status, r.body)
	}
	return func() LiveSnapshot {
		_, snap := st.snapshot()
		return snap
	}
}

// normal drops the bounds of a named range, which end at the end of the current
// minute: two reads a minute apart may differ there, and only there.
func normal(body string) string {
	var m map[string]any
	if json.Unmarshal([]byte(body), &m) != nil {
		return body
	}
	delete(m, "from")
	delete(m, "to")
	b, _ := json.Marshal(m)
	return string(b)
}

// /v1/pipeline with several partitions keeps its top-level groups list, one entry per
// partition's group with its stream and partition, adds up lengths and dead letters,
// and has a partitions section.
func TestPipelinePartitions(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	ns := redistest.Namespace(t)
	l := events.NewLayout(ns, 3)
	rdb := s.Client()
	ctx := context.Background()
	for p, k := range l.Partitions() {
		for range p + 1 {
			rdb.XAdd(ctx, &redis.XAddArgs{Stream: k.Stream(), Values: []string{"u", "u", "p", "p", "k", "c"}})
		}
		rdb.XGroupCreate(ctx, k.Stream(), k.Gen(1).Group(), "0")
	}
	rdb.XAdd(ctx, &redis.XAddArgs{Stream: l.Partition(1).DeadLetter(), Values: []string{"x", "y"}})
	a := startAPIAt(t, s.URL(), ns, "STREAM_PARTITIONS", "3")
	var got Pipeline
	a.getJSON("/v1/pipeline", &got)
	if got.Length != 6 || got.DeadLetter.Length != 1 || got.Generation != 1 || len(got.Groups) != 3 || len(got.Partitions) != 3 {
		t.Fatalf("pipeline %+v: want length 6, 1 dead letter, generation 1, 3 groups, 3 partitions", got)
	}
	if got.Stream != "{"+ns+":p*of3:*}:events" {
		t.Errorf("stream %q", got.Stream)
	}
	for p, g := range got.Groups {
		if g.Name != "aggregator-g1" || g.Partition == nil || *g.Partition != p || g.Stream != l.Partition(p).Stream() || g.Lag != int64(p+1) {
			t.Errorf("group %d: %+v, want aggregator-g1 of partition %d (%s), lag %d", p, g, p, l.Partition(p).Stream(), p+1)
		}
	}
	for p, part := range got.Partitions {
		if part.Partition != p || part.Stream != l.Partition(p).Stream() || part.Length != int64(p+1) || part.Lag != int64(p+1) ||
			part.DeadLetter.Stream != l.Partition(p).DeadLetter() {
			t.Errorf("partition %d: %+v", p, part)
		}
	}
	if r := a.get("/v1/pipeline"); !strings.Contains(r.body, `"partitions":[`) {
		t.Errorf("no partitions section in %s", r.body)
	}
}

// /v1/rebuild with several partitions sums their rebuilds up, least advanced state
// first, and lists each.
func TestRebuildStatusPartitions(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	ns := redistest.Namespace(t)
	l := events.NewLayout(ns, 3)
	rdb := s.Client()
	ctx := context.Background()
	p0, p1 := l.Partition(0), l.Partition(1)
	rdb.HSet(ctx, p0.RebuildState(), events.RebuildFieldState, events.RebuildStateDone, events.RebuildFieldTarget, 2,
		events.RebuildFieldApplied, 40, events.RebuildFieldStarted, "2026-01-02T03:04:05Z", events.RebuildFieldUpdated, "2026-01-02T03:04:09Z")
	rdb.Set(ctx, p0.Generation(), 2, 0)
	rdb.HSet(ctx, p1.RebuildState(), events.RebuildFieldState, events.RebuildStateBuilding, events.RebuildFieldTarget, 2,
		events.RebuildFieldApplied, 10, events.RebuildFieldETA, 5, events.RebuildFieldRate, 7, events.RebuildFieldStarted, "2026-01-02T03:04:06Z")
	rdb.Set(ctx, p1.RebuildLock(), "me", time.Minute)
	a := startAPIAt(t, s.URL(), ns, "STREAM_PARTITIONS", "3")
	var got RebuildStatus
	a.getJSON("/v1/rebuild", &got)
	if got.State != events.RebuildStateBuilding || got.Generation != 2 || got.CurrentGeneration != 1 || got.Applied != 50 ||
		got.Rate != 7 || got.ETASeconds == nil || *got.ETASeconds != 5 || got.StartedAt != "2026-01-02T03:04:05Z" || len(got.Partitions) != 3 {
		t.Fatalf("/v1/rebuild = %+v", got)
	}
	for p, want := range []string{events.RebuildStateDone, events.RebuildStateBuilding, "idle"} {
		if st := got.Partitions[p]; st.State != want || st.Partition == nil || *st.Partition != p {
			t.Errorf("partition %d: %+v, want %s", p, st, want)
		}
	}
}
