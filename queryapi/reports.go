package main

import (
	"bytes"
	"context"
	"html/template"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/server"
	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"
)

// reportTopProducts is how many products a daily report lists.
const reportTopProducts = 20

// DailyReport is the answer of /v1/reports/daily: one UTC day's summary, its 24 hours
// and its top products by clicks.
type DailyReport struct {
	Date    string  `json:"date"` // YYYY-MM-DD, UTC
	From    int64   `json:"from"`
	To      int64   `json:"to"`
	Summary Summary `json:"summary"`
	// Hourly holds the summary of each hour of the day, in order; null for an hour past
	// its retention (STATS_RETENTION_HOUR).
	Hourly      []*Summary  `json:"hourly"`
	TopProducts TopProducts `json:"top_products"`
}

// dailyReport is GET /v1/reports/daily?date=YYYY-MM-DD (default yesterday, UTC) with
// format json (default), csv or html.
func (h *handler) dailyReport(c echo.Context) error {
	format := c.QueryParam("format")
	switch format {
	case "", "json", "csv", "html":
	default:
		return server.BadRequest("format: must be json, csv or html")
	}
	now := h.now()
	today := time.UnixMilli(events.Day.Start(now.UnixMilli())).UTC()
	day := today.AddDate(0, 0, -1)
	if s := c.QueryParam("date"); s != "" {
		d, err := time.Parse(time.DateOnly, s)
		if err != nil {
			return server.BadRequest("date: must be a day as YYYY-MM-DD")
		}
		if d.After(today) {
			return server.BadRequest("date: " + s + " is in the future (today is " + today.Format(time.DateOnly) + " UTC)")
		}
		day = d
	}
	r, err := h.readDaily(c.Request().Context(), day, now.UnixMilli())
	if err != nil {
		return err
	}
	switch format {
	case "csv":
		return r.csv().write(c)
	case "html":
		return h.web.reportHTML(c, r, today)
	}
	return c.JSON(http.StatusOK, r)
}

// readDaily reads the day's summary and its hours in one round trip, and its top
// products in a second.
func (h *handler) readDaily(ctx context.Context, day time.Time, now int64) (DailyReport, error) {
	from := day.UnixMilli()
	to := from + events.Day.Millis()
	r := DailyReport{Date: day.Format(time.DateOnly), From: from, To: to, Hourly: make([]*Summary, 24)}
	live := h.liveGlobal(now)
	dayTiles := events.Tile(from, to, live)
	n := h.layout.Count()
	whole := newSummaryRead(dayTiles, n)
	hours := make([]*summaryRead, 24)
	for i := range hours {
		b := events.Bucket{Res: events.Hour, Start: from + int64(i)*events.Hour.Millis()}
		if live(b) {
			hours[i] = newSummaryRead(oneBucket(b), n)
		}
	}
	rctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	err := h.atGeneration(rctx, func(pipe redis.Pipeliner, k events.Keys, gen events.GenKeys) {
		whole.queue(rctx, pipe, k, gen)
		for _, hr := range hours {
			if hr != nil {
				hr.queue(rctx, pipe, k, gen)
			}
		}
	})
	if err != nil {
		return r, err
	}
	if r.Summary, err = whole.result(); err != nil {
		return r, err
	}
	for i, hr := range hours {
		if hr == nil {
			continue
		}
		s, err := hr.result()
		if err != nil {
			return r, err
		}
		r.Hourly[i] = &s
	}
	r.TopProducts, err = h.readTopProducts(ctx, span{from, to}, now, "clicks", reportTopProducts)
	return r, err
}

// csv is the report as one table in long form, which a spreadsheet filters by its first
// column: a "day" row, 24 "hour" rows and a "product" row per top product (with the
// product's clicks and page views only).
func (r DailyReport) csv() csvTable {
	t := csvTable{
		name: "daily-report_" + r.Date + ".csv",
		header: []string{"section", "start", "end", "product_id", "events", "clicks", "page_views", "dwell_ms",
			"dwell_count", "avg_dwell_ms", "unique_users", "click_through_rate"},
	}
	row := func(section string, from, to int64, s *Summary) []string {
		if s == nil {
			return []string{section, rfc3339(from), rfc3339(to), "", "", "", "", "", "", "", "", ""}
		}
		return []string{section, rfc3339(from), rfc3339(to), "", itoa(s.Events), itoa(s.Clicks), itoa(s.PageViews),
			itoa(s.DwellMs), itoa(s.DwellCount), ftoa(s.AvgDwellMs), itoa(s.UniqueUsers), ftoa(s.ClickThroughRate)}
	}
	t.rows = append(t.rows, row("day", r.From, r.To, &r.Summary))
	for i, s := range r.Hourly {
		start := r.From + int64(i)*events.Hour.Millis()
		t.rows = append(t.rows, row("hour", start, start+events.Hour.Millis(), s))
	}
	for _, p := range r.TopProducts.Products {
		t.rows = append(t.rows, []string{"product", rfc3339(r.TopProducts.From), rfc3339(r.TopProducts.To), p.ProductID,
			"", itoa(p.Clicks), itoa(p.PageViews), "", "", "", "", ""})
	}
	return t
}

// reportCSP: the report is one self-contained page (its style inline) with no script.
const reportCSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// reportPage is what web/report.html shows.
type reportPage struct {
	DailyReport
	Prev, Next string // neighbouring dates; Next is "" for today
	MaxEvents  int64  // the busiest hour's events, for the bars
}

func (d *dashboard) reportHTML(c echo.Context, r DailyReport, today time.Time) error {
	day, _ := time.Parse(time.DateOnly, r.Date)
	p := reportPage{DailyReport: r, Prev: day.AddDate(0, 0, -1).Format(time.DateOnly)}
	if day.Before(today) {
		p.Next = day.AddDate(0, 0, 1).Format(time.DateOnly)
	}
	for _, s := range r.Hourly {
		if s != nil {
			p.MaxEvents = max(p.MaxEvents, s.Events)
		}
	}
	var b bytes.Buffer
	if err := d.report.Execute(&b, p); err != nil {
		return err
	}
	c.Response().Header().Set("Content-Security-Policy", reportCSP)
	return c.HTMLBlob(http.StatusOK, b.Bytes())
}

// reportFuncs format numbers for people: thousands separators, a percentage, a time of
// day in UTC.
var reportFuncs = template.FuncMap{
	"num": group,
	"ms": func(f *float64) string {
		if f == nil {
			return "–"
		}
		return group(int64(math.Round(*f))) + " ms"
	},
	"pct": func(f *float64) string {
		if f == nil {
			return "–"
		}
		whole, frac, _ := strings.Cut(strconv.FormatFloat(*f*100, 'f', 1, 64), ".")
		n, _ := strconv.ParseInt(whole, 10, 64)
		return group(n) + "." + frac + " %"
	},
	"hour": func(from int64, i int) string {
		return time.UnixMilli(from + int64(i)*events.Hour.Millis()).UTC().Format("15:04")
	},
	"utc": func(ms int64) string { return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04 UTC") },
	// bar is the width of an hour's bar, in percent of the busiest hour.
	"bar": func(n, max int64) int64 {
		if max <= 0 {
			return 0
		}
		return n * 100 / max
	},
	"inc": func(i int) int { return i + 1 },
}

// group writes n with a comma between each group of three digits: 1,234,567.
func group(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
