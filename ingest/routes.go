package main

import "github.com/labstack/echo/v4"

// routes is ingest's whole HTTP surface (plus /healthz and /readyz from server.New,
// which stay open). auth guards every route listed here.
func routes(e *echo.Echo, h *handler, auth echo.MiddlewareFunc) {
	e.POST("/v1/events", h.postEvents, auth)
	e.POST("/click", h.postClick, auth) // the original article's endpoint
}
