package metrics_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/clickstream/pipeline/internal/metrics"
	"github.com/clickstream/pipeline/internal/metrics/metricstest"
	"github.com/clickstream/pipeline/internal/server"
	"github.com/labstack/echo/v4"
)

// Requests are counted by route pattern, method and the status the client got: errors
// as the service's error handler answers them, panics as 500s, unknown paths as
// "unmatched", unknown methods as "other", a HEAD as HEAD; the raw URL never becomes a
// label.
func TestInstrument(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	e := server.New(logger, func(context.Context) error { return nil })
	metrics.Instrument(e, metrics.NewRegistry(), logger)
	server.GET(e, "/v1/items/:id", func(c echo.Context) error {
		switch c.Param("id") {
		case "bad":
			return server.BadRequest("id: bad")
		case "boom":
			panic("boom")
		}
		return c.JSON(http.StatusOK, c.Param("id"))
	}, server.RequireKey("test", []string{"k"}))

	for _, r := range []struct {
		method, path, key string
		status            int
	}{
		{"GET", "/v1/items/a", "k", 200},
		{"GET", "/v1/items/b", "k", 200},
		{"GET", "/v1/items/bad", "k", 400},
		{"GET", "/v1/items/boom", "k", 500},
		{"GET", "/v1/items/a", "", 401},
		{"HEAD", "/v1/items/a", "k", 200},
		{"POST", "/v1/items/a", "k", 405},
		{"GET", "/v1/nothing/x1", "", 404},
		{"GET", "/v1/nothing/x2", "", 404},
		{"BREW", "/v1/items/a", "k", 405},
		{"GET", "/healthz", "", 200},
	} {
		req := httptest.NewRequest(r.method, r.path, nil)
		if r.key != "" {
			req.Header.Set("Authorization", "Bearer "+r.key)
		}
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		if rec.Code != r.status {
			t.Fatalf("%s %s: status %d, want %d", r.method, r.path, rec.Code, r.status)
		}
	}

	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil)) // no key: open
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: status %d, want 200", rec.Code)
	}
	m, err := metricstest.Parse(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	m.Check(t, map[string]float64{
		`http_requests_total{method="GET",route="/v1/items/:id",status="200"}`:    2,
		`http_requests_total{method="GET",route="/v1/items/:id",status="400"}`:    1,
		`http_requests_total{method="GET",route="/v1/items/:id",status="500"}`:    1,
		`http_requests_total{method="GET",route="/v1/items/:id",status="401"}`:    1,
		`http_requests_total{method="HEAD",route="/v1/items/:id",status="200"}`:   1,
		`http_requests_total{method="POST",route="/v1/items/:id",status="405"}`:   1,
		`http_requests_total{method="other",route="/v1/items/:id",status="405"}`:  1,
		`http_requests_total{method="GET",route="unmatched",status="404"}`:        2,
		`http_requests_total{method="GET",route="/healthz",status="200"}`:         1,
		`http_request_duration_seconds_count{method="GET",route="/v1/items/:id"}`: 5,
		`http_request_duration_seconds_count{method="GET",route="unmatched"}`:     2,
		`promhttp_metric_handler_errors_total{cause="gathering"}`:                 0,
	})
	var requests int
	for series, v := range m {
		if strings.Contains(series, "/v1/nothing") || strings.Contains(series, "/v1/items/a") {
			t.Errorf("series %s carries a URL", series)
		}
		if strings.HasPrefix(series, "http_requests_total{") {
			requests += int(v)
		}
	}
	if requests != 11 {
		t.Errorf("http_requests_total adds up to %d, want 11 (every request but the scrape)", requests)
	}
	for _, series := range []string{"go_goroutines", "process_start_time_seconds"} {
		if _, ok := m[series]; !ok {
			t.Errorf("no %s", series)
		}
	}
}
