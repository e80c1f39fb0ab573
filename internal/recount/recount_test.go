package recount

import (
	"context"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/clickstream/pipeline/internal/testlog"
	"github.com/redis/go-redis/v9"
)

func TestParseBound(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      string // a substring of the error; "" for none
	}{
		{in: "1712345678901-0", want: "1712345678901-0"},
		{in: "1712345678901-7", want: "1712345678901-7"},
		{in: "1712345678901", want: "1712345678901-0"},
		{in: "0", want: "0-0"},
		{in: "2024-04-05T19:34:38.901Z", want: "1712345678901-0"},
		{in: "2024-04-05T21:34:38.901+02:00", want: "1712345678901-0"},
		{in: "2024-04-05T19:34:38Z", want: "1712345678000-0"},
		{in: "1970-01-01T00:00:00Z", want: "0-0"},
		{in: "99999999999999999999-0", err: "stream id out of range"},
		{in: "1-99999999999999999999", err: "stream id out of range"},
		{in: "1969-12-31T23:59:59Z", err: "before 1970"},
		{in: "yesterday", err: "neither an RFC 3339 time"},
		{in: "1712345678901-", err: "neither an RFC 3339 time"},
		{in: "-5", err: "neither an RFC 3339 time"},
	} {
		got, err := ParseBound(tc.in)
		if tc.err == "" && (err != nil || got != tc.want) {
			t.Errorf("ParseBound(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
		if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("ParseBound(%q) = %q, %v; want an error containing %q", tc.in, got, err, tc.err)
		}
	}
}

// stream writes entries at fixed ids: received at 1, 2, 3 and 4 s after the epoch,
// one undecodable, two with an event time of their own (in two different hours).
func stream(t *testing.T) (*redis.Client, events.Keys) {
	t.Helper()
	rdb := redistest.Start(t).Client()
	keys := events.NewKeys(redistest.Namespace(t))
	hour := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC).UnixMilli()
	for _, e := range []struct {
		id string
		kv []any
	}{
		{"1000-0", (&events.Event{UserID: "u1", ProductID: "p1"}).AppendFields(nil)},
		{"2000-0", (&events.Event{UserID: "u1", ProductID: "p2", Type: events.PageView}).AppendFields(nil)},
		{"3000-0", (&events.Event{UserID: "u2", ProductID: "p1", Type: events.Dwell, DurationMs: 100, TS: hour + 5}).AppendFields(nil)},
		{"3000-1", []any{"foo", "bar"}},
		{"4000-0", (&events.Event{UserID: "u3", ProductID: "p1", TS: hour + 3600_000}).AppendFields(nil)},
	} {
		if err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: keys.Stream(), ID: e.id, Values: e.kv}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	return rdb, keys
}

// rows reads the table of totals: label -> events, clicks, page_views, dwells, dwell_ms.
func rows(out string) map[string][5]int64 {
	m := map[string][5]int64{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || (f[0] != "all" && f[0] != "user" && f[0] != "product") {
			continue
		}
		var row [5]int64
		for i, s := range f[len(f)-5:] {
			row[i], _ = strconv.ParseInt(s, 10, 64)
		}
		m[strings.Join(f[:len(f)-5], " ")] = row
	}
	return m
}

// The window is [From, To) in receive time; undecodable entries are reported, not
// counted; a user's and a product's rows count their events in the window only.
func TestRunWindow(t *testing.T) {
	t.Parallel()
	rdb, keys := stream(t)
	out := &testlog.Buffer{}
	q := Query{From: "2000-0", To: "4000-0", User: "u1", Product: "p1"}
	if err := Run(context.Background(), rdb, keys, q, 5*time.Second, out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "from 2000-0 to before 4000-0: 3 entries (1 undecodable, not counted)") ||
		!strings.Contains(out.String(), "first entry 2000-0, last entry 3000-1") {
		t.Errorf("window line:\n%s", out)
	}
	want := map[string][5]int64{
		"all":        {2, 0, 1, 1, 100},
		"user u1":    {1, 0, 1, 0, 0},
		"product p1": {1, 0, 0, 1, 100},
	}
	if got := rows(out.String()); !reflect.DeepEqual(got, want) {
		t.Errorf("rows %v, want %v\n%s", got, want, out)
	}
	if strings.Contains(out.String(), "note:") {
		t.Errorf("a note without a checkpoint:\n%s", out)
	}
}

