package main

import (
	"errors"
	"net/http"

	"github.com/clickstream/pipeline/internal/metrics"
	"github.com/clickstream/pipeline/internal/server"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// ingestMetrics are ingest's own measurements; requests by route and status come from
// metrics.Instrument. Each is one atomic add per request or per flush, never per event.
type ingestMetrics struct {
	accepted, duplicates    prometheus.Counter     // ingest_events_total{result}
	rejected                *prometheus.CounterVec // ingest_rejected_requests_total{reason}
	goneWritten, goneUnconf prometheus.Counter     // ingest_client_gone_requests_total{result}
	lateWritten, lateUnconf prometheus.Counter     // ingest_late_writes_total{result}
	unacked                 *prometheus.CounterVec // ingest_unacknowledged_writes_total{reason}
	flushEvents             prometheus.Histogram   // ingest_flush_events
	writeErrors             prometheus.Counter     // redis_errors_total{op="write"}
	checkErrors             prometheus.Counter     // redis_errors_total{op="backpressure"}
	reg                     prometheus.Registerer
}

// Reasons of ingest_rejected_requests_total.
const (
	reasonInvalid      = "invalid"      // 400: malformed JSON or an invalid event
	reasonUnauthorized = "unauthorized" // 401
	reasonTimeout      = "timeout"      // 408: the body did not arrive in time
	reasonTooLarge     = "too_large"    // 413: body over MAX_BODY_BYTES
	reasonTooMany      = "too_many"     // 413: more than MAX_EVENTS_PER_REQUEST events
	reasonContentType  = "content_type" // 415: Content-Type
	reasonBackpressure = "backpressure" // 503: MAX_LAG or MAX_REDIS_MEMORY
	reasonUnavailable  = "unavailable"  // 503: Redis unreachable, slow or refusing writes
	reasonInternal     = "internal"     // 500: a bug
)

// More reasons: the limits on what ingest takes in.
const (
	reasonEncoding = "content_encoding" // 415: Content-Encoding other than identity or gzip
	reasonInflight = "inflight"         // 503: MAX_INFLIGHT_BYTES of bodies being received
	reasonOrigin   = "origin"           // 403: a page of an origin CORS_ORIGINS does not list
)

func newIngestMetrics(reg prometheus.Registerer) *ingestMetrics {
	results := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ingest_events_total",
		Help: "Events written to the stream now (accepted) or not written again because their event_id was seen within DEDUP_WINDOW (duplicate), counted when Redis replies, also when the client no longer hears the answer.",
	}, []string{"result"})
	gone := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ingest_client_gone_requests_total",
		Help: "Requests whose client closed its connection (or its sending half) while their events were being written, by outcome: written (in the stream), or unconfirmed (Redis refused the write, or did not reply in time and may still have written it).",
	}, []string{"result"})
	late := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ingest_late_writes_total",
		Help: "Requests answered 503 because Redis had not replied in time while it held their write, by what Redis then replied: written (in the stream despite the 503), or unconfirmed (an error or still no reply: it may have been written).",
	}, []string{"result"})
	unacked := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ingest_unacknowledged_writes_total",
		Help: "Requests answered 503 with some of their events in the stream (counted in ingest_events_total): replicas (the master holds them, but fewer than WRITE_REPLICAS replicas confirmed them in time) or partial (some of their partitions were written, another failed).",
	}, []string{"reason"})
	unacked.WithLabelValues("replicas")
	unacked.WithLabelValues("partial")
	rejected := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ingest_rejected_requests_total",
		Help: "Requests to the event endpoints answered with an error (nothing written), by reason.",
	}, []string{"reason"})
	for _, r := range []string{reasonInvalid, reasonUnauthorized, reasonTimeout, reasonTooLarge, reasonTooMany,
		reasonContentType, reasonEncoding, reasonBackpressure, reasonInflight, reasonUnavailable, reasonInternal, reasonOrigin} {
		rejected.WithLabelValues(r)
	}
	flush := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "ingest_flush_events",
		Help:    "Events per write to Redis (one round trip shared by the requests waiting).",
		Buckets: prometheus.ExponentialBuckets(1, 4, 9), // 1 … 65536
	})
	reg.MustRegister(results, rejected, gone, late, unacked, flush)
	redisErrors := metrics.RedisErrors(reg, "write", "backpressure")
	return &ingestMetrics{
		accepted:    results.WithLabelValues("accepted"),
		duplicates:  results.WithLabelValues("duplicate"),
		rejected:    rejected,
		goneWritten: gone.WithLabelValues("written"),
		goneUnconf:  gone.WithLabelValues("unconfirmed"),
		lateWritten: late.WithLabelValues("written"),
		lateUnconf:  late.WithLabelValues("unconfirmed"),
		unacked:     unacked,
		flushEvents: flush,
		writeErrors: redisErrors.WithLabelValues("write"),
		checkErrors: redisErrors.WithLabelValues("backpressure"),
		reg:         reg,
	}
}

// watchLimits exports how close ingest is to MAX_CONNECTIONS and MAX_INFLIGHT_BYTES,
// read when scraped.
func (m *ingestMetrics) watchLimits(ln *server.LimitListener, bodies *bodyLimit) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ingest_open_connections",
			Help: "HTTP connections open now (at most MAX_CONNECTIONS).",
		}, func() float64 { return float64(ln.Open()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ingest_inflight_body_bytes",
			Help: "Bytes of request bodies held now, from before they are read until they are answered (at most MAX_INFLIGHT_BYTES).",
		}, func() float64 { return float64(bodies.used.Load()) }),
	)
}

// countRejected counts every error answer of the route it guards by its reason. It
// must come before the auth middleware, so that it sees the 401s too.
func (m *ingestMetrics) countRejected(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		err := next(c)
		if err != nil {
			m.rejected.WithLabelValues(rejectReason(err)).Inc()
		}
		return err
	}
}

// rejectReason maps an error of the event endpoints to its reason, by the type and
// status that the central error handler answers it with (see server.classify). In
// ingest a *server.Status 413 is only ever "too many events" and a *server.Status 503
// is backpressure unless it is errBodiesInFlight: a body over the limit is a
// *sizeError, and Redis failing is a *server.Unavailable.
func rejectReason(err error) string {
	var st *server.Status
	var un *server.Unavailable
	var size *sizeError
	var enc *encodingError
	var many *tooManyCalls
	switch {
	case err == errBodiesInFlight:
		return reasonInflight
	case errors.As(err, &many):
		return reasonTooMany
	case errors.As(err, &size):
		return reasonTooLarge
	case errors.As(err, &enc):
		return reasonEncoding
	case errors.As(err, &st):
		switch st.Code {
		case http.StatusUnauthorized:
			return reasonUnauthorized
		case http.StatusForbidden:
			return reasonOrigin
		case http.StatusRequestTimeout:
			return reasonTimeout
		case http.StatusRequestEntityTooLarge:
			return reasonTooMany
		case http.StatusUnsupportedMediaType:
			return reasonContentType
		case http.StatusServiceUnavailable:
			return reasonBackpressure
		case http.StatusBadRequest:
			return reasonInvalid
		}
	case errors.As(err, &un):
		return reasonUnavailable
	}
	return reasonInternal
}
