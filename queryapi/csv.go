package main

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/clickstream/pipeline/internal/server"
	"github.com/labstack/echo/v4"
)

// Every /v1/stats endpoint answers CSV with format=csv: a header row, then the rows, as
// RFC 4180 says (CRLF line ends), times in RFC 3339 UTC, a null as an empty cell. The
// Content-Disposition names a file after what it holds and its range, so a browser
// saves it as, say, timeseries_clicks_hour_20261101T0000Z_20261102T0000Z.csv.
//
// Ids need no guarding against spreadsheet formulas: the id alphabet has no = + ( ) or
// tab, so no cell can become a formula that does anything.

// statsFormat is the middleware of the /v1/stats routes: format is json (the default)
// or csv, checked before anything is read.
func statsFormat(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		switch c.QueryParam("format") {
		case "", "json", "csv":
			return next(c)
		}
		return server.BadRequest("format: must be json or csv")
	}
}

// writeStats answers v, one of the statistics answers, as JSON, or as CSV when the
// request asks for format=csv.
func writeStats(c echo.Context, v any) error {
	if c.QueryParam("format") != "csv" {
		return c.JSON(http.StatusOK, v)
	}
	var t csvTable
	switch v := v.(type) {
	case Summary:
		t.name = csvName("summary", v.From, v.To)
		t.header = summaryHeader
		t.rows = [][]string{summaryRow(v)}
	case TopProducts:
		t.name = csvName("top-products_"+v.By, v.From, v.To)
		t.header = []string{"rank", "product_id", "clicks", "page_views"}
		for i, p := range v.Products {
			t.rows = append(t.rows, []string{strconv.Itoa(i + 1), p.ProductID, itoa(p.Clicks), itoa(p.PageViews)})
		}
	case Active:
		t.name = "active-users_" + strconv.FormatInt(v.WindowSeconds, 10) + "s_" + stamp(time.Now().UnixMilli()) + ".csv"
		t.header = []string{"window_seconds", "active_users"}
		t.rows = [][]string{{itoa(v.WindowSeconds), itoa(v.ActiveUsers)}}
	default:
		panic(fmt.Sprintf("writeStats: no CSV form for %T", v))
	}
	return t.write(c)
}

// summaryHeader is Summary's fields in its JSON order.
var summaryHeader = []string{"from", "to", "resolution", "complete", "events", "clicks", "page_views", "dwell_ms",
	"dwell_count", "avg_dwell_ms", "unique_users", "unique_users_error", "click_through_rate"}

func summaryRow(s Summary) []string {
	return []string{rfc3339(s.From), rfc3339(s.To), s.Resolution, strconv.FormatBool(s.Complete), itoa(s.Events),
		itoa(s.Clicks), itoa(s.PageViews), itoa(s.DwellMs), itoa(s.DwellCount), ftoa(s.AvgDwellMs),
		itoa(s.UniqueUsers), strconv.FormatFloat(s.UniqueUsersError, 'f', -1, 64), ftoa(s.ClickThroughRate)}
}

// timeseriesCSV is /v1/stats/timeseries?format=csv. metric may list several metrics
// (metric=clicks,page_views,unique_users), one column each, so that what a chart
// shows downloads as one table.
func (h *handler) timeseriesCSV(c echo.Context) error {
	now := h.now()
	s, err := parseSpan(c, now)
	if err != nil {
		return err
	}
	var qs []seriesQuery
	seen := map[string]bool{}
	for _, m := range strings.Split(c.QueryParam("metric"), ",") {
		q, err := newSeriesQuery(m, c.QueryParam("interval"), c.QueryParam("product"), c.QueryParams().Has("product"))
		if err != nil {
			return err
		}
		if seen[m] {
			return server.BadRequest("metric: " + m + " is listed twice")
		}
		seen[m] = true
		qs = append(qs, q)
	}
	t := csvTable{header: []string{"start"}}
	var cols []Series
	for _, q := range qs {
		out, err := h.readSeries(c.Request().Context(), q, s, now.UnixMilli())
		if err != nil {
			return err
		}
		cols = append(cols, out)
		t.header = append(t.header, q.metric)
	}
	name := "timeseries_"
	if qs[0].product != "" {
		name += qs[0].product + "_"
	}
	t.name = csvName(name+strings.Join(t.header[1:], "-")+"_"+qs[0].interval.String(), s.from, s.to)
	for i, p := range cols[0].Points {
		row := []string{rfc3339(p[0].(int64))}
		for _, col := range cols {
			row = append(row, cell(col.Points[i][1]))
		}
		t.rows = append(t.rows, row)
	}
	return t.write(c)
}

// csvTable is one CSV answer.
type csvTable struct {
	name   string // the file name offered to a browser
	header []string
	rows   [][]string
}

func (t csvTable) write(c echo.Context) error {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	w.UseCRLF = true
	w.Write(t.header)
	w.WriteAll(t.rows) // writes to memory: cannot fail
	h := c.Response().Header()
	h.Set("Content-Disposition", `attachment; filename="`+t.name+`"`)
	return c.Blob(http.StatusOK, "text/csv; charset=utf-8", b.Bytes())
}

// csvName is what_<from>_<to>.csv, the times as 20261101T1300Z. Ids in what are
// from the id alphabet, safe in a quoted file name.
func csvName(what string, from, to int64) string {
	return what + "_" + stamp(from) + "_" + stamp(to) + ".csv"
}

func stamp(ms int64) string { return time.UnixMilli(ms).UTC().Format("20060102T1504Z") }

func rfc3339(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano) }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func ftoa(f *float64) string {
	if f == nil {
		return ""
	}
	return strconv.FormatFloat(*f, 'f', -1, 64)
}

// cell is a series value: an integer, or empty for null (a bucket past its retention).
func cell(v any) string {
	if n, ok := v.(int64); ok {
		return itoa(n)
	}
	return ""
}
