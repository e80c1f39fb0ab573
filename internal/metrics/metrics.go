// Package metrics is the Prometheus instrumentation the three services share: a
// registry per service, request counts and durations for echo, the /metrics endpoint,
// Redis error counts, and the stream gauges that are read from Redis when scraped.
//
// Nothing here uses Prometheus's global default registry: each service builds its own
// registry in run and hands it to what it measures.
package metrics

import (
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/clickstream/pipeline/internal/server"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Instrument serves reg at /metrics on e and counts every request e answers in
// http_requests_total{route,method,status} and http_request_duration_seconds{route,method}.
//
// route is the route pattern ("/v1/users/:id"), never the URL, so the number of series
// stays bounded; a request that matches no route is "unmatched". /metrics gets no auth
// middleware: like /healthz it is for the monitoring system, and every service puts its
// keys on its API routes one by one (see each routes.go).
func Instrument(e *echo.Echo, reg *prometheus.Registry, logger *slog.Logger) {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http_requests_total",
			Help: "HTTP requests answered, by route pattern, method and status.",
		}, []string{"route", "method", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "http_request_duration_seconds",
			Help:    "Time from the request's arrival to its answer, by route pattern and method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method"}),
	}
	for code := range m.status {
		m.status[code] = strconv.Itoa(code)
	}
	reg.MustRegister(m.requests, m.duration)
	// Pre: outside the router and every other middleware, so that panics (turned into
	// 500s by the recoverer) and 404s are counted too.
	e.Pre(m.middleware)
	server.GET(e, "/metrics", echo.WrapHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      reg, // promhttp_metric_handler_errors_total
	})))
}

type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	status   [600]string // status codes as label values, so counting costs no allocation
}

func (m *httpMetrics) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			// Answer the error here (the service's error handler), so that its status is
			// known; echo then finds the response committed and does nothing more.
			c.Error(err)
		}
		route := c.Path() // set by the router once next has run
		if route == "" || errors.Is(err, echo.ErrNotFound) {
			route = "unmatched"
		}
		method := methodLabel(c.Request().Method)
		status := "other"
		if code := c.Response().Status; code >= 0 && code < len(m.status) {
			status = m.status[code]
		}
		m.requests.WithLabelValues(route, method, status).Inc()
		m.duration.WithLabelValues(route, method).Observe(time.Since(start).Seconds())
		return nil
	}
}

// methodLabel keeps the method label to the methods HTTP defines: a client can send
// any token as a method.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m
	}
	return "other"
}

// RedisErrors registers redis_errors_total{op} on reg and returns it, with a series at
// 0 for each of ops, so that dashboards and alerts see the series before the first
// error. Count one error per failed round trip, not per request or event it carried.
func RedisErrors(reg prometheus.Registerer, ops ...string) *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "redis_errors_total",
		Help: "Redis round trips that failed (timeout, connection, or an error reply), by operation.",
	}, []string{"op"})
	for _, op := range ops {
		v.WithLabelValues(op)
	}
	reg.MustRegister(v)
	return v
}
