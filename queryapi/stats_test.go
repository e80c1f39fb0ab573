package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/aggregate"
	"github.com/clickstream/pipeline/internal/redistest"
)

// timed is an event and its time.
type timed struct {
	events.Event
	at int64
}

// applyScript runs the increments the way the processor's apply does, with the same
// shared Lua block (the ack is the processor's business and is tested there).
var applyIncrements = aggregate.NewScript("#!lua\napply_increments(1)\nreturn 1\n")

// apply counts evs into the test's generation as the processor would at now.
func (a *api) apply(now time.Time, evs ...timed) {
	a.t.Helper()
	in := aggregate.NewIncrements(a.gen, events.DefaultRetention)
	in.Reset(now.UnixMilli())
	for i := range evs {
		in.Add(&evs[i].Event, evs[i].at)
	}
	if err := applyIncrements.Run(context.Background(), a.rdb, in.Keys(), in.AppendArgs(nil, 1)...).Err(); err != nil {
		a.t.Fatal(err)
	}
}

// getJSON GETs path, expects 200 and decodes the answer into v.
func (a *api) getJSON(path string, v any) {
	a.t.Helper()
	r := a.get(path)
	if r.status != http.StatusOK {
		a.t.Fatalf("GET %s = %d %s", path, r.status, r.body)
	}
	if err := json.Unmarshal([]byte(r.body), v); err != nil {
		a.t.Fatalf("GET %s: %v in %s", path, err, r.body)
	}
}

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// TestStats reads statistics the apply wrote for events at known times relative to now:
// exact series with every bucket present and aligned, unique users as a union, top
// products of a range, active users, buckets past their retention, and 400s for every
// bad parameter.
func TestStats(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	a := startAPI(t, s)
	now := time.Now()
	// Three whole hours that end at least an hour before now, so that the events of the
	// last minutes (for the active users) fall outside them.
	h := time.UnixMilli(events.Hour.Start(now.UnixMilli())).Add(-4 * time.Hour)
	old := time.UnixMilli(events.Hour.Start(now.Add(-5 * 24 * time.Hour).UnixMilli()))
	ev := func(user, product string, typ events.Type, dur int64, at time.Time) timed {
		return timed{events.Event{UserID: user, ProductID: product, Type: typ, DurationMs: dur}, at.UnixMilli()}
	}
	a.apply(now,
		ev("u1", "p1", events.Click, 0, h.Add(time.Minute)),
		ev("u1", "p1", events.PageView, 0, h.Add(time.Minute+10*time.Second)),
		ev("u2", "p1", events.Click, 0, h.Add(61*time.Minute)),
		ev("u2", "p2", events.Dwell, 500, h.Add(61*time.Minute)),
		ev("u3", "p2", events.PageView, 0, h.Add(125*time.Minute)),
		ev("u1", "p2", events.Click, 0, h.Add(130*time.Minute)),  // u1 again, two hours later
		ev("u7", "p3", events.Click, 0, old.Add(30*time.Second)), // five days ago: its minute has expired
		ev("u8", "p3", events.Click, 0, now.Add(-10*time.Minute)),
		ev("u9", "p3", events.PageView, 0, now.Add(-2*time.Minute)),
	)
	span := "from=" + ms(h) + "&to=" + ms(h.Add(3*time.Hour))

	t.Run("summary", func(t *testing.T) {
		var got Summary
		a.getJSON("/v1/stats/summary?"+span, &got)
		avg, ctr := 500.0, 1.5
		want := Summary{From: h.UnixMilli(), To: h.Add(3 * time.Hour).UnixMilli(), Resolution: "hour", Complete: true,
			Events: 6, Clicks: 3, PageViews: 2, DwellMs: 500, DwellCount: 1, AvgDwellMs: &avg,
			UniqueUsers: 3, UniqueUsersError: 0.0081, ClickThroughRate: &ctr} // u1, u2, u3: a union, not 4
		if !reflect.DeepEqual(got, want) {
			t.Errorf("summary = %+v\nwant %+v", got, want)
		}
		// RFC 3339 works as well as Unix ms.
		var rfc Summary
		a.getJSON("/v1/stats/summary?from="+url.QueryEscape(h.UTC().Format(time.RFC3339))+"&to="+url.QueryEscape(h.Add(3*time.Hour).UTC().Format(time.RFC3339)), &rfc)
		if !reflect.DeepEqual(rfc, want) {
			t.Errorf("summary with RFC 3339 times = %+v, want %+v", rfc, want)
		}
		// Nothing in the range: zeros, and null for the ratios.
		a.expect("/v1/stats/summary?from="+ms(h.Add(-time.Hour))+"&to="+ms(h), 200,
			`{"from":`+ms(h.Add(-time.Hour))+`,"to":`+ms(h)+`,"resolution":"hour","complete":true,"events":0,"clicks":0,"page_views":0,"dwell_ms":0,"dwell_count":0,"avg_dwell_ms":null,"unique_users":0,"unique_users_error":0.0081,"click_through_rate":null}`)
	})

	t.Run("a minute edge past retention widens to its hour", func(t *testing.T) {
		var got Summary
		from := old.Add(20 * time.Minute)
		a.getJSON("/v1/stats/summary?from="+ms(from)+"&to="+ms(old.Add(2*time.Hour)), &got)
		if got.From != old.UnixMilli() || got.Resolution != "hour" || got.Events != 1 || !got.Complete {
			t.Errorf("summary from a minute 5 days ago = %+v, want it to cover from %d (the hour) with 1 event", got, old.UnixMilli())
		}
	})

	t.Run("timeseries", func(t *testing.T) {
		hr := func(i int) int64 { return h.Add(time.Duration(i) * time.Hour).UnixMilli() }
		for _, c := range []struct {
			query string
			want  [][2]any
		}{
			{"metric=clicks&interval=hour&" + span, [][2]any{{hr(0), 1}, {hr(1), 1}, {hr(2), 1}}},
			{"metric=events&interval=hour&" + span, [][2]any{{hr(0), 2}, {hr(1), 2}, {hr(2), 2}}},
			{"metric=unique_users&interval=hour&" + span, [][2]any{{hr(0), 1}, {hr(1), 1}, {hr(2), 2}}},
			{"metric=dwell_ms&interval=hour&" + span, [][2]any{{hr(0), 0}, {hr(1), 500}, {hr(2), 0}}},
			{"metric=page_views&interval=minute&from=" + ms(h) + "&to=" + ms(h.Add(3*time.Minute)),
				[][2]any{{h.UnixMilli(), 0}, {h.Add(time.Minute).UnixMilli(), 1}, {h.Add(2 * time.Minute).UnixMilli(), 0}}},
			// Unaligned edges: every bucket that overlaps the range, starting at its start.
			{"metric=clicks&interval=hour&from=" + ms(h.Add(30*time.Minute)) + "&to=" + ms(h.Add(90*time.Minute)), [][2]any{{hr(0), 1}, {hr(1), 1}}},
			{"metric=clicks&interval=hour&product=p1&" + span, [][2]any{{hr(0), 1}, {hr(1), 1}, {hr(2), 0}}},
			{"metric=page_views&interval=hour&product=p2&" + span, [][2]any{{hr(0), 0}, {hr(1), 0}, {hr(2), 1}}},
			{"metric=dwell_count&interval=hour&product=p2&" + span, [][2]any{{hr(0), 0}, {hr(1), 1}, {hr(2), 0}}},
			// Five days ago: the minutes have expired (null), the hour has not.
			{"metric=clicks&interval=minute&from=" + ms(old) + "&to=" + ms(old.Add(2*time.Minute)), [][2]any{{old.UnixMilli(), nil}, {old.Add(time.Minute).UnixMilli(), nil}}},
			{"metric=clicks&interval=hour&from=" + ms(old) + "&to=" + ms(old.Add(time.Hour)), [][2]any{{old.UnixMilli(), 1}}},
		} {
			var got struct {
				Points [][2]any `json:"points"`
			}
			a.getJSON("/v1/stats/timeseries?"+c.query, &got)
			want := make([][2]any, len(c.want))
			for i, p := range c.want { // as encoding/json decodes numbers
				want[i][0] = float64(p[0].(int64))
				if p[1] != nil {
					want[i][1] = float64(p[1].(int))
				}
			}
			if !reflect.DeepEqual(got.Points, want) {
				t.Errorf("%s: points %v, want %v", c.query, got.Points, want)
			}
		}
	})

	t.Run("every bucket adds up to the summary", func(t *testing.T) {
		var sum Summary
		a.getJSON("/v1/stats/summary?range=7d", &sum)
		for _, iv := range []string{"hour", "day"} {
			var series Series
			a.getJSON("/v1/stats/timeseries?metric=events&interval="+iv+"&range=7d", &series)
			var total float64
			for _, p := range series.Points {
				total += p[1].(float64)
			}
			if int64(total) != sum.Events || sum.Events != 9 {
				t.Errorf("%s series of the last 7 days adds up to %v events, summary says %d, want 9", iv, total, sum.Events)
			}
		}
	})

	t.Run("top products", func(t *testing.T) {
		a.expect("/v1/stats/top-products?"+span, 200, `{"from":`+ms(h)+`,"to":`+ms(h.Add(3*time.Hour))+
			`,"resolution":"hour","complete":true,"by":"clicks","products":[{"product_id":"p1","clicks":2,"page_views":1},{"product_id":"p2","clicks":1,"page_views":1}]}`)
		a.expect("/v1/stats/top-products?by=page_views&limit=1&"+span, 200, `{"from":`+ms(h)+`,"to":`+ms(h.Add(3*time.Hour))+
			`,"resolution":"hour","complete":true,"by":"page_views","products":[{"product_id":"p1","clicks":2,"page_views":1}]}`)
		// The first hour only, and all time: different answers.
		a.expect("/v1/stats/top-products?from="+ms(h)+"&to="+ms(h.Add(time.Hour)), 200, `{"from":`+ms(h)+`,"to":`+ms(h.Add(time.Hour))+
			`,"resolution":"hour","complete":true,"by":"clicks","products":[{"product_id":"p1","clicks":1,"page_views":1}]}`)
		a.expect("/v1/top-products", 200, `[{"product_id":"p3","clicks":2},{"product_id":"p1","clicks":2},{"product_id":"p2","clicks":1}]`)
	})

	t.Run("active", func(t *testing.T) {
		a.expect("/v1/stats/active?window=5m", 200, `{"window_seconds":300,"active_users":1}`)
		a.expect("/v1/stats/active?window=15m", 200, `{"window_seconds":900,"active_users":2}`)
		a.expect("/v1/stats/active", 200, `{"window_seconds":300,"active_users":1}`)
	})

	t.Run("bad parameters", func(t *testing.T) {
		for path, msg := range map[string]string{
			"/v1/stats/summary?from=yesterday":                              "from: must be an RFC 3339 time or Unix milliseconds",
			"/v1/stats/summary?from=1000&to=abc":                            "to: must be an RFC 3339 time or Unix milliseconds",
			"/v1/stats/summary?from=2000&to=1000":                           "from: must be before to",
			"/v1/stats/summary?from=1000&to=1000":                           "from: must be before to",
			"/v1/stats/summary?range=2h":                                    "range: must be 1h, 24h, 7d, 30d or today",
			"/v1/stats/summary?range=1h&from=1000":                          "range: give range, or from and to, not both",
			"/v1/stats/timeseries?metric=clicks&interval=week":              "interval: must be minute, hour or day",
			"/v1/stats/timeseries?metric=visits":                            "metric: must be one of events, clicks, page_views, dwell_ms, dwell_count, unique_users",
			"/v1/stats/timeseries?metric=unique_users&product=p1":           "metric: with product, must be one of clicks, page_views, dwell_ms, dwell_count",
			"/v1/stats/timeseries?metric=clicks&product=p1&interval=minute": "interval: a product's series is kept per hour and per day",
			"/v1/stats/timeseries?metric=clicks&product=a%7Bb":              "product: " + events.IDRule,
			"/v1/stats/timeseries?metric=clicks&interval=minute&range=30d":  "the range holds 43200 minute buckets; at most 10000: use a coarser interval or a shorter range",
			"/v1/stats/top-products?limit=0":                                "limit: must be an integer from 1 to 100",
			"/v1/stats/top-products?by=dwell_ms":                            "by: must be clicks or page_views",
			"/v1/stats/active?window=2h":                                    "window: must be a duration from 1m to 60m, such as 5m",
			"/v1/stats/active?window=30s":                                   "window: must be a duration from 1m to 60m, such as 5m",
		} {
			body, _ := json.Marshal(map[string]string{"error": msg})
			a.expect(path, 400, string(body))
		}
	})
}

// The all-time ranking has a route of its own; /v1/products/top stays the ranking for
// older clients, and a product whose id is "top" is read with the id percent-encoded.
func TestProductNamedTop(t *testing.T) {
	t.Parallel()
	a := startAPI(t, redistest.Start(t))
	a.product("top", 3, 2, 10, 1)
	a.product("p1", 1, 0, 0, 0)
	a.expect("/v1/top-products", 200, `[{"product_id":"top","clicks":3},{"product_id":"p1","clicks":1}]`)
	a.expect("/v1/products/top", 200, `[{"product_id":"top","clicks":3},{"product_id":"p1","clicks":1}]`)
	a.expect("/v1/products/%74op", 200, `{"product_id":"top","clicks":3,"page_views":2,"dwell_ms":10,"dwell_count":1}`)
}
