package main

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/aggregate"
	"github.com/clickstream/pipeline/internal/generations"
	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/clickstream/pipeline/internal/testlog"
)

// pathEvents is a fixed set of events for TestEveryPathCountsTheSame: several users
// and products, all three types, repeats within and across batches, a product that
// only has clicks (it has no hash, only a place in the ranking) and one that has none
// (it is not in the ranking).
var pathEvents = []events.Event{
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
	{UserID: "u1", ProductID: "p1", Type: events.Click},
	{UserID: "u5", ProductID: "p3", Type: events.PageView},
	{UserID: "u5", ProductID: "p3", Type: events.PageView},
	{UserID: "u2", ProductID: "p2", Type: events.Click},
	{UserID: "u3", ProductID: "p4", Type: events.Click},
	{UserID: "u1", ProductID: "p2", Type: events.Dwell, DurationMs: 40},
}

// One set of events counted by every path that counts: the live apply (an Applier,
// in small batches), a rebuild's replay of the stream, `processor recount`, the
// retention fold into the checkpoint, and a rebuild from the checkpoint alone. Every
// path that writes leaves exactly the same keys with the same contents, and those are
// the events' totals; the recount's totals are the same numbers.
func TestEveryPathCountsTheSame(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	p := newPipeline(t, rs)
	ctx := context.Background()
	vars := map[string]string{"REDIS_URL": rs.URL(), "REDIS_NAMESPACE": p.ns, "BATCH_SIZE": "7"}
	getenv := func(k string) string { return vars[k] }

	p.createGroup(t)
	p.xadd(t, pathEvents[:9])
	p.xaddRaw(t, "foo", "bar") // undecodable: acked, folded and replayed, never counted
	p.xadd(t, pathEvents[9:])

	// The live apply, four entries at a time.
	a := aggregate.NewApplier(p.rdb, p.keys, p.gen, "live", events.DefaultRetention)
	for read := 0; read < len(pathEvents)+1; {
		batch := aggregate.Decode(p.readGroup(t, "live", 4))
		if _, _, err := a.Apply(ctx, batch); err != nil {
			t.Fatal(err)
		}
		read += len(batch)
	}
	p.assertTotals(t, pathEvents)
	live := snapshot(t, p.rdb, p.gen)

	// The recount of the stream.
	out := &testlog.Buffer{}
	if err := run(ctx, []string{"processor", "recount", "--user", "u1", "--product", "p1"}, getenv, out, out); err != nil {
		t.Fatalf("recount: %v\n%s", err, out)
	}
	rows := recountRows(t, out.String())
	want := map[string][5]int64{"all": {}}
	for _, key := range slices.Sorted(maps.Keys(live)) {
		if strings.HasPrefix(key, "u:") { // every event is in one user's hash
			want["all"] = addRow(want["all"], live[key], 0)
		}
	}
	want["user u1"] = addRow([5]int64{}, live["u:u1"], 0)
	clicks, _ := strconv.ParseInt(live["top"]["p1"], 10, 64) // a product's clicks are in the ranking
	want["product p1"] = addRow([5]int64{}, live["p:p1"], clicks)
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("recount rows (events, clicks, page_views, dwells, dwell_ms) %v, want those of the live keys %v\n%s", rows, want, out)
	}

	// Per bucket of event time: recount --interval prints what the live buckets hold, and
	// counts the users that the buckets' HyperLogLogs estimate exactly.
	for _, iv := range []string{"minute", "hour", "day"} {
		out := &testlog.Buffer{}
		if err := run(ctx, []string{"processor", "recount", "--interval", iv}, getenv, out, out); err != nil {
			t.Fatalf("recount --interval %s: %v\n%s", iv, err, out)
		}
		want := map[string][6]int64{}
		for key, h := range live {
			start, ok := strings.CutPrefix(key, "s:"+iv[:1]+":")
			if !ok {
				continue
			}
			n := func(f string) int64 { v, _ := strconv.ParseInt(h[f], 10, 64); return v }
			ms, _ := strconv.ParseInt(start, 10, 64)
			users, _ := strconv.ParseInt(live["uu:"+iv[:1]+":"+start]["pfcount"], 10, 64)
			want[time.UnixMilli(ms).UTC().Format(time.RFC3339)] = [6]int64{n(events.FieldEvents), n(events.FieldClicks),
				n(events.FieldPageViews), n(events.FieldDwellCount), n(events.FieldDwellMs), users}
		}
		if got := recountBuckets(t, out.String()); len(want) == 0 || !reflect.DeepEqual(got, want) {
			t.Errorf("recount --interval %s buckets %v, want those of the live keys %v\n%s", iv, got, want, out)
		}
	}

	// A rebuild replays the stream, seven entries at a time.
	out = &testlog.Buffer{}
	if err := run(ctx, []string{"processor", "rebuild"}, getenv, out, out); err != nil {
		t.Fatalf("rebuild: %v\n%s", err, out)
	}
	if got := snapshot(t, p.rdb, p.keys.Gen(2)); !reflect.DeepEqual(got, live) {
		t.Errorf("rebuilt generation:\n%v\nwant the live one:\n%v\n%s", got, live, out)
	}

	// Retention folds the stream into the checkpoint, five entries at a time.
	ret := &Retention{rdb: p.rdb, keys: p.keys, holder: "test", logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		cfg: Config{Batch: 5, RedisTimeout: 5 * time.Second, Retention: time.Minute, StatsRetention: events.DefaultRetention}}
	retLock := generations.NewLock(p.rdb, p.keys.RetentionLock(), "test", 10*time.Second)
	if folded, _, err := ret.pass(ctx, retLock, time.Now().Add(time.Hour)); err != nil || folded != int64(len(pathEvents)+1) {
		t.Fatalf("retention folded %d entries (%v), want %d", folded, err, len(pathEvents)+1)
	}
	if got := snapshot(t, p.rdb, p.keys.Checkpoint()); !reflect.DeepEqual(got, live) {
		t.Errorf("checkpoint:\n%v\nwant the live keys:\n%v", got, live)
	}

	// A rebuild from the checkpoint alone (the stream is empty now).
	out = &testlog.Buffer{}
	if err := run(ctx, []string{"processor", "rebuild"}, getenv, out, out); err != nil {
		t.Fatalf("rebuild: %v\n%s", err, out)
	}
	if got := snapshot(t, p.rdb, p.keys.Gen(3)); !reflect.DeepEqual(got, live) {
		t.Errorf("generation rebuilt from the checkpoint:\n%v\nwant the live one:\n%v\n%s", got, live, out)
	}
}

