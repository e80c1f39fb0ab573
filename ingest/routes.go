package main

import (
	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/server"
	"github.com/labstack/echo/v4"
)

// routes is ingest's whole HTTP surface (plus /healthz, /readyz and /metrics from
// server.New and metrics.Instrument, which stay open). auth, or the Segment and
// collect handlers' own check, guards every event route listed here; countRejected,
// before it, counts the 401s too, and the CORS check (cors.go), after it, refuses the
// pages of origins CORS_ORIGINS does not list; every event route answers preflights.
func routes(e *echo.Echo, h *handler, auth echo.MiddlewareFunc) {
	b := newBrowser(h)
	post := func(path string, handle echo.HandlerFunc, m ...echo.MiddlewareFunc) {
		e.POST(path, handle, append([]echo.MiddlewareFunc{h.m.countRejected, b.cors.check}, m...)...)
		e.OPTIONS(path, b.cors.preflight)
	}
	post("/v1/events", h.postEvents, auth)
	post("/click", h.postClick, auth) // the original article's endpoint

	// Segment's HTTP Tracking API (segment.go). Its handlers check the key themselves:
	// it may also come in the body.
	s := newSegment(h)
	post("/v1/batch", s.post(events.SegmentBatch))
	post("/v1/import", s.post(events.SegmentBatch)) // batch's older name
	post("/v1/track", s.post(events.SegmentTrack))
	post("/v1/page", s.post(events.SegmentPage))
	post("/v1/screen", s.post(events.SegmentScreen))
	post("/v1/identify", s.post(events.SegmentIdentify))
	post("/v1/group", s.post(events.SegmentGroup))
	post("/v1/alias", s.post(events.SegmentAlias))

	// The collector in the browser (tracker.go): the script, open to every page, and its
	// endpoint, which checks the key itself (it may come in the URL or the body).
	server.GET(e, "/t.js", b.script.serve)
	post("/v1/collect", b.postCollect)
	if b.demo != nil {
		server.GET(e, "/demo", b.demo.page)
		server.GET(e, "/demo/", b.demo.page)
		server.GET(e, "/demo/p/:id", b.demo.page)
	}
}
