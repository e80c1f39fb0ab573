package main

import (
	"mime"
	"net/http"
	"strconv"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/server"
	"github.com/labstack/echo/v4"
)

// browser serves the collector in the browser: the tracker script, its endpoint, CORS
// and the demo shop.
type browser struct {
	h      *handler
	keys   *server.Keyring
	cors   *cors
	script *script
	demo   *demoShop // nil without DEMO
}

func newBrowser(h *handler) *browser {
	c := h.cfg.Browser
	b := &browser{h: h, keys: server.NewKeyring("ingest", h.cfg.Keys), cors: newCORS(c.CORSOrigins), script: newScript(trackerSource)}
	if c.Demo {
		key := ""
		if len(h.cfg.Keys) > 0 {
			key = h.cfg.Keys[0]
			h.logger.Warn("DEMO: the demo shop's pages carry the first of INGEST_KEYS, as every page with the tracker carries a write key")
		}
		b.demo = newDemoShop(key, c.DemoLink)
	}
	h.logger.Info("browser collector", "cors_origins", c.CORSOrigins, "tracker_bytes", len(b.script.body),
		"tracker_gzip_bytes", len(b.script.gz), "demo", c.Demo, "demo_dashboard_url", c.DemoLink)
	return b
}

// postCollect is the tracker's endpoint: the events of /v1/events, also in a text/plain
// body (what navigator.sendBeacon sends without a CORS preflight), with the write key
// also in the URL (?key=) or in the body (the envelope of events.DecodeCollect), since
// a beacon cannot set headers. Otherwise it is /v1/events: the same validation, dedup,
// limits, backpressure, all-or-nothing, and the same 202.
func (b *browser) postCollect(c echo.Context) error {
	r := c.Request()
	format, err := collectFormat(r)
	if err != nil {
		return err
	}
	// Without a key in the header or the URL, the body must be read before the request
	// can be refused: that is the price of a key in the body, bounded by MAX_BODY_BYTES
	// and MAX_INFLIGHT_BYTES like any body.
	authed := b.keys.Open() || b.keys.Request(r) || b.keys.Match(r.URL.Query().Get("key"))
	body, err := b.h.read(c)
	if err != nil {
		return err
	}
	defer body.close()
	res, derr := events.DecodeCollect(body.data, format, b.h.cfg.MaxEvents, b.h.now())
	if !authed && !b.keys.Match(res.WriteKey) {
		return b.keys.Unauthorized(c)
	}
	if derr != nil {
		return decodeError(derr, b.h.cfg.MaxEvents)
	}
	acc, err := b.h.write(c, res.Events)
	if err != nil {
		return err
	}
	return answerAccepted(c, acc)
}

// collectFormat is requestFormat with text/plain, which is JSON: a beacon of a string
// is text/plain;charset=UTF-8, and a page's fetch of text/plain needs no preflight.
func collectFormat(r *http.Request) (events.Format, error) {
	if _, err := contentEncoding(r); err != nil {
		return 0, err
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err == nil && mt == "text/plain" {
		return events.JSON, nil
	}
	format, err := requestFormat(r)
	if err != nil {
		return 0, &server.Status{Code: http.StatusUnsupportedMediaType,
			Msg: "Content-Type must be text/plain or application/json (JSON), or application/x-ndjson, got " + strconv.Quote(r.Header.Get("Content-Type"))}
	}
	return format, nil
}
