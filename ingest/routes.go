package main

import (
	"github.com/clickstream/pipeline/events"
	"github.com/labstack/echo/v4"
)

// routes is ingest's whole HTTP surface (plus /healthz, /readyz and /metrics from
// server.New and metrics.Instrument, which stay open). auth, or the Segment handlers'
// own check, guards every route listed here; countRejected, before it, counts the 401s
// too.
func routes(e *echo.Echo, h *handler, auth echo.MiddlewareFunc) {
	e.POST("/v1/events", h.postEvents, h.m.countRejected, auth)
	e.POST("/click", h.postClick, h.m.countRejected, auth) // the original article's endpoint

	// Segment's HTTP Tracking API (segment.go). Its handlers check the key themselves:
	// it may also come in the body.
	s := newSegment(h)
	e.POST("/v1/batch", s.post(events.SegmentBatch), h.m.countRejected)
	e.POST("/v1/import", s.post(events.SegmentBatch), h.m.countRejected) // batch's older name
	e.POST("/v1/track", s.post(events.SegmentTrack), h.m.countRejected)
	e.POST("/v1/page", s.post(events.SegmentPage), h.m.countRejected)
	e.POST("/v1/screen", s.post(events.SegmentScreen), h.m.countRejected)
	e.POST("/v1/identify", s.post(events.SegmentIdentify), h.m.countRejected)
	e.POST("/v1/group", s.post(events.SegmentGroup), h.m.countRejected)
	e.POST("/v1/alias", s.post(events.SegmentAlias), h.m.countRejected)
}
