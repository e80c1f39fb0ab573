package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"

	"github.com/clickstream/pipeline/internal/config"
	"github.com/labstack/echo/v4"
)

// The collector in the browser: ingest serves the tracker script (web/t.js) at /t.js,
// takes its beacons at POST /v1/collect (collect.go), answers CORS for the event
// endpoints (cors.go) and, with DEMO, serves a demo shop that uses it (demo.go).

// BrowserConfig is the browser collector's part of the configuration.
type BrowserConfig struct {
	CORSOrigins []string // CORS_ORIGINS: origins whose pages may post events; ["*"]: any
	Demo        bool     // DEMO: serve the demo shop at /demo/
	DemoLink    string   // DEMO_DASHBOARD_URL: the dashboard the demo shop links to
}

func readBrowserConfig(r *config.Reader) BrowserConfig {
	raw := r.Names("CORS_ORIGINS", "*")
	origins, err := parseOrigins(raw)
	if err != nil {
		r.Invalid("CORS_ORIGINS", strings.Join(raw, ","), err.Error())
	}
	return BrowserConfig{
		CORSOrigins: origins,
		Demo:        r.Bool("DEMO", false),
		DemoLink:    r.String("DEMO_DASHBOARD_URL", ""),
	}
}

//go:embed web/t.js
var trackerSource []byte

// script is a file served whole from memory, gzip-compressed once, with a validator.
type script struct {
	body, gz []byte
	etag     string // weak: the plain and the gzip body are the same script
}

func newScript(src []byte) *script {
	body := stripComments(src)
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write(body)
	zw.Close()
	sum := sha256.Sum256(body)
	return &script{body: body, gz: buf.Bytes(), etag: `W/"` + hex.EncodeToString(sum[:12]) + `"`}
}

// stripComments drops the lines that are only a // comment, blank lines and every
// line's indentation: the source stays readable, the script served is small. Nothing
// else is touched (a line of code keeps a trailing comment), so what runs is the
// source's code, line for line.
func stripComments(src []byte) []byte {
	var out []byte
	for line := range strings.Lines(string(src)) {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "//") {
			continue
		}
		out = append(out, t...)
		out = append(out, '\n')
	}
	return out
}

// serve answers GET and HEAD: 304 to a request that holds the current version, else the
// script, gzip-compressed when the client takes it. Browsers keep it for an hour, then
// ask again with the ETag; a new version reaches every page within the hour.
func (s *script) serve(c echo.Context) error {
	h := c.Response().Header()
	h.Set("Cache-Control", "public, max-age=3600")
	h.Set("ETag", s.etag)
	h.Set("Vary", "Accept-Encoding")
	// Sites that isolate themselves (Cross-Origin-Embedder-Policy) load only scripts
	// that say they may be embedded.
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	h.Set("X-Content-Type-Options", "nosniff")
	if etagMatch(c.Request().Header.Get("If-None-Match"), s.etag) {
		return c.NoContent(http.StatusNotModified)
	}
	body := s.body
	if acceptsGzip(c.Request().Header.Get("Accept-Encoding")) {
		body = s.gz
		h.Set("Content-Encoding", "gzip")
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	return c.Blob(http.StatusOK, "text/javascript; charset=utf-8", body)
}

// etagMatch is If-None-Match's weak comparison (RFC 9110 13.1.2): "*" or any tag of
// the list, W/ or not, equal to etag.
func etagMatch(header, etag string) bool {
	want := strings.TrimPrefix(etag, "W/")
	for tag := range strings.SplitSeq(header, ",") {
		tag = strings.TrimSpace(tag)
		if tag == "*" || strings.TrimPrefix(tag, "W/") == want {
			return true
		}
	}
	return false
}

// acceptsGzip reports whether Accept-Encoding lists gzip without q=0.
func acceptsGzip(header string) bool {
	for enc := range strings.SplitSeq(header, ",") {
		name, params, _ := strings.Cut(enc, ";")
		if !strings.EqualFold(strings.TrimSpace(name), "gzip") {
			continue
		}
		q := strings.TrimSpace(params)
		if v, ok := strings.CutPrefix(strings.ReplaceAll(q, " ", ""), "q="); ok {
			f, err := strconv.ParseFloat(v, 64)
			return err == nil && f > 0
		}
		return true
	}
	return false
}
