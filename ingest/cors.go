package main

import (
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/clickstream/pipeline/internal/server"
	"github.com/labstack/echo/v4"
)

// CORS for the event endpoints, so that pages on other origins may post to them, and
// only the pages of CORS_ORIGINS. A write key in a page is public: anyone can read it
// from the page and use it, from a script or curl, which send any Origin they like. What
// an origin list does stop is other sites' pages using it from their visitors' browsers,
// which always send their page's true Origin: those requests are refused with a 403
// before their body is read, and write nothing.

// cors answers preflights and checks the Origin of the event endpoints' requests.
type cors struct {
	any     bool            // CORS_ORIGINS=*
	origins map[string]bool // else, the origins allowed, as browsers write them
}

func newCORS(origins []string) *cors {
	c := &cors{origins: map[string]bool{}}
	for _, o := range origins {
		if o == "*" {
			c.any = true
		}
		c.origins[o] = true
	}
	return c
}

// errOrigin refuses a request from a page whose origin CORS_ORIGINS does not list.
var errOrigin = &server.Status{Code: http.StatusForbidden, Msg: "origin not allowed (CORS_ORIGINS)"}

// allow sets the headers of an answer to origin, a request's Origin header, and reports
// whether that origin may post.
func (c *cors) allow(h http.Header, origin string) bool {
	if c.any {
		h.Set("Access-Control-Allow-Origin", "*")
		return true
	}
	// The answer depends on the Origin: caches must keep one per origin.
	h.Add("Vary", "Origin")
	if !c.origins[origin] {
		return false
	}
	h.Set("Access-Control-Allow-Origin", origin)
	return true
}

// check is the middleware of the event endpoints. A request without an Origin header
// comes from no browser's page (a server, curl, an SDK), and one from ingest's own
// origin from its own page (the demo shop; browsers send Origin with a same-origin POST
// too): CORS is not about them.
func (c *cors) check(next echo.HandlerFunc) echo.HandlerFunc {
	return func(ctx echo.Context) error {
		origin := ctx.Request().Header.Get("Origin")
		if origin != "" && origin != ctx.Scheme()+"://"+ctx.Request().Host && !c.allow(ctx.Response().Header(), origin) {
			return errOrigin
		}
		return next(ctx)
	}
}

// preflight answers the OPTIONS request a browser sends before a request that is not
// "simple": JSON (/v1/events), a key in an Authorization header, gzip. A beacon of
// text/plain (the tracker's) needs none.
func (c *cors) preflight(ctx echo.Context) error {
	h := ctx.Response().Header()
	h.Set("Allow", "OPTIONS, POST")
	r := ctx.Request()
	origin := r.Header.Get("Origin")
	if origin == "" || r.Header.Get("Access-Control-Request-Method") == "" {
		return ctx.NoContent(http.StatusNoContent) // an OPTIONS that is no preflight
	}
	if !c.allow(h, origin) {
		return errOrigin
	}
	h.Set("Access-Control-Allow-Methods", "POST")
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Content-Encoding")
	// Chromium keeps a preflight's answer 2 hours at most, Firefox 24.
	h.Set("Access-Control-Max-Age", "7200")
	return ctx.NoContent(http.StatusNoContent)
}

// parseOrigins checks CORS_ORIGINS: "*", or origins as browsers send them in the
// Origin header, scheme://host[:port] with no path, which it writes as browsers do
// (lower case, no default port).
func parseOrigins(list []string) ([]string, error) {
	out := make([]string, 0, len(list))
	for _, o := range list {
		if o == "*" {
			if len(list) > 1 {
				return nil, errors.New(`"*" allows every origin: list origins, or "*" alone`)
			}
			return list, nil
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || strings.Contains(u.Host, "*") {
			return nil, errors.New("each must be an origin, scheme://host[:port] (https://shop.example.com), or \"*\" alone; " + o + " is not")
		}
		host, port := strings.ToLower(u.Hostname()), u.Port()
		if strings.Contains(host, ":") {
			host = "[" + host + "]" // IPv6
		}
		if port != "" && !(u.Scheme == "http" && port == "80") && !(u.Scheme == "https" && port == "443") {
			host += ":" + port
		}
		out = append(out, strings.ToLower(u.Scheme)+"://"+host)
	}
	return out, nil
}
