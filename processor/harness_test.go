package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/aggregate"
	"github.com/clickstream/pipeline/internal/lag"
	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/clickstream/pipeline/internal/testlog"
	"github.com/redis/go-redis/v9"
)

// pipeline is one test's view of Redis: its own namespace on the test's server.
type pipeline struct {
	rs   *redistest.Server
	rdb  *redis.Client
	ns   string
	keys events.Keys
	gen  events.GenKeys
}

func newPipeline(t *testing.T, rs *redistest.Server) *pipeline {
	ns := redistest.Namespace(t)
	keys := events.NewKeys(ns)
	return &pipeline{rs: rs, rdb: rs.Client(), ns: ns, keys: keys, gen: keys.Gen(1)}
}

// startProcessor runs the whole processor (runWith) as consumer name, on a listener
// of its own. stop cancels its context (what SIGTERM does) and returns runWith's
// result; it is called at the end of the test if the test did not.
func (p *pipeline) startProcessor(t *testing.T, name string, env map[string]string) (stop func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return p.startProcessorOn(t, name, env, ln)
}

// startProcessorOn is startProcessor serving its HTTP endpoints on ln.
func (p *pipeline) startProcessorOn(t *testing.T, name string, env map[string]string, ln net.Listener) (stop func() error) {
	t.Helper()
	vars := map[string]string{
		"REDIS_URL":       p.rs.URL(),
		"REDIS_NAMESPACE": p.ns,
		"CONSUMER_NAME":   name,
		"READ_BLOCK":      "100ms",
	}
	for k, v := range env {
		vars[k] = v
	}
	logs := &testlog.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runWith(ctx, func(k string) string { return vars[k] }, logs, ln) }()
	var once sync.Once
	var result error
	stop = func() error {
		once.Do(func() {
			cancel()
			result = <-done
		})
		return result
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("processor %s: runWith returned %v after its context was cancelled, want nil", name, err)
		}
		if t.Failed() {
			t.Logf("processor %s log:\n%s", name, logs.String())
		}
	})
	return stop
}

// randomEvents returns n events of every type spread over users and products.
func randomEvents(seed uint64, n, users, products int) []events.Event {
	r := rand.New(rand.NewPCG(seed, 42))
	evs := make([]events.Event, n)
	for i := range evs {
		ev := events.Event{
			UserID:    "u" + strconv.Itoa(r.IntN(users)),
			ProductID: "p" + strconv.Itoa(r.IntN(products)),
		}
		switch x := r.IntN(10); {
		case x < 5:
			ev.Type = events.Click
		case x < 8:
			ev.Type = events.PageView
		default:
			ev.Type = events.Dwell
			ev.DurationMs = 1 + r.Int64N(events.MaxDurationMs)
		}
		evs[i] = ev
	}
	return evs
}

// xadd appends events to the stream the way ingest writes them and returns their ids.
func (p *pipeline) xadd(t *testing.T, evs []events.Event) []string {
	t.Helper()
	ids, err := p.tryXadd(evs)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// tryXadd is xadd for goroutines other than the test's.
func (p *pipeline) tryXadd(evs []events.Event) ([]string, error) {
	ids := make([]string, 0, len(evs))
	for start := 0; start < len(evs); start += 1000 {
		cmds := make([]*redis.StringCmd, 0, 1000)
		pipe := p.rdb.Pipeline()
		for i := start; i < min(start+1000, len(evs)); i++ {
			cmds = append(cmds, pipe.XAdd(context.Background(), &redis.XAddArgs{Stream: p.keys.Stream(), Values: evs[i].AppendFields(nil)}))
		}
		if _, err := pipe.Exec(context.Background()); err != nil {
			return ids, fmt.Errorf("XADD: %w", err)
		}
		for _, c := range cmds {
			ids = append(ids, c.Val())
		}
	}
	return ids, nil
}

// xaddRaw appends an entry with arbitrary fields (a poison entry).
func (p *pipeline) xaddRaw(t *testing.T, kv ...any) string {
	t.Helper()
	id, err := p.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: p.keys.Stream(), Values: kv}).Result()
	if err != nil {
		t.Fatalf("XADD %v: %v", kv, err)
	}
	return id
}

func (p *pipeline) createGroup(t *testing.T) {
	t.Helper()
	if err := p.rdb.XGroupCreateMkStream(context.Background(), p.keys.Stream(), p.gen.Group(), "0").Err(); err != nil {
		t.Fatalf("XGROUP CREATE: %v", err)
	}
}

