package main

import (
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/clickstream/pipeline/internal/config"
	"github.com/clickstream/pipeline/internal/metrics/metricstest"
	"github.com/clickstream/pipeline/internal/redistest"
)

// preflight sends the OPTIONS request a browser sends from origin before a POST with
// the given headers.
func (s *ingestUnderTest) preflight(t *testing.T, path, origin, headers string) answer {
	t.Helper()
	return s.request(t, http.MethodOptions, path, map[string]string{
		"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": headers}, "")
}

// With CORS_ORIGINS listing origins, the pages of those origins may post (preflights
// answered, Access-Control-Allow-Origin on every answer, the 401 too) and the pages of
// any other get 403 and write nothing; requests without an Origin (no browser) are not
// concerned. The preflight needs no key.
func TestCORSOrigins(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	const shop, evil = "https://shop.example.com", "https://evil.example.net"
	const key = "wk_public_1"
	svc := startIngest(t, rs, map[string]string{"INGEST_KEYS": key,
		"CORS_ORIGINS": "https://SHOP.example.com:443/, http://localhost:3000"})
	const ev = `{"user_id":"u1","product_id":"p1"}`

	for _, path := range []string{"/v1/events", "/v1/collect", "/v1/batch"} {
		a := svc.preflight(t, path, shop, "authorization,content-type")
		if a.status != http.StatusNoContent {
			t.Fatalf("preflight of %s from %s: %d %s, want 204", path, shop, a.status, a.body)
		}
		for h, want := range map[string]string{
			"Access-Control-Allow-Origin":  shop,
			"Access-Control-Allow-Methods": "POST",
			"Access-Control-Allow-Headers": "Authorization, Content-Type, Content-Encoding",
			"Access-Control-Max-Age":       "7200",
			"Vary":                         "Origin",
		} {
			if got := a.header.Get(h); got != want {
				t.Errorf("preflight of %s from %s: %s %q, want %q", path, shop, h, got, want)
			}
		}
		a = svc.preflight(t, path, evil, "content-type")
		if a.status != http.StatusForbidden || a.header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("preflight of %s from %s: %d, Access-Control-Allow-Origin %q; want 403 without it", path, evil, a.status, a.header.Get("Access-Control-Allow-Origin"))
		}
		errorOf(t, a)
	}
	if a := svc.preflight(t, "/v1/events", "http://localhost:3000", "content-type"); a.status != http.StatusNoContent ||
		a.header.Get("Access-Control-Allow-Origin") != "http://localhost:3000" {
		t.Errorf("preflight from the second origin: %d, Access-Control-Allow-Origin %q", a.status, a.header.Get("Access-Control-Allow-Origin"))
	}

	// A page of another origin writes nothing, whatever its key and body.
	for _, tc := range []struct{ path, contentType, body string }{
		{"/v1/events", "application/json", ev},
		{"/v1/collect", "text/plain", envelope(key, ev)},
		{"/v1/collect?key=" + key, "text/plain", ev},
		{"/click", "application/json", ev},
	} {
		a := svc.request(t, http.MethodPost, tc.path, map[string]string{"Origin": evil, "Content-Type": tc.contentType, "Authorization": "Bearer " + key}, tc.body)
		if a.status != http.StatusForbidden {
			t.Errorf("POST %s from %s: %d %s, want 403", tc.path, evil, a.status, a.body)
			continue
		}
		if e := errorOf(t, a); *e.Error != "origin not allowed (CORS_ORIGINS)" {
			t.Errorf("POST %s from %s: error %q", tc.path, evil, *e.Error)
		}
	}
	if n := svc.streamLen(t); n != 0 {
		t.Fatalf("stream holds %d entries after posts from a refused origin, want 0", n)
	}
	m := metricstest.Scrape(t, svc.base+"/metrics")
	if got := m[`ingest_rejected_requests_total{reason="origin"}`]; got != 4 {
		t.Errorf(`ingest_rejected_requests_total{reason="origin"} = %v, want 4`, got)
	}

	// The shop's page: accepted, and told so in a way its script may read.
	a := svc.request(t, http.MethodPost, "/v1/collect", map[string]string{"Origin": shop, "Content-Type": "text/plain"}, envelope(key, ev))
	accepted(t, a)
	if got := a.header.Get("Access-Control-Allow-Origin"); got != shop {
		t.Errorf("beacon from %s: Access-Control-Allow-Origin %q", shop, got)
	}
	a = svc.request(t, http.MethodPost, "/v1/events", map[string]string{"Origin": shop, "Content-Type": "application/json"}, ev)
	if a.status != http.StatusUnauthorized || a.header.Get("Access-Control-Allow-Origin") != shop {
		t.Errorf("POST without a key from %s: %d, Access-Control-Allow-Origin %q; want 401 the page can read", shop, a.status, a.header.Get("Access-Control-Allow-Origin"))
	}
	// No Origin: a server or curl, not a page.
	accepted(t, svc.postAuth(t, "/v1/events", "application/json", "Bearer "+key, ev))
	// Ingest's own origin: its own page (the demo shop).
	a = svc.request(t, http.MethodPost, "/v1/collect", map[string]string{"Origin": svc.base, "Content-Type": "text/plain"}, envelope(key, ev))
	accepted(t, a)
	if n := svc.streamLen(t); n != 3 {
		t.Fatalf("stream length %d, want 3", n)
	}
}

