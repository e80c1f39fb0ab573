package events_test

import (
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
)

func ms(s string) int64 {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t.UnixMilli()
}

func TestResolutionStart(t *testing.T) {
	for _, c := range []struct {
		r    events.Resolution
		at   string
		want string
	}{
		{events.Minute, "2026-11-30T12:34:56Z", "2026-11-30T12:34:00Z"},
		{events.Hour, "2026-11-30T12:34:56Z", "2026-11-30T12:00:00Z"},
		{events.Day, "2026-11-30T12:34:56Z", "2026-11-30T00:00:00Z"},
		{events.Day, "2026-11-30T00:00:00Z", "2026-11-30T00:00:00Z"},
		{events.Day, "1969-12-31T23:00:00Z", "1969-12-31T00:00:00Z"},
	} {
		if got := c.r.Start(ms(c.at)); got != ms(c.want) {
			t.Errorf("%s.Start(%s) = %s, want %s", c.r, c.at, time.UnixMilli(got).UTC().Format(time.RFC3339), c.want)
		}
	}
}

func TestTile(t *testing.T) {
	now := ms("2026-11-30T12:00:00Z")
	keep := events.DefaultRetention
	live := func(b events.Bucket) bool { return events.Live(b, keep.Global(b.Res), now) }
	count := func(tl events.Tiling) map[events.Resolution]int {
		n := map[events.Resolution]int{}
		for _, b := range tl.Buckets {
			n[b.Res]++
		}
		return n
	}
	for _, c := range []struct {
		name           string
		from, to       string
		days, hrs, min int
		wantFrom       string
		wantTo         string
		gaps           bool
	}{
		{"30 days ending at an hour", "2026-10-31T12:00:00Z", "2026-11-30T12:00:00Z", 29, 24, 0, "", "", false},
		{"minute edges", "2026-11-29T10:58:00Z", "2026-11-30T11:03:00Z", 0, 24, 5, "", "", false},
		{"one minute", "2026-11-30T11:03:00Z", "2026-11-30T11:04:00Z", 0, 0, 1, "", "", false},
		{"edge older than the minutes' retention widens to its hour", "2026-11-20T10:30:00Z", "2026-11-20T12:00:00Z", 0, 2, 0, "2026-11-20T10:00:00Z", "", false},
		{"older than every retention", "2020-01-01T00:00:00Z", "2020-01-03T00:00:00Z", 0, 0, 0, "", "", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			tl := events.Tile(ms(c.from), ms(c.to), live)
			n := count(tl)
			if n[events.Day] != c.days || n[events.Hour] != c.hrs || n[events.Minute] != c.min || tl.Gaps != c.gaps {
				t.Fatalf("days %d hours %d minutes %d gaps %v, want %d %d %d %v", n[events.Day], n[events.Hour], n[events.Minute], tl.Gaps, c.days, c.hrs, c.min, c.gaps)
			}
			wantFrom, wantTo := c.from, c.to
			if c.wantFrom != "" {
				wantFrom = c.wantFrom
			}
			if c.wantTo != "" {
				wantTo = c.wantTo
			}
			if tl.From != ms(wantFrom) || tl.To != ms(wantTo) {
				t.Fatalf("covers %d..%d, want %s..%s", tl.From, tl.To, wantFrom, wantTo)
			}
			// The buckets are disjoint and in order.
			for i := 1; i < len(tl.Buckets); i++ {
				if tl.Buckets[i].Start < tl.Buckets[i-1].End() {
					t.Fatalf("bucket %d starts inside bucket %d", i, i-1)
				}
			}
		})
	}
}