// readGroup reads up to count new entries as consumer, the way a processor does.
func (p *pipeline) readGroup(t *testing.T, consumer string, count int64) []redis.XMessage {
	t.Helper()
	res, err := p.rdb.XReadGroup(context.Background(), &redis.XReadGroupArgs{
		Group: p.gen.Group(), Consumer: consumer, Streams: []string{p.keys.Stream(), ">"}, Count: count, Block: -1,
	}).Result()
	if err != nil {
		t.Fatalf("XREADGROUP as %s: %v", consumer, err)
	}
	return res[0].Messages
}

// pendingFor is the number of entries pending in the group; consumer "" means all.
func (p *pipeline) pendingFor(t *testing.T, consumer string) int {
	t.Helper()
	ps, err := p.rdb.XPendingExt(context.Background(), &redis.XPendingExtArgs{
		Stream: p.keys.Stream(), Group: p.gen.Group(), Start: "-", End: "+", Count: 1 << 20, Consumer: consumer,
	}).Result()
	if err != nil {
		t.Fatalf("XPENDING: %v", err)
	}
	return len(ps)
}

// waitDrained polls, a bounded number of times, until the group has been delivered
// every entry and holds none pending.
func (p *pipeline) waitDrained(t *testing.T) {
	t.Helper()
	var last lag.Group
	var lastLag int64
	for range 2400 { // 2400 × 25ms: generous under -race on a busy machine
		s, groups, err := lag.Read(context.Background(), p.rdb, p.keys.Stream())
		if err != nil {
			t.Fatalf("XINFO: %v", err)
		}
		for _, g := range groups {
			if g.Name == p.gen.Group() {
				last, lastLag = g, lag.Of(s, g)
			}
		}
		if last.Name != "" && last.Pending == 0 && lastLag == 0 {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("group never drained: %+v, lag %d", last, lastLag)
}

// expected is what the aggregates must hold after evs were applied once each.
type expected struct {
	hashes map[string]map[string]string // key -> field -> value, as HGETALL answers
	top    map[string]float64           // product id -> clicks
}

func expect(gen events.GenKeys, evs []events.Event) expected {
	sums := map[string]map[string]int64{}
	add := func(key, field string, n int64) {
		if sums[key] == nil {
			sums[key] = map[string]int64{}
		}
		sums[key][field] += n
	}
	top := map[string]float64{}
	for _, ev := range evs {
		for j, key := range []string{gen.User(ev.UserID), gen.Product(ev.ProductID)} {
			switch ev.Type {
			case events.Click:
				if j == 0 { // a product's clicks are in the ranking only
					add(key, events.FieldClicks, 1)
				}
			case events.PageView:
				add(key, events.FieldPageViews, 1)
			case events.Dwell:
				add(key, events.FieldDwellMs, ev.DurationMs)
				add(key, events.FieldDwellCount, 1)
			}
		}
		if ev.Type == events.Click {
			top[ev.ProductID]++
		}
	}
	e := expected{hashes: map[string]map[string]string{}, top: top}
	for key, fields := range sums {
		e.hashes[key] = map[string]string{}
		for f, n := range fields {
			e.hashes[key][f] = strconv.FormatInt(n, 10)
		}
	}
	return e
}

// assertTotals checks that the generation's aggregates are exactly those of evs
// applied once each: every user and product hash, the top-products ranking, and no
// other key.
func (p *pipeline) assertTotals(t *testing.T, evs []events.Event) {
	t.Helper()
	ctx := context.Background()
	want := expect(p.gen, evs)
	for key, fields := range want.hashes {
		got, err := p.rdb.HGetAll(ctx, key).Result()
		if err != nil {
			t.Fatalf("HGETALL %s: %v", key, err)
		}
		if !reflect.DeepEqual(got, fields) {
			t.Errorf("%s = %v, want %v", key, got, fields)
		}
	}
	zs, err := p.rdb.ZRangeWithScores(ctx, p.gen.TopProducts(), 0, -1).Result()
	if err != nil {
		t.Fatalf("ZRANGE %s: %v", p.gen.TopProducts(), err)
	}
	gotTop := map[string]float64{}
	for _, z := range zs {
		gotTop[z.Member.(string)] = z.Score
	}
	if !reflect.DeepEqual(gotTop, want.top) {
		t.Errorf("%s = %v, want %v", p.gen.TopProducts(), gotTop, want.top)
	}
	// No all-time key beyond those: nothing was counted for an entry that should not count.
	var all []string
	for _, pattern := range []string{p.gen.UserPrefix() + "*", p.gen.ProductPrefix() + "*", p.gen.TopProducts()} {
		all = append(all, scanKeys(t, p.rdb, pattern)...)
	}
	for _, k := range all {
		if _, ok := want.hashes[k]; !ok && k != p.gen.TopProducts() {
			t.Errorf("unexpected aggregate key %s", k)
		}
	}
	if wantKeys := len(want.hashes) + min(len(want.top), 1); len(all) != wantKeys {
		t.Errorf("%d aggregate keys, want %d", len(all), wantKeys)
	}
	p.assertBuckets(t, evs)
}

// assertBuckets checks the time buckets against the events, which are all recent: at
// every resolution, the global buckets add up to the events' totals, and each
// product's hour and day buckets to its totals; the users of all day buckets together
// are the events' distinct users (exact: the tests use few users).
func (p *pipeline) assertBuckets(t *testing.T, evs []events.Event) {
	t.Helper()
	ctx := context.Background()
	var total aggregate.Totals
	products := map[string]*aggregate.Totals{}
	users := map[string]bool{}
	for i := range evs {
		total.Add(&evs[i])
		if products[evs[i].ProductID] == nil {
			products[evs[i].ProductID] = &aggregate.Totals{}
		}
		products[evs[i].ProductID].Add(&evs[i])
		users[evs[i].UserID] = true
	}
	wantGlobal := map[string]int64{events.FieldEvents: int64(len(evs)), events.FieldClicks: total.Clicks,
		events.FieldPageViews: total.PageViews, events.FieldDwellMs: total.DwellMs, events.FieldDwellCount: total.DwellCount}
	for _, r := range events.Resolutions {
		// Bucket keys are named by resolution and start; any bucket of r serves to find
		// the prefix of all of them.
		code := strings.TrimSuffix(strings.TrimPrefix(p.gen.Stats(events.Bucket{Res: r}), p.gen.Prefix()+"s:"), ":0")
		got := map[string]int64{}
		for _, k := range scanKeys(t, p.rdb, p.gen.Prefix()+"s:"+code+":*") {
			for f, v := range p.rdb.HGetAll(ctx, k).Val() {
				n, _ := strconv.ParseInt(v, 10, 64)
				got[f] += n
			}
		}
		for f, n := range wantGlobal {
			if got[f] != n {
				t.Errorf("%s buckets: %s adds up to %d, want %d", r, f, got[f], n)
			}
		}
		if r == events.Minute {
			continue // per product: hours and days only
		}
		gotProducts := map[string]*aggregate.Totals{}
		row := func(id string) *aggregate.Totals {
			if gotProducts[id] == nil {
				gotProducts[id] = &aggregate.Totals{}
			}
			return gotProducts[id]
		}
		for _, kind := range []string{"tc", "tv"} {
			for _, k := range scanKeys(t, p.rdb, p.gen.Prefix()+kind+":"+code+":*") {
				for _, z := range p.rdb.ZRangeWithScores(ctx, k, 0, -1).Val() {
					if kind == "tc" {
						row(z.Member.(string)).Clicks += int64(z.Score)
					} else {
						row(z.Member.(string)).PageViews += int64(z.Score)
					}
				}
			}
		}
		for _, k := range scanKeys(t, p.rdb, p.gen.Prefix()+"sp:"+code+":*") {
			id := k[strings.LastIndexByte(k, ':')+1:]
			got := aggregate.ParseTotals(p.rdb.HMGet(ctx, k, aggregate.Fields...).Val())
			row(id).DwellMs += got.DwellMs
			row(id).DwellCount += got.DwellCount
		}
		for id, want := range products {
			if got := gotProducts[id]; got == nil || *got != *want {
				t.Errorf("product %s's %s buckets add up to %+v, want %+v", id, r, got, *want)
			}
		}
	}
	if days := scanKeys(t, p.rdb, p.gen.Prefix()+"uu:d:*"); len(users) > 0 {
		if n, err := p.rdb.PFCount(ctx, days...).Result(); err != nil || n != int64(len(users)) {
			t.Errorf("unique users over the day buckets = %d, %v; want %d", n, err, len(users))
		}
	}
}

// scanKeys lists the keys matching pattern (a test may scan; the services never do).
func scanKeys(t *testing.T, rdb *redis.Client, pattern string) []string {
	t.Helper()
	var keys []string
	iter := rdb.Scan(context.Background(), 0, pattern, 1000).Iterator()
	for iter.Next(context.Background()) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatalf("SCAN %s: %v", pattern, err)
	}
	return keys
}
