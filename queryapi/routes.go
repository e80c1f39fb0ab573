package main

import (
	"github.com/clickstream/pipeline/internal/server"
	"github.com/labstack/echo/v4"
)

// routes is queryapi's whole HTTP surface (plus /healthz, /readyz and /metrics from
// server.New and metrics.Instrument, which stay open). auth guards every route listed
// here, the dashboard's pages and files included. server.GET answers HEAD too.
func routes(e *echo.Echo, h *handler, auth echo.MiddlewareFunc) {
	server.GET(e, "/v1/users/:id", h.user, auth)
	server.GET(e, "/v1/products/top", h.topProducts, auth) // the older route of /v1/top-products
	server.GET(e, "/v1/products/:id", h.product, auth)
	server.GET(e, "/v1/top-products", h.topProducts, auth)
	server.GET(e, "/v1/stats/summary", h.summary, auth, statsFormat)
	server.GET(e, "/v1/stats/timeseries", h.timeseries, auth, statsFormat)
	server.GET(e, "/v1/stats/top-products", h.statsTopProducts, auth, statsFormat)
	server.GET(e, "/v1/stats/active", h.active, auth, statsFormat)
	server.GET(e, "/v1/reports/daily", h.dailyReport, auth)
	server.GET(e, "/v1/live", h.live.serve, auth)
	server.GET(e, "/v1/pipeline", h.pipeline, auth)
	server.GET(e, "/v1/rebuild", h.rebuild, auth)
	server.GET(e, "/user/:id/clicks", h.userClicks, auth) // the original article's endpoint

	// The dashboard (dashboard.go): pages, and the files they load.
	server.GET(e, "/", h.web.home, auth)
	server.GET(e, "/products/:id", h.web.productPage, auth)
	server.GET(e, "/users/:id", h.web.userPage, auth)
	server.GET(e, "/users", h.web.lookup, auth) // the lookup form without its script
	server.GET(e, "/assets/*", h.web.asset, auth)
}
