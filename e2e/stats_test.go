package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/proctest"
	"github.com/clickstream/pipeline/internal/redistest"
	wl "github.com/clickstream/pipeline/internal/workload"
)

// Events with explicit times, posted to the real ingest (and posted again, as a client
// retry would), counted by the real processor and read from the real queryapi: exact
// series at every interval with empty buckets present, unique users as a union, a
// 29-day-old event in its hour and day but not in its expired minute, and `processor
// recount --interval hour` printing the same buckets straight from the stream.
func TestStatsEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: starts redis-server and the three services")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	srv := redistest.Start(t)
	ns := redistest.Namespace(t)
	f := proctest.NewTestFleet(t)
	env := func(extra ...string) []string {
		return append([]string{"REDIS_URL=" + srv.URL(), "REDIS_NAMESPACE=" + ns}, extra...)
	}
	var addrs [3]string
	for i, svc := range []string{"ingest", "queryapi", "processor"} {
		addr, err := proctest.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		addrs[i] = addr
		v := map[string]string{"ingest": "INGEST_ADDR", "queryapi": "QUERY_ADDR", "processor": "PROCESSOR_ADDR"}[svc]
		if _, err := f.Start(ctx, svc, svc, addr, env(v+"="+addr)...); err != nil {
			t.Fatal(err)
		}
	}
	query := wl.NewQuery(&http.Client{Timeout: 10 * time.Second}, "http://"+addrs[1])

	now := time.Now()
	h := time.UnixMilli(events.Hour.Start(now.UnixMilli())).Add(-4 * time.Hour) // three whole hours, ending an hour ago
	late := time.UnixMilli(events.Hour.Start(now.Add(-29 * 24 * time.Hour).UnixMilli())).Add(15*time.Minute + 7*time.Second)
	type ev struct {
		User, Product, Type string
		At                  time.Time
	}
	evs := []ev{
		{"u1", "p1", "click", h.Add(1 * time.Minute)},
		{"u1", "p1", "page_view", h.Add(1*time.Minute + 30*time.Second)},
		{"u2", "p1", "click", h.Add(2 * time.Minute)},
		{"u2", "p2", "click", h.Add(61 * time.Minute)},
		{"u3", "p2", "page_view", h.Add(62 * time.Minute)},
		{"u1", "p2", "click", h.Add(170 * time.Minute)},
		{"u4", "p3", "click", late},
	}
	var body bytes.Buffer
	body.WriteByte('[')
	for i, e := range evs {
		if i > 0 {
			body.WriteByte(',')
		}
		fmt.Fprintf(&body, `{"user_id":%q,"product_id":%q,"type":%q,"ts":%d,"event_id":"%s-%d"}`, e.User, e.Product, e.Type, e.At.UnixMilli(), ns, i)
	}
	body.WriteByte(']')
	for attempt, want := range []string{`{"accepted":7,"duplicates":0}`, `{"accepted":0,"duplicates":7}`} {
		resp, err := http.Post("http://"+addrs[0]+"/v1/events", "application/json", bytes.NewReader(body.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		got.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted || strings.TrimSpace(got.String()) != want {
			t.Fatalf("post %d: %d %s, want 202 %s", attempt+1, resp.StatusCode, got.String(), want)
		}
	}
	if _, err := query.WaitDrained(ctx); err != nil {
		t.Fatal(err)
	}

	series := func(q string) [][2]any {
		t.Helper()
		var s struct {
			Points [][2]any `json:"points"`
		}
		if err := query.Get(ctx, "/v1/stats/timeseries?"+q, &s); err != nil {
			t.Fatal(err)
		}
		return s.Points
	}
	pt := func(at time.Time, v any) [2]any {
		if n, ok := v.(int); ok {
			v = float64(n)
		}
		return [2]any{float64(at.UnixMilli()), v}
	}
	span := fmt.Sprintf("from=%d&to=%d", h.UnixMilli(), h.Add(3*time.Hour).UnixMilli())
	for _, c := range []struct {
		query string
		want  [][2]any
	}{
		{"metric=clicks&interval=hour&" + span, [][2]any{pt(h, 2), pt(h.Add(time.Hour), 1), pt(h.Add(2*time.Hour), 1)}},
		{"metric=unique_users&interval=hour&" + span, [][2]any{pt(h, 2), pt(h.Add(time.Hour), 2), pt(h.Add(2*time.Hour), 1)}},
		{fmt.Sprintf("metric=events&interval=minute&from=%d&to=%d", h.UnixMilli(), h.Add(4*time.Minute).UnixMilli()),
			[][2]any{pt(h, 0), pt(h.Add(time.Minute), 2), pt(h.Add(2*time.Minute), 1), pt(h.Add(3*time.Minute), 0)}},
		{"metric=page_views&interval=hour&product=p2&" + span, [][2]any{pt(h, 0), pt(h.Add(time.Hour), 1), pt(h.Add(2*time.Hour), 0)}},
		// The late event: its minute has expired (null), its hour and day have not.
		{fmt.Sprintf("metric=clicks&interval=minute&from=%d&to=%d", late.UnixMilli(), late.UnixMilli()+1),
			[][2]any{pt(late.Truncate(time.Minute), nil)}},
		{fmt.Sprintf("metric=clicks&interval=hour&from=%d&to=%d", late.UnixMilli(), late.UnixMilli()+1),
			[][2]any{pt(late.Truncate(time.Hour), 1)}},
		{fmt.Sprintf("metric=clicks&interval=day&from=%d&to=%d", late.UnixMilli(), late.UnixMilli()+1),
			[][2]any{pt(time.UnixMilli(events.Day.Start(late.UnixMilli())), 1)}},
	} {
		if got := series(c.query); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %v, want %v", c.query, got, c.want)
		}
	}
	var sum struct {
		Events      int64 `json:"events"`
		Clicks      int64 `json:"clicks"`
		UniqueUsers int64 `json:"unique_users"`
	}
	if err := query.Get(ctx, "/v1/stats/summary?"+span, &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Events != 6 || sum.Clicks != 4 || sum.UniqueUsers != 3 {
		t.Errorf("summary of the three hours: %+v, want 6 events, 4 clicks, 3 unique users (u1 in two hours counts once)", sum)
	}

	// The audit: recount's hour rows are the API's hour buckets.
	p, err := f.Exec("recount", filepath.Join(proctest.Binaries(t), "processor"), []string{"recount", "--interval", "hour"}, env())
	if err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	out := readLog(p)
	if p.Err() != nil {
		t.Fatalf("recount: %v\n%s", p.Err(), out)
	}
	for _, at := range []time.Time{h, h.Add(time.Hour), h.Add(2 * time.Hour), late.Truncate(time.Hour)} {
		clicks := series(fmt.Sprintf("metric=clicks&interval=hour&from=%d&to=%d", at.UnixMilli(), at.Add(time.Hour).UnixMilli()))[0][1]
		row := ""
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, at.UTC().Format(time.RFC3339)) {
				row = line
			}
		}
		fields := strings.Fields(row)
		if len(fields) != 7 || fields[2] != fmt.Sprint(clicks) {
			t.Errorf("recount row for %s: %q; the API says %v clicks\n%s", at.UTC().Format(time.RFC3339), row, clicks, out)
		}
	}
}
