package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/clickstream/pipeline/internal/redistest"
)

// trackerBound is the README's bound on the tracker's size, gzip-compressed as ingest
// serves it: it loads on every page of a site.
const trackerBound = 2048

// GET /t.js: the script, gzip-compressed for a browser, within the bound, cacheable
// and revalidated by its ETag; open with INGEST_KEYS set, as a <script> tag sends no key.
func TestTrackerScript(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	svc := startIngest(t, rs, map[string]string{"INGEST_KEYS": "wk_1"})
	// Go's client asks for gzip and decompresses by itself unless asked explicitly.
	a := svc.request(t, http.MethodGet, "/t.js", map[string]string{"Accept-Encoding": "gzip, deflate, br"}, "")
	if a.status != http.StatusOK {
		t.Fatalf("GET /t.js: %d %s", a.status, a.body)
	}
	for h, want := range map[string]string{
		"Content-Type":                 "text/javascript; charset=utf-8",
		"Content-Encoding":             "gzip",
		"Cache-Control":                "public, max-age=3600",
		"Vary":                         "Accept-Encoding",
		"Cross-Origin-Resource-Policy": "cross-origin",
	} {
		if got := a.header.Get(h); got != want {
			t.Errorf("GET /t.js: %s %q, want %q", h, got, want)
		}
	}
	if len(a.body) > trackerBound {
		t.Errorf("t.js is %d bytes gzip-compressed, over the bound of %d", len(a.body), trackerBound)
	}
	zr, err := gzip.NewReader(bytes.NewReader(a.body))
	if err != nil {
		t.Fatal(err)
	}
	js, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("t.js: %d bytes, %d gzip-compressed (bound %d)", len(js), len(a.body), trackerBound)
	for _, s := range []string{"sendBeacon", "/v1/collect", "visibilitychange", "pagehide", "pushState", "data-product-id"} {
		if !bytes.Contains(js, []byte(s)) {
			t.Errorf("t.js does not mention %s", s)
		}
	}
	if bytes.Contains(js, []byte("\n//")) || bytes.Contains(js, []byte("\n ")) {
		t.Errorf("t.js is served with its comment lines or indentation")
	}

	// Without gzip, the same script.
	plain := svc.request(t, http.MethodGet, "/t.js", map[string]string{"Accept-Encoding": "gzip;q=0"}, "")
	if plain.status != http.StatusOK || plain.header.Get("Content-Encoding") != "" || !bytes.Equal(plain.body, js) {
		t.Errorf("GET /t.js without gzip: %d, Content-Encoding %q, %d bytes; want the %d bytes of the script", plain.status,
			plain.header.Get("Content-Encoding"), len(plain.body), len(js))
	}
	etag := a.header.Get("ETag")
	if !strings.HasPrefix(etag, `W/"`) || plain.header.Get("ETag") != etag {
		t.Fatalf("ETags %q and %q: want one weak ETag for both", etag, plain.header.Get("ETag"))
	}
	for _, inm := range []string{etag, strings.TrimPrefix(etag, "W/"), `"other", ` + etag, "*"} {
		a := svc.request(t, http.MethodGet, "/t.js", map[string]string{"If-None-Match": inm}, "")
		if a.status != http.StatusNotModified || len(a.body) != 0 || a.header.Get("ETag") != etag {
			t.Errorf("If-None-Match %s: %d with %d bytes, ETag %q; want 304, no body", inm, a.status, len(a.body), a.header.Get("ETag"))
		}
	}
	if a := svc.request(t, http.MethodGet, "/t.js", map[string]string{"If-None-Match": `"old"`}, ""); a.status != http.StatusOK {
		t.Errorf("If-None-Match of an old version: %d, want 200", a.status)
	}
	if a := svc.request(t, http.MethodHead, "/t.js", nil, ""); a.status != http.StatusOK || len(a.body) != 0 {
		t.Errorf("HEAD /t.js: %d with %d bytes", a.status, len(a.body))
	}
}

// The demo shop is there only with DEMO set; its pages carry the tracker with the
// product and the write key.
func TestDemoShop(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	off := startIngest(t, rs, nil)
	if a := off.request(t, http.MethodGet, "/demo/", nil, ""); a.status != http.StatusNotFound {
		t.Errorf("GET /demo/ without DEMO: %d, want 404", a.status)
	}
	svc := startIngest(t, rs, map[string]string{"DEMO": "1", "INGEST_KEYS": "wk_demo,wk_2", "DEMO_DASHBOARD_URL": "http://127.0.0.1:8081"})
	host := strings.TrimPrefix(svc.base, "http://")
	a := svc.request(t, http.MethodGet, "/demo/p/sku-2", nil, "")
	if a.status != http.StatusOK || !strings.HasPrefix(a.header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /demo/p/sku-2: %d %s", a.status, a.header.Get("Content-Type"))
	}
	page := string(a.body)
	for _, s := range []string{
		`<script defer src="http://` + host + `/t.js" data-key="wk_demo" data-product="sku-2"></script>`,
		`data-product-id="sku-2">Add to cart`,
		`href="/demo/p/sku-1" data-product-id="sku-1"`,
		`href="http://127.0.0.1:8081/products/sku-2"`,
	} {
		if !strings.Contains(page, s) {
			t.Errorf("the product page does not hold %s:\n%s", s, page)
		}
	}
	a = svc.request(t, http.MethodGet, "/demo/", nil, "")
	if a.status != http.StatusOK || !strings.Contains(string(a.body), `<script defer src="http://`+host+`/t.js" data-key="wk_demo"></script>`) {
		t.Errorf("GET /demo/: %d, without the tag (no product):\n%s", a.status, a.body)
	}
	if a := svc.request(t, http.MethodGet, "/demo/p/nope", nil, ""); a.status != http.StatusNotFound {
		t.Errorf("GET /demo/p/nope: %d, want 404", a.status)
	}
}
