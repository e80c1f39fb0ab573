package main

import "github.com/labstack/echo/v4"

// routes is ingest's whole HTTP surface (plus /healthz, /readyz and /metrics from
// server.New and metrics.Instrument, which stay open). auth guards every route listed
// here; countRejected, before it, counts its 401s too.
func routes(e *echo.Echo, h *handler, auth echo.MiddlewareFunc) {
	e.POST("/v1/events", h.postEvents, h.m.countRejected, auth)
	e.POST("/click", h.postClick, h.m.countRejected, auth) // the original article's endpoint
}
