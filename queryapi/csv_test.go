package main

import (
	"encoding/csv"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/redistest"
)

// getCSV GETs path, expects a 200 CSV download named file, and parses it.
func (a *api) getCSV(path, file string) [][]string {
	a.t.Helper()
	r := a.get(path)
	if r.status != http.StatusOK {
		a.t.Fatalf("GET %s = %d %s", path, r.status, r.body)
	}
	if mt, params, err := mime.ParseMediaType(r.header.Get("Content-Type")); err != nil || mt != "text/csv" || params["charset"] != "utf-8" {
		a.t.Errorf("GET %s: Content-Type %q, want text/csv; charset=utf-8", path, r.header.Get("Content-Type"))
	}
	if got, want := r.header.Get("Content-Disposition"), `attachment; filename="`+file+`"`; got != want {
		a.t.Errorf("GET %s: Content-Disposition %q, want %q", path, got, want)
	}
	if !strings.HasSuffix(r.body, "\r\n") {
		a.t.Errorf("GET %s: rows do not end in CRLF (RFC 4180): %q", path, r.body)
	}
	rows, err := csv.NewReader(strings.NewReader(r.body)).ReadAll()
	if err != nil {
		a.t.Fatalf("GET %s: %v in %q", path, err, r.body)
	}
	return rows
}

