package main

import "github.com/labstack/echo/v4"

// routes is ingest's whole HTTP surface (plus /healthz and /readyz from server.New).
func routes(e *echo.Echo, h *handler) {
	e.POST("/v1/events", h.postEvents)
	e.POST("/click", h.postClick) // the original article's endpoint
}
