package main

import "github.com/labstack/echo/v4"

// routes is queryapi's whole HTTP surface (plus /healthz and /readyz from server.New).
func routes(e *echo.Echo, h *handler) {
	e.GET("/v1/users/:id", h.user)
	e.GET("/v1/products/top", h.topProducts)
	e.GET("/v1/products/:id", h.product)
	e.GET("/v1/pipeline", h.pipeline)
	e.GET("/user/:id/clicks", h.userClicks) // the original article's endpoint
}