// By default every origin may post: "*" on preflights and answers.
func TestCORSAnyOrigin(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	svc := startIngest(t, rs, nil)
	a := svc.preflight(t, "/v1/events", "https://anywhere.example", "content-type")
	if a.status != http.StatusNoContent || a.header.Get("Access-Control-Allow-Origin") != "*" || a.header.Get("Access-Control-Allow-Methods") != "POST" {
		t.Fatalf("preflight: %d, headers %v; want 204 allowing * to POST", a.status, a.header)
	}
	a = svc.request(t, http.MethodPost, "/v1/collect", map[string]string{"Origin": "https://anywhere.example", "Content-Type": "text/plain"},
		envelope("", `{"user_id":"u1","product_id":"p1"}`))
	accepted(t, a)
	if got := a.header.Get("Access-Control-Allow-Origin"); got != "*" {
		t.Errorf("beacon: Access-Control-Allow-Origin %q, want *", got)
	}
	// An OPTIONS that is no preflight.
	if a := svc.request(t, http.MethodOptions, "/v1/events", nil, ""); a.status != http.StatusNoContent || a.header.Get("Allow") != "OPTIONS, POST" {
		t.Errorf("plain OPTIONS: %d, Allow %q", a.status, a.header.Get("Allow"))
	}
}

func TestCORSOriginsConfig(t *testing.T) {
	read := func(v string) (BrowserConfig, error) {
		r := config.NewReader(func(k string) string {
			if k == "CORS_ORIGINS" {
				return v
			}
			return ""
		})
		c := readBrowserConfig(r)
		return c, r.Err()
	}
	for v, want := range map[string][]string{
		"":  {"*"},
		"*": {"*"},
		"https://Shop.Example.com, http://127.0.0.1:8080 ,https://a.example:443/,http://b.example:80": {
			"https://shop.example.com", "http://127.0.0.1:8080", "https://a.example", "http://b.example"},
		"http://[::1]:3000": {"http://[::1]:3000"},
	} {
		c, err := read(v)
		if err != nil || !reflect.DeepEqual(c.CORSOrigins, want) {
			t.Errorf("CORS_ORIGINS=%q: %q, %v; want %q", v, c.CORSOrigins, err, want)
		}
	}
	for _, v := range []string{"shop.example.com", "https://shop.example.com/path", "ftp://x.example", "*,https://a.example",
		"https://*.example.com", "https://a.example?x=1", "https://user@a.example"} {
		if _, err := read(v); err == nil || !strings.Contains(err.Error(), "CORS_ORIGINS=") {
			t.Errorf("CORS_ORIGINS=%q: error %v, want one naming the variable", v, err)
		}
	}
}