// addRow adds a counter hash to a recount row (events, clicks, page_views, dwells,
// dwell_ms); clicks are added to the hash's own.
func addRow(row [5]int64, h map[string]string, clicks int64) [5]int64 {
	n := func(f string) int64 { v, _ := strconv.ParseInt(h[f], 10, 64); return v }
	c := n(events.FieldClicks) + clicks
	row[0] += c + n(events.FieldPageViews) + n(events.FieldDwellCount)
	row[1] += c
	row[2] += n(events.FieldPageViews)
	row[3] += n(events.FieldDwellCount)
	row[4] += n(events.FieldDwellMs)
	return row
}

// recountRows reads the rows of `processor recount`'s table by label.
func recountRows(t *testing.T, out string) map[string][5]int64 {
	t.Helper()
	rows := map[string][5]int64{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		label := strings.Join(f[:len(f)-5], " ")
		if label != "all" && !strings.HasPrefix(label, "user ") && !strings.HasPrefix(label, "product ") {
			continue
		}
		var row [5]int64
		for i, s := range f[len(f)-5:] {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				t.Fatalf("recount row %q: %v", line, err)
			}
			row[i] = v
		}
		rows[label] = row
	}
	return rows
}

// recountBuckets reads the per-bucket rows of `processor recount --interval`: bucket
// start -> events, clicks, page_views, dwells, dwell_ms, users.
func recountBuckets(t *testing.T, out string) map[string][6]int64 {
	t.Helper()
	rows := map[string][6]int64{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) != 7 {
			continue
		}
		if _, err := time.Parse(time.RFC3339, f[0]); err != nil {
			continue
		}
		var row [6]int64
		for i, s := range f[1:] {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				t.Fatalf("recount bucket row %q: %v", line, err)
			}
			row[i] = v
		}
		rows[f[0]] = row
	}
	return rows
}
