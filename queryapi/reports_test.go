package main

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/redistest"
)

// /v1/reports/daily: yesterday (UTC) unless a date is given; the day's summary, its 24
// hours and its top 20 products, as JSON, as CSV and as a printable page; a day past
// the hours' retention has null hours; a bad or future date, or an unknown format, is a
// 400.
func TestDailyReport(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	a := startAPI(t, s)
	now := time.Now().UTC()
	today := now.Truncate(24 * time.Hour)
	yesterday := today.AddDate(0, 0, -1)
	date := yesterday.Format(time.DateOnly)
	var evs []timed
	for i := range 1234 { // at 10:xx, 22 products
		evs = append(evs, timed{events.Event{UserID: "u" + string(rune('a'+i%5)), ProductID: "p" + string(rune('A'+i%22)), Type: events.Click},
			yesterday.Add(10*time.Hour + time.Duration(i)*time.Second).UnixMilli()})
	}
	evs = append(evs,
		timed{events.Event{UserID: "u1", ProductID: "pZ", Type: events.PageView}, yesterday.Add(23*time.Hour + 59*time.Minute).UnixMilli()},
		timed{events.Event{UserID: "u1", ProductID: "pZ", Type: events.Dwell, DurationMs: 2000}, yesterday.Add(time.Minute).UnixMilli()},
		timed{events.Event{UserID: "u1", ProductID: "pZ", Type: events.Click}, today.Add(time.Second).UnixMilli()}, // today: not in the report
	)
	a.apply(now, evs...)

	var r DailyReport
	a.getJSON("/v1/reports/daily", &r)
	if r.Date != date || r.From != yesterday.UnixMilli() || r.To != today.UnixMilli() {
		t.Errorf("default report: %s [%d, %d), want yesterday %s", r.Date, r.From, r.To, date)
	}
	if r.Summary.Events != 1236 || r.Summary.Clicks != 1234 || r.Summary.PageViews != 1 || r.Summary.UniqueUsers != 6 || !r.Summary.Complete {
		t.Errorf("summary %+v", r.Summary)
	}
	if len(r.Hourly) != 24 {
		t.Fatalf("%d hours", len(r.Hourly))
	}
	for i, h := range r.Hourly {
		want := map[int]int64{0: 1, 10: 1234, 23: 1}[i]
		if h == nil || h.Events != want || h.From != yesterday.Add(time.Duration(i)*time.Hour).UnixMilli() || h.Resolution != "hour" {
			t.Errorf("hour %d: %+v, want %d events", i, h, want)
		}
	}
	if n := len(r.TopProducts.Products); n != 20 || r.TopProducts.Products[0].ProductID != "pA" || r.TopProducts.Products[0].Clicks != 57 {
		t.Errorf("top products: %d, first %+v; want 20, pA with 57 clicks", n, r.TopProducts.Products[:min(n, 1)])
	}

	rows := a.getCSV("/v1/reports/daily?format=csv&date="+date, "daily-report_"+date+".csv")
	if len(rows) != 1+1+24+20 {
		t.Fatalf("CSV has %d rows, want a header, the day, 24 hours and 20 products", len(rows))
	}
	if want := []string{"day", yesterday.Format(time.RFC3339), today.Format(time.RFC3339), "", "1236", "1234", "1", "2000", "1", "2000", "6", "1234"}; !reflect.DeepEqual(rows[1], want) {
		t.Errorf("day row %q, want %q", rows[1], want)
	}
	if got := rows[12]; got[0] != "hour" || got[1] != yesterday.Add(10*time.Hour).Format(time.RFC3339) || got[4] != "1234" {
		t.Errorf("hour 10 row %q", got)
	}
	if got := rows[26]; !reflect.DeepEqual(got, []string{"product", yesterday.Format(time.RFC3339), today.Format(time.RFC3339), "pA", "", "57", "0", "", "", "", "", ""}) {
		t.Errorf("first product row %q", got)
	}

	page := a.get("/v1/reports/daily?format=html&date=" + date)
	if page.status != http.StatusOK || !strings.HasPrefix(page.header.Get("Content-Type"), "text/html") {
		t.Fatalf("HTML report: %d %s", page.status, page.header.Get("Content-Type"))
	}
	for _, want := range []string{"Daily report: " + date, "<dd>1,236</dd>", "<td>1,234</td>", "2,000 ms", "123,400.0 %",
		`<td class="id">pA</td>`, `href="/v1/reports/daily?date=` + yesterday.AddDate(0, 0, -1).Format(time.DateOnly) + `&amp;format=html"`} {
		if !strings.Contains(page.body, want) {
			t.Errorf("the HTML report lacks %q", want)
		}
	}
	if strings.Contains(page.body, "<script") {
		t.Error("the HTML report has a script; it must print as it is")
	}

	// A day older than the hours' retention: the day's bucket is still there, its
	// hours are not.
	old := today.AddDate(0, 0, -100)
	a.apply(now, timed{events.Event{UserID: "u1", ProductID: "p1", Type: events.Click}, old.Add(5 * time.Hour).UnixMilli()})
	a.getJSON("/v1/reports/daily?date="+old.Format(time.DateOnly), &r)
	if r.Summary.Events != 1 || r.Hourly[5] != nil || r.Hourly[0] != nil {
		t.Errorf("a day 100 days ago: summary %+v, hour 5 %+v; want 1 event and null hours", r.Summary, r.Hourly[5])
	}

	for path, msg := range map[string]string{
		"/v1/reports/daily?date=2026-13-01": "date: must be a day as YYYY-MM-DD",
		"/v1/reports/daily?date=yesterday":  "date: must be a day as YYYY-MM-DD",
		"/v1/reports/daily?format=pdf":      "format: must be json, csv or html",
		"/v1/reports/daily?date=" + today.AddDate(0, 0, 1).Format(time.DateOnly): "date: " + today.AddDate(0, 0, 1).Format(time.DateOnly) +
			" is in the future (today is " + today.Format(time.DateOnly) + " UTC)",
	} {
		a.expect(path, http.StatusBadRequest, `{"error":"`+msg+`"}`)
	}
	a.getJSON("/v1/reports/daily?date="+today.Format(time.DateOnly), &r)
	if r.Summary.Events != 1 {
		t.Errorf("today's report so far: %d events, want 1", r.Summary.Events)
	}
}
