package main

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clickstream/pipeline/internal/metrics/metricstest"
	"github.com/clickstream/pipeline/internal/redistest"
)

// After a known mix of requests, /metrics counts exactly those: events accepted and
// duplicate, every kind of refused request by its reason, requests by route pattern
// (never the URL), and events per write to Redis.
func TestMetrics(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	svc := startIngest(t, rs, map[string]string{"MAX_EVENTS_PER_REQUEST": "3", "MAX_BODY_BYTES": "1024"})
	const js = "application/json"
	// Sequential requests: each is answered before the next is sent, so each is one write.
	if got := accepted(t, svc.post(t, "/v1/events", js, `[{"user_id":"u1","product_id":"p1","event_id":"m-1"},
		{"user_id":"u1","product_id":"p2","type":"page_view","event_id":"m-2"},{"user_id":"u2","product_id":"p1"}]`, false)); got != (Accepted{3, 0}) {
		t.Fatalf("first post: %+v, want 3 accepted", got)
	}
	if got := accepted(t, svc.post(t, "/v1/events", js, `{"user_id":"u1","product_id":"p1","event_id":"m-1"}`, false)); got != (Accepted{0, 1}) {
		t.Fatalf("repeated event_id: %+v, want 1 duplicate", got)
	}
	if got := accepted(t, svc.post(t, "/click", js, `{"user_id":"u3","product_id":"p3"}`, false)); got != (Accepted{1, 0}) {
		t.Fatalf("POST /click: %+v, want 1 accepted", got)
	}
	refused := []struct {
		path, contentType, body string
		status                  int
	}{
		{"/v1/events", js, `{"user_id":"u1"}`, 400},
		{"/click", js, `{"user_id":"u1","product_id":"p1","type":"page_view"}`, 400},
		{"/v1/events", "text/plain", `{"user_id":"u1","product_id":"p1"}`, 415},
		{"/v1/events", js, "[" + strings.Repeat(`{"user_id":"u1","product_id":"p1"},`, 3) + `{"user_id":"u1","product_id":"p1"}]`, 413}, // too many
		{"/v1/events", js, `{"user_id":"` + strings.Repeat("u", 1100) + `","product_id":"p1"}`, 413},                                    // too large
	}
	for _, r := range refused {
		if a := svc.post(t, r.path, r.contentType, r.body, false); a.status != r.status {
			t.Fatalf("POST %s %.40q: status %d, want %d; body %s", r.path, r.body, a.status, r.status, a.body)
		}
	}
	for _, path := range []string{"/healthz", "/no/such/route", "/v1/events"} {
		if _, err := svc.get(svc.client, path); err != nil {
			t.Fatal(err)
		}
	}

	m := metricstest.Scrape(t, svc.base+"/metrics")
	m.Check(t, map[string]float64{
		`ingest_events_total{result="accepted"}`:                                4,
		`ingest_events_total{result="duplicate"}`:                               1,
		`ingest_rejected_requests_total{reason="invalid"}`:                      2,
		`ingest_rejected_requests_total{reason="content_type"}`:                 1,
		`ingest_rejected_requests_total{reason="too_many"}`:                     1,
		`ingest_rejected_requests_total{reason="too_large"}`:                    1,
		`ingest_rejected_requests_total{reason="unauthorized"}`:                 0,
		`ingest_rejected_requests_total{reason="timeout"}`:                      0,
		`ingest_rejected_requests_total{reason="backpressure"}`:                 0,
		`ingest_rejected_requests_total{reason="unavailable"}`:                  0,
		`ingest_rejected_requests_total{reason="internal"}`:                     0,
		`ingest_rejected_requests_total{reason="content_encoding"}`:             0,
		`ingest_rejected_requests_total{reason="inflight"}`:                     0,
		`ingest_client_gone_requests_total{result="written"}`:                   0,
		`ingest_late_writes_total{result="written"}`:                            0,
		`ingest_inflight_body_bytes`:                                            0,
		`http_requests_total{method="POST",route="/v1/events",status="202"}`:    2,
		`http_requests_total{method="POST",route="/v1/events",status="400"}`:    1,
		`http_requests_total{method="POST",route="/v1/events",status="413"}`:    2,
		`http_requests_total{method="POST",route="/v1/events",status="415"}`:    1,
		`http_requests_total{method="POST",route="/click",status="202"}`:        1,
		`http_requests_total{method="POST",route="/click",status="400"}`:        1,
		`http_requests_total{method="GET",route="/healthz",status="200"}`:       1,
		`http_requests_total{method="GET",route="unmatched",status="404"}`:      1,
		`http_requests_total{method="GET",route="/v1/events",status="405"}`:     1,
		`http_request_duration_seconds_count{method="POST",route="/v1/events"}`: 6,
		`http_request_duration_seconds_count{method="POST",route="/click"}`:     2,
		// Events sent to Redis, duplicates included, in one write per accepted request.
		`ingest_flush_events_sum`:               5,
		`ingest_flush_events_count`:             3,
		`redis_errors_total{op="write"}`:        0,
		`redis_errors_total{op="backpressure"}`: 0,
	})
	for series := range m {
		if strings.Contains(series, "/no/such/route") {
			t.Errorf("series %s carries a raw URL", series)
		}
	}
	if _, ok := m["go_goroutines"]; !ok {
		t.Error("no go_goroutines: the Go collector is not registered")
	}
	if _, ok := m["process_resident_memory_bytes"]; !ok {
		t.Error("no process_resident_memory_bytes: the process collector is not registered")
	}
}

