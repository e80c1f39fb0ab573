package aggregate

import (
	"context"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/redistest"
)

// The time dimension, written by the shared Lua block: each event lands in the minute,
// hour and day buckets of its own time (not the time it is applied), with its users in
// the buckets' HyperLogLogs and its product in the per-product hour and day buckets;
// buckets whose retention has passed are skipped one resolution at a time (a 29-day-old
// event skips its minute and its per-product hour but not the rest); every bucket key
// expires at its end plus its retention; the active users are those seen within the
// hour, by their latest time. Sums over two batches add up.
func TestTimeBuckets(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	rdb := rs.Client()
	ctx := context.Background()
	gen := events.NewKeys(redistest.Namespace(t)).Gen(1)
	script := NewScript("#!lua\napply_increments(1)\nreturn 1\n")
	at := func(s string) int64 {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm.UnixMilli()
	}
	now := at("2026-11-30T12:30:00Z")
	keep := events.DefaultRetention
	in := NewIncrements(gen, keep)
	type ev struct {
		e  events.Event
		at string
	}
	apply := func(evs ...ev) {
		t.Helper()
		in.Reset(now)
		for i := range evs {
			in.Add(&evs[i].e, at(evs[i].at))
		}
		if err := script.Run(ctx, rdb, in.Keys(), in.AppendArgs(nil, 1)...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	apply(
		ev{events.Event{UserID: "u1", ProductID: "p1", Type: events.Click}, "2026-11-30T12:10:05Z"},
		ev{events.Event{UserID: "u1", ProductID: "p1", Type: events.PageView}, "2026-11-30T12:10:30Z"},
		ev{events.Event{UserID: "u3", ProductID: "p1", Type: events.Click}, "2026-11-30T11:59:59Z"},
	)
	apply(
		ev{events.Event{UserID: "u2", ProductID: "p2", Type: events.Dwell, DurationMs: 1000}, "2026-11-30T12:11:00Z"},
		ev{events.Event{UserID: "u1", ProductID: "p2", Type: events.Click}, "2026-11-29T23:00:00Z"},
		ev{events.Event{UserID: "u4", ProductID: "p3", Type: events.PageView}, "2026-11-01T08:15:00Z"}, // 29 days ago
	)

	b := func(r events.Resolution, s string) events.Bucket { return events.Bucket{Res: r, Start: at(s)} }
	exp := func(bk events.Bucket, keep time.Duration) string {
		return strconv.FormatInt(events.ExpireAt(bk, keep), 10)
	}
	m1210, m1211, m1159, m2300 := b(events.Minute, "2026-11-30T12:10:00Z"), b(events.Minute, "2026-11-30T12:11:00Z"),
		b(events.Minute, "2026-11-30T11:59:00Z"), b(events.Minute, "2026-11-29T23:00:00Z")
	h12, h11, h23, hLate := b(events.Hour, "2026-11-30T12:00:00Z"), b(events.Hour, "2026-11-30T11:00:00Z"),
		b(events.Hour, "2026-11-29T23:00:00Z"), b(events.Hour, "2026-11-01T08:00:00Z")
	dToday, dYday, dLate := b(events.Day, "2026-11-30T00:00:00Z"), b(events.Day, "2026-11-29T00:00:00Z"), b(events.Day, "2026-11-01T00:00:00Z")
	kv := func(pairs ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i+1 < len(pairs); i += 2 {
			m[pairs[i]] = pairs[i+1]
		}
		return m
	}
	stats := func(bk events.Bucket, keep time.Duration, pairs ...string) map[string]string {
		return kv(append(pairs, "(expires)", exp(bk, keep))...)
	}
	uniq := func(bk events.Bucket, keep time.Duration, n int) map[string]string {
		return kv("pfcount", strconv.Itoa(n), "(expires)", exp(bk, keep))
	}
	want := map[string]map[string]string{
		// all-time counters, as before
		gen.User("u1"): kv("clicks", "2", "page_views", "1"), gen.User("u2"): kv("dwell_ms", "1000", "dwell_count", "1"),
		gen.User("u3"): kv("clicks", "1"), gen.User("u4"): kv("page_views", "1"),
		gen.Product("p1"): kv("page_views", "1"), gen.Product("p2"): kv("dwell_ms", "1000", "dwell_count", "1"),
		gen.Product("p3"): kv("page_views", "1"), gen.TopProducts(): kv("p1", "2", "p2", "1"),

		gen.Stats(m1210):  stats(m1210, keep.Minute, "events", "2", "clicks", "1", "page_views", "1"),
		gen.Stats(m1211):  stats(m1211, keep.Minute, "events", "1", "dwell_ms", "1000", "dwell_count", "1"),
		gen.Stats(m1159):  stats(m1159, keep.Minute, "events", "1", "clicks", "1"),
		gen.Stats(m2300):  stats(m2300, keep.Minute, "events", "1", "clicks", "1"),
		gen.Stats(h12):    stats(h12, keep.Hour, "events", "3", "clicks", "1", "page_views", "1", "dwell_ms", "1000", "dwell_count", "1"),
		gen.Stats(h11):    stats(h11, keep.Hour, "events", "1", "clicks", "1"),
		gen.Stats(h23):    stats(h23, keep.Hour, "events", "1", "clicks", "1"),
		gen.Stats(hLate):  stats(hLate, keep.Hour, "events", "1", "page_views", "1"),
		gen.Stats(dToday): stats(dToday, keep.Day, "events", "4", "clicks", "2", "page_views", "1", "dwell_ms", "1000", "dwell_count", "1"),
		gen.Stats(dYday):  stats(dYday, keep.Day, "events", "1", "clicks", "1"),
		gen.Stats(dLate):  stats(dLate, keep.Day, "events", "1", "page_views", "1"),

		gen.Uniques(m1210): uniq(m1210, keep.Minute, 1), gen.Uniques(m1211): uniq(m1211, keep.Minute, 1),
		gen.Uniques(m1159): uniq(m1159, keep.Minute, 1), gen.Uniques(m2300): uniq(m2300, keep.Minute, 1),
		gen.Uniques(h12): uniq(h12, keep.Hour, 2), gen.Uniques(h11): uniq(h11, keep.Hour, 1),
		gen.Uniques(h23): uniq(h23, keep.Hour, 1), gen.Uniques(hLate): uniq(hLate, keep.Hour, 1),
		gen.Uniques(dToday): uniq(dToday, keep.Day, 3), gen.Uniques(dYday): uniq(dYday, keep.Day, 1),
		gen.Uniques(dLate): uniq(dLate, keep.Day, 1),

		// per product: no minute buckets; the late event's hour has passed its 14 days
		gen.TopClicks(h12):             stats(h12, keep.ProductHour, "p1", "1"),
		gen.TopViews(h12):              stats(h12, keep.ProductHour, "p1", "1"),
		gen.ProductStats(h12, "p2"):    stats(h12, keep.ProductHour, "dwell_ms", "1000", "dwell_count", "1"),
		gen.TopClicks(h11):             stats(h11, keep.ProductHour, "p1", "1"),
		gen.TopClicks(h23):             stats(h23, keep.ProductHour, "p2", "1"),
		gen.TopClicks(dToday):          stats(dToday, keep.ProductDay, "p1", "2"),
		gen.TopViews(dToday):           stats(dToday, keep.ProductDay, "p1", "1"),
		gen.ProductStats(dToday, "p2"): stats(dToday, keep.ProductDay, "dwell_ms", "1000", "dwell_count", "1"),
		gen.TopClicks(dYday):           stats(dYday, keep.ProductDay, "p2", "1"),
		gen.TopViews(dLate):            stats(dLate, keep.ProductDay, "p3", "1"),

		// seen within the hour before now, by the latest time; u1's event of yesterday
		// and u4's late one do not count
		gen.Active(): kv("u1", strconv.FormatInt(at("2026-11-30T12:10:30Z"), 10), "u2", strconv.FormatInt(at("2026-11-30T12:11:00Z"), 10),
			"u3", strconv.FormatInt(at("2026-11-30T11:59:59Z"), 10)),
	}
	got := dumpWithExpiry(t, rdb, gen.Prefix())
	for k, v := range want {
		if !reflect.DeepEqual(got[k], v) {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected key %s = %v", k, v)
		}
	}

	// A later batch trims users last seen more than an hour before it.
	now = at("2026-11-30T13:10:20Z")
	apply(ev{events.Event{UserID: "u5", ProductID: "p1", Type: events.Click}, "2026-11-30T13:10:00Z"})
	active, err := rdb.ZRange(ctx, gen.Active(), 0, -1).Result()
	if err != nil || !reflect.DeepEqual(active, []string{"u1", "u2", "u5"}) {
		t.Errorf("active users after an apply at 13:10:20 = %v, %v; want [u1 u2 u5] (u3 last seen 11:59:59 trimmed)", active, err)
	}
}