// With an interval, each bucket of event time gets a row with its distinct users; an
// entry without an event time of its own falls in the bucket of its receive time.
func TestRunInterval(t *testing.T) {
	t.Parallel()
	rdb, keys := stream(t)
	out := &testlog.Buffer{}
	hour := events.Hour
	if err := Run(context.Background(), rdb, keys, Query{Interval: &hour}, 5*time.Second, out); err != nil {
		t.Fatal(err)
	}
	buckets := map[string]string{}
	for _, line := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(line); len(f) == 7 && strings.HasSuffix(f[0], "Z") {
			buckets[f[0]] = strings.Join(f[1:], " ")
		}
	}
	want := map[string]string{
		"1970-01-01T00:00:00Z": "2 1 1 0 0 1",   // u1's click and page view
		"2026-11-30T10:00:00Z": "1 0 0 1 100 1", // u2's dwell
		"2026-11-30T11:00:00Z": "1 1 0 0 0 1",   // u3's click
	}
	if !reflect.DeepEqual(buckets, want) {
		t.Errorf("buckets (events clicks page_views dwells dwell_ms users) %v, want %v\n%s", buckets, want, out)
	}
}

// Entries trimmed by retention are in the checkpoint only: a window that reaches back
// past its position says so.
func TestRunNotesTheCheckpoint(t *testing.T) {
	t.Parallel()
	rdb, keys := stream(t)
	ctx := context.Background()
	rdb.HSet(ctx, keys.CheckpointInfo(), events.CheckpointFieldPosition, "1500-0", events.CheckpointFieldEntries, 7)
	for _, tc := range []struct {
		from string
		note bool
	}{{"", true}, {"1000-0", true}, {"1500-0", true}, {"1500-1", false}, {"2000-0", false}} {
		out := &testlog.Buffer{}
		if err := Run(ctx, rdb, keys, Query{From: tc.from}, 5*time.Second, out); err != nil {
			t.Fatal(err)
		}
		note := strings.Contains(out.String(), "note: the window reaches before 1500-1: 7 entries up to there were trimmed")
		if note != tc.note {
			t.Errorf("from %q: note %v, want %v\n%s", tc.from, note, tc.note, out)
		}
	}
}

// Over several partitions, recount counts every partition's entries as one window,
// and a user's in the user's partition only.
func TestRecountPartitions(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	l := events.NewLayout(redistest.Namespace(t), 3)
	evs := []events.Event{
		{UserID: "u1", ProductID: "p1", Type: events.Click}, {UserID: "u2", ProductID: "p1", Type: events.Click},
		{UserID: "u3", ProductID: "p2", Type: events.PageView}, {UserID: "u4", ProductID: "p1", Type: events.Dwell, DurationMs: 5},
		{UserID: "u5", ProductID: "p2", Type: events.Click}, {UserID: "u1", ProductID: "p2", Type: events.Click},
	}
	for i := range evs {
		rdb.XAdd(ctx, &redis.XAddArgs{Stream: l.ForUser(evs[i].UserID).Stream(), Values: evs[i].AppendFields(nil)})
	}
	var out strings.Builder
	if err := RunLayout(ctx, rdb, l, Query{Product: "p1"}, 5*time.Second, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"recount of the 3 partitions' streams", ": 6 entries", "\nall 6 4 1 1 5\n", "\nproduct p1 3 2 0 1 5\n"} {
		if !strings.Contains(squeeze(out.String()), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := RunLayout(ctx, rdb, l, Query{User: "u1"}, 5*time.Second, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(squeeze(out.String()), "\nuser u1 2 2 0 0 0\n") || !strings.Contains(out.String(), "user u1's") {
		t.Errorf("recount of u1:\n%s", out.String())
	}
}

// squeeze puts one space between the fields of every line.
func squeeze(s string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		b.WriteString(strings.Join(strings.Fields(line), " ") + "\n")
	}
	return b.String()
}