// /metrics stays open when INGEST_KEYS is set, and refused keys are counted.
func TestMetricsWithKeys(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	svc := startIngest(t, rs, map[string]string{"INGEST_KEYS": "wk_live_metrics"})
	const body = `{"user_id":"u1","product_id":"p1"}`
	if a := svc.postAuth(t, "/v1/events", "application/json", "", body); a.status != http.StatusUnauthorized {
		t.Fatalf("no key: status %d, want 401", a.status)
	}
	if a := svc.postAuth(t, "/click", "application/json", "Bearer wrong", body); a.status != http.StatusUnauthorized {
		t.Fatalf("wrong key: status %d, want 401", a.status)
	}
	accepted(t, svc.postAuth(t, "/v1/events", "application/json", "Bearer wk_live_metrics", body))
	metricstest.Scrape(t, svc.base+"/metrics").Check(t, map[string]float64{
		`ingest_rejected_requests_total{reason="unauthorized"}`:              2,
		`ingest_events_total{result="accepted"}`:                             1,
		`http_requests_total{method="POST",route="/v1/events",status="401"}`: 1,
		`http_requests_total{method="POST",route="/click",status="401"}`:     1,
		`http_requests_total{method="POST",route="/v1/events",status="202"}`: 1,
	})
}

// A Redis that cannot be reached: every request is a 503 counted as unavailable, and
// every failed write is one Redis error.
func TestMetricsRedisUnavailable(t *testing.T) {
	t.Parallel()
	svc := startIngest(t, redistest.Start(t), map[string]string{
		"REDIS_URL":     "unix://" + filepath.Join(t.TempDir(), "none.sock"),
		"REDIS_TIMEOUT": "200ms",
	})
	for range 3 {
		if a := svc.post(t, "/v1/events", "application/json", `{"user_id":"u1","product_id":"p1"}`, false); a.status != http.StatusServiceUnavailable {
			t.Fatalf("status %d, want 503; body %s", a.status, a.body)
		}
	}
	m := metricstest.Scrape(t, svc.base+"/metrics")
	m.Check(t, map[string]float64{
		`ingest_rejected_requests_total{reason="unavailable"}`:               3,
		`ingest_events_total{result="accepted"}`:                             0,
		`http_requests_total{method="POST",route="/v1/events",status="503"}`: 3,
		// Refused before any write: Redis has not answered since ingest started.
		`redis_errors_total{op="write"}`: 0,
	})
	if n := m[`redis_errors_total{op="backpressure"}`]; n < 1 {
		t.Errorf(`redis_errors_total{op="backpressure"} = %g, want at least 1 (the check at start)`, n)
	}
}

// Backpressure refusals are counted apart from Redis being unavailable.
func TestMetricsBackpressure(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	svc := startIngest(t, rs, map[string]string{"MAX_LAG": "1", "BACKPRESSURE_INTERVAL": "20ms"})
	ctx := context.Background()
	if err := svc.rdb.XGroupCreateMkStream(ctx, svc.keys.Stream(), svc.keys.Gen(1).Group(), "$").Err(); err != nil {
		t.Fatal(err)
	}
	// The group reads nothing: after two events it is 2 > MAX_LAG behind.
	var ok, refused float64
	for i := 0; refused == 0; i++ {
		if i == 500 {
			t.Fatal("no 503 after 500 posts 10ms apart")
		}
		a := svc.post(t, "/v1/events", "application/json", `{"user_id":"u1","product_id":"p1"}`, false)
		switch a.status {
		case http.StatusAccepted:
			ok++
		case http.StatusServiceUnavailable:
			refused++
		default:
			t.Fatalf("status %d; body %s", a.status, a.body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	metricstest.Scrape(t, svc.base+"/metrics").Check(t, map[string]float64{
		`ingest_events_total{result="accepted"}`:                ok,
		`ingest_rejected_requests_total{reason="backpressure"}`: 1,
		`ingest_rejected_requests_total{reason="unavailable"}`:  0,
		`redis_errors_total{op="write"}`:                        0,
	})
}