// Every /v1/stats endpoint answers CSV with format=csv, the same numbers as its JSON,
// and the hourly series of a range sums to its summary.
func TestStatsCSV(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	a := startAPI(t, s)
	now := time.Now()
	h := time.UnixMilli(events.Hour.Start(now.UnixMilli())).Add(-5 * time.Hour).UTC()
	ev := func(user, product string, typ events.Type, dur int64, at time.Time) timed {
		return timed{events.Event{UserID: user, ProductID: product, Type: typ, DurationMs: dur}, at.UnixMilli()}
	}
	a.apply(now,
		ev("u1", "p1", events.Click, 0, h.Add(time.Minute)),
		ev("u1", "p1", events.PageView, 0, h.Add(2*time.Minute)),
		ev("u2", "p2", events.Click, 0, h.Add(61*time.Minute)),
		ev("u2", "p2", events.Dwell, 1500, h.Add(62*time.Minute)),
		ev("u3", "p1", events.Click, 0, h.Add(150*time.Minute)),
		ev("u3", "p3", events.Dwell, 250, h.Add(179*time.Minute)),
		ev("u9", "p9", events.Click, 0, h.Add(200*time.Minute)), // after the range
		ev("u8", "p3", events.Click, 0, now.Add(-time.Minute)),
	)
	span := "from=" + ms(h) + "&to=" + ms(h.Add(3*time.Hour))
	stamps := h.Format("20060102T1504Z") + "_" + h.Add(3*time.Hour).Format("20060102T1504Z")

	var sum Summary
	a.getJSON("/v1/stats/summary?"+span, &sum)
	rows := a.getCSV("/v1/stats/summary?format=csv&"+span, "summary_"+stamps+".csv")
	want := [][]string{summaryHeader, {h.Format(time.RFC3339), h.Add(3 * time.Hour).Format(time.RFC3339), "hour", "true",
		"6", "3", "1", "1750", "2", "875", "3", "0.0081", "3"}}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("summary CSV:\n%q\nwant\n%q", rows, want)
	}

	// The hourly CSV of the same range, every summed metric a column: its sums are
	// the summary's. (Unique users are a union over the range, not a sum of hours.)
	metrics := []string{"events", "clicks", "page_views", "dwell_ms", "dwell_count"}
	rows = a.getCSV("/v1/stats/timeseries?format=csv&interval=hour&metric="+strings.Join(metrics, ",")+"&"+span,
		"timeseries_events-clicks-page_views-dwell_ms-dwell_count_hour_"+stamps+".csv")
	if got := rows[0]; !reflect.DeepEqual(got, append([]string{"start"}, metrics...)) {
		t.Fatalf("header %q", got)
	}
	if len(rows) != 4 {
		t.Fatalf("hourly CSV of 3 hours has %d rows: %q", len(rows), rows)
	}
	sums := make([]int64, len(metrics))
	for i, row := range rows[1:] {
		if start := h.Add(time.Duration(i) * time.Hour).Format(time.RFC3339); row[0] != start {
			t.Errorf("row %d starts %s, want %s", i+1, row[0], start)
		}
		for j, v := range row[1:] {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatalf("row %d: %q", i+1, row)
			}
			sums[j] += n
		}
	}
	if want := []int64{sum.Events, sum.Clicks, sum.PageViews, sum.DwellMs, sum.DwellCount}; !reflect.DeepEqual(sums, want) || sum.Events != 6 {
		t.Errorf("the hourly CSV sums to %v, the summary says %v", sums, want)
	}

	// One metric, as the JSON has it; a product's series; a bucket past its retention
	// is an empty cell.
	var series Series
	a.getJSON("/v1/stats/timeseries?metric=unique_users&interval=hour&"+span, &series)
	rows = a.getCSV("/v1/stats/timeseries?format=csv&metric=unique_users&interval=hour&"+span, "timeseries_unique_users_hour_"+stamps+".csv")
	for i, p := range series.Points {
		if rows[i+1][1] != strconv.FormatFloat(p[1].(float64), 'f', -1, 64) {
			t.Errorf("unique users CSV row %q, JSON point %v", rows[i+1], p)
		}
	}
	rows = a.getCSV("/v1/stats/timeseries?format=csv&metric=clicks,page_views&interval=hour&product=p1&"+span, "timeseries_p1_clicks-page_views_hour_"+stamps+".csv")
	if want := [][]string{{"start", "clicks", "page_views"}, {h.Format(time.RFC3339), "1", "1"},
		{h.Add(time.Hour).Format(time.RFC3339), "0", "0"}, {h.Add(2 * time.Hour).Format(time.RFC3339), "1", "0"}}; !reflect.DeepEqual(rows, want) {
		t.Errorf("product CSV %q, want %q", rows, want)
	}
	old := time.UnixMilli(events.Minute.Start(now.Add(-72 * time.Hour).UnixMilli())).UTC()
	rows = a.getCSV("/v1/stats/timeseries?format=csv&metric=clicks&interval=minute&from="+ms(old)+"&to="+ms(old.Add(time.Minute)),
		"timeseries_clicks_minute_"+old.Format("20060102T1504Z")+"_"+old.Add(time.Minute).Format("20060102T1504Z")+".csv")
	if want := [][]string{{"start", "clicks"}, {old.Format(time.RFC3339), ""}}; !reflect.DeepEqual(rows, want) {
		t.Errorf("an expired minute: %q, want an empty cell", rows)
	}

	rows = a.getCSV("/v1/stats/top-products?format=csv&"+span, "top-products_clicks_"+stamps+".csv")
	if want := [][]string{{"rank", "product_id", "clicks", "page_views"}, {"1", "p1", "2", "1"}, {"2", "p2", "1", "0"}}; !reflect.DeepEqual(rows, want) {
		t.Errorf("top products CSV %q, want %q", rows, want)
	}
	r := a.get("/v1/stats/active?format=csv&window=10m")
	if r.status != http.StatusOK || r.body != "window_seconds,active_users\r\n600,1\r\n" ||
		!strings.HasPrefix(r.header.Get("Content-Disposition"), `attachment; filename="active-users_600s_`) {
		t.Errorf("active CSV: %d %q %q", r.status, r.body, r.header.Get("Content-Disposition"))
	}

	for _, path := range []string{"/v1/stats/summary?format=xml", "/v1/stats/timeseries?metric=clicks&format=CSV",
		"/v1/stats/top-products?format=html", "/v1/stats/active?format=tsv"} {
		a.expect(path, http.StatusBadRequest, `{"error":"format: must be json or csv"}`)
	}
	for path, msg := range map[string]string{
		"/v1/stats/timeseries?format=csv&metric=clicks,nope":                    "metric: must be one of events, clicks, page_views, dwell_ms, dwell_count, unique_users",
		"/v1/stats/timeseries?format=csv&metric=clicks,clicks":                  "metric: clicks is listed twice",
		"/v1/stats/timeseries?format=csv&metric=clicks,unique_users&product=p1": "metric: with product, must be one of clicks, page_views, dwell_ms, dwell_count",
		"/v1/stats/timeseries?metric=clicks,page_views":                         "metric: must be one of events, clicks, page_views, dwell_ms, dwell_count, unique_users",
	} {
		a.expect(path, http.StatusBadRequest, `{"error":"`+msg+`"}`)
	}
}
