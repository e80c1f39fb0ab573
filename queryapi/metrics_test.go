package main

import (
	"strings"
	"testing"
	"time"

	"github.com/clickstream/pipeline/internal/metrics/metricstest"
	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// /metrics counts requests by route pattern and status, and reads the stream's gauges
// from Redis when scraped: zeros and no groups before the first event, then the
// stream's length, each group's lag and pending entries, and the dead-letter length.
func TestMetrics(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	a := startAPI(t, s, "QUERY_KEYS", "rk_metrics")

	m := metricstest.Scrape(t, a.base+"/metrics") // open, although QUERY_KEYS is set
	m.Check(t, map[string]float64{
		`stream_length`:                  0,
		`dead_letter_length`:             0,
		`redis_errors_total{op="read"}`:  0,
		`redis_errors_total{op="stats"}`: 0,
	})
	for series := range m {
		if strings.HasPrefix(series, "consumer_group") {
			t.Errorf("%s before there is a stream", series)
		}
	}

	// Five entries; group g has read three and acked one of them; group h was created
	// after them all. Two dead letters.
	a.do("XGROUP", "CREATE", a.keys.Stream(), "g", "0", "MKSTREAM")
	for range 5 {
		a.do("XADD", a.keys.Stream(), "*", "u", "u1", "p", "p1", "k", "c")
	}
	a.do("XGROUP", "CREATE", a.keys.Stream(), "h", "$")
	res, err := a.rdb.XReadGroup(t.Context(), &redis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{a.keys.Stream(), ">"}, Count: 3}).Result()
	if err != nil || len(res[0].Messages) != 3 {
		t.Fatalf("XREADGROUP: %v, %v; want 3 entries", res, err)
	}
	a.do("XACK", a.keys.Stream(), "g", res[0].Messages[0].ID)
	a.do("XADD", a.keys.DeadLetter(), "*", "payload", "x")
	a.do("XADD", a.keys.DeadLetter(), "*", "payload", "y")

	// Some traffic: without a key, with one, a bad id, an unknown route.
	for _, r := range []struct {
		path, key string
		status    int
	}{
		{"/v1/users/u1", "", 401},
		{"/v1/users/u1", "rk_metrics", 200},
		{"/v1/users/u2", "rk_metrics", 200},
		{"/v1/users/a!b", "rk_metrics", 400},
		{"/v1/products/top?limit=5", "rk_metrics", 200},
		{"/v1/pipeline", "rk_metrics", 200},
		{"/v1/nothing/here", "rk_metrics", 404},
	} {
		auth := ""
		if r.key != "" {
			auth = "Bearer " + r.key
		}
		if got := a.getAuth(r.path, auth); got.status != r.status {
			t.Fatalf("GET %s: status %d, want %d", r.path, got.status, r.status)
		}
	}

	metricstest.Scrape(t, a.base+"/metrics").Check(t, map[string]float64{
		`stream_length`:                     5,
		`consumer_group_lag{group="g"}`:     2,
		`consumer_group_pending{group="g"}`: 2,
		`consumer_group_lag{group="h"}`:     0,
		`consumer_group_pending{group="h"}`: 0,
		`dead_letter_length`:                2,
		`redis_errors_total{op="read"}`:     0,
		`redis_errors_total{op="stats"}`:    0,
		`http_requests_total{method="GET",route="/v1/users/:id",status="401"}`:    1,
		`http_requests_total{method="GET",route="/v1/users/:id",status="200"}`:    2,
		`http_requests_total{method="GET",route="/v1/users/:id",status="400"}`:    1,
		`http_requests_total{method="GET",route="/v1/products/top",status="200"}`: 1,
		`http_requests_total{method="GET",route="/v1/pipeline",status="200"}`:     1,
		`http_requests_total{method="GET",route="unmatched",status="404"}`:        1,
		`http_requests_total{method="GET",route="/metrics",status="200"}`:         1, // the first scrape
		`http_request_duration_seconds_count{method="GET",route="/v1/users/:id"}`: 4,
	})
}

// Redis errors are counted once per failed round trip, and a scrape while Redis is
// unreachable has no stream gauges instead of wrong ones.
func TestMetricsRedisDown(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	a := startAPI(t, s, "REDIS_TIMEOUT", "300ms")
	a.expect("/v1/users/u1", 200, `{"user_id":"u1","clicks":0,"page_views":0,"dwell_ms":0,"dwell_count":0}`)
	s.Kill()
	a.expectUnavailable("/v1/users/u1")
	a.expectUnavailable("/v1/products/top")
	a.expectUnavailable("/v1/pipeline")

	first := metricstest.Scrape(t, a.base+"/metrics")
	for _, series := range []string{"stream_length", "dead_letter_length"} {
		if v, ok := first[series]; ok {
			t.Errorf("%s = %g while Redis is down, want no sample", series, v)
		}
	}
	// A read that failed after its request gave up (REDIS_TIMEOUT) is counted when it
	// ends, a moment later; a scrape's own failed read may or may not be in that scrape.
	var m metricstest.Samples
	scrapes := 1
	for ; ; scrapes++ {
		m = metricstest.Scrape(t, a.base+"/metrics")
		if m[`redis_errors_total{op="read"}`] >= 3 || scrapes == 100 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	scrapes++ // the first one
	m.Check(t, map[string]float64{
		`redis_errors_total{op="read"}`:                                        3,
		`http_requests_total{method="GET",route="/v1/users/:id",status="503"}`: 1,
	})
	if n := m[`redis_errors_total{op="stats"}`]; n != float64(scrapes) && n != float64(scrapes-1) {
		t.Errorf(`redis_errors_total{op="stats"} = %g after %d scrapes, want %d or %d`, n, scrapes, scrapes-1, scrapes)
	}
}
