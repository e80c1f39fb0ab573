package main

import "github.com/labstack/echo/v4"

// routes is queryapi's whole HTTP surface (plus /healthz, /readyz and /metrics from
// server.New and metrics.Instrument, which stay open). auth guards every route listed
// here.
func routes(e *echo.Echo, h *handler, auth echo.MiddlewareFunc) {
	e.GET("/v1/users/:id", h.user, auth)
	e.GET("/v1/products/top", h.topProducts, auth)
	e.GET("/v1/products/:id", h.product, auth)
	e.GET("/v1/top-products", h.topProducts, auth) // all time; /v1/products/top is its older alias
	e.GET("/v1/stats/summary", h.summary, auth)
	e.GET("/v1/stats/timeseries", h.timeseries, auth)
	e.GET("/v1/stats/top-products", h.statsTopProducts, auth)
	e.GET("/v1/stats/active", h.active, auth)
	e.GET("/v1/pipeline", h.pipeline, auth)
	e.GET("/v1/rebuild", h.rebuild, auth)
	e.GET("/user/:id/clicks", h.userClicks, auth) // the original article's endpoint
}
