package main

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/clickstream/pipeline/internal/redistest"
)

// The dashboard's pages and files come from the binary: every file a page refers to is
// served, with its type and an ETag that makes a repeat a 304; nothing refers to another
// host; the page routes take ids as the API does; the lookup form works without script.
func TestDashboardPages(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	a := startAPI(t, s)

	home := a.get("/")
	if home.status != http.StatusOK || !strings.HasPrefix(home.header.Get("Content-Type"), "text/html") ||
		!strings.Contains(home.body, `data-view="dashboard"`) || home.header.Get("Content-Security-Policy") != pageCSP {
		t.Fatalf("GET / = %d %s, CSP %q", home.status, home.header.Get("Content-Type"), home.header.Get("Content-Security-Policy"))
	}
	refs := regexp.MustCompile(`(?:src|href)="([^"]*)"`).FindAllStringSubmatch(home.body, -1)
	types := map[string]string{".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
	assets := 0
	for _, m := range refs {
		ref := m[1]
		if strings.Contains(ref, "//") {
			t.Errorf("the page refers to another host: %s", ref)
		}
		if !strings.HasPrefix(ref, "/assets/") {
			continue
		}
		assets++
		r := a.get(ref)
		ext := ref[strings.LastIndexByte(ref, '.'):]
		if r.status != http.StatusOK || r.header.Get("Content-Type") != types[ext] || r.header.Get("ETag") == "" {
			t.Errorf("GET %s = %d, Content-Type %q, ETag %q", ref, r.status, r.header.Get("Content-Type"), r.header.Get("ETag"))
			continue
		}
		req, _ := http.NewRequest(http.MethodGet, a.base+ref, nil)
		req.Header.Set("If-None-Match", r.header.Get("ETag"))
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with its ETag = %d, want 304", ref, resp.StatusCode)
		}
	}
	if assets != 5 {
		t.Errorf("the page loads %d files from /assets/, want 5 (icon, 2 style sheets, 2 scripts): %q", assets, refs)
	}
	if js := a.get("/assets/app.js"); strings.Contains(js.body, "http:") || strings.Contains(js.body, "https:") {
		t.Error("app.js refers to another host")
	}
	a.expect("/assets/nothing.js", http.StatusNotFound, `{"error":"Not Found"}`)

	if r := a.get("/products/p%40x"); r.status != http.StatusOK || !strings.Contains(r.body, `data-view="product" data-id="p@x"`) ||
		!strings.Contains(r.body, "<title>Product p@x · clickstream</title>") {
		t.Errorf("GET /products/p%%40x = %d, want the product page of p@x", r.status)
	}
	if r := a.get("/users/u1"); r.status != http.StatusOK || !strings.Contains(r.body, `data-view="user" data-id="u1"`) {
		t.Errorf("GET /users/u1 = %d, want the user page of u1", r.status)
	}
	a.expect("/users/a%20b", http.StatusBadRequest, `{"error":"user_id: must be 1-128 characters of A-Z a-z 0-9 . _ : @ -, and not . or .."}`)
	a.expect("/products/a%2Fb", http.StatusBadRequest, `{"error":"product_id: must be 1-128 characters of A-Z a-z 0-9 . _ : @ -, and not . or .."}`)

	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(a.base + "/users?id=alice%40example.com&range=7d")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != "/users/alice@example.com?range=7d" {
		t.Errorf("the lookup form without script: %d to %q, want 303 to the user's page", resp.StatusCode, loc)
	}
	a.expect("/users?id=a+b", http.StatusBadRequest, `{"error":"id: must be 1-128 characters of A-Z a-z 0-9 . _ : @ -, and not . or .."}`)

	// HEAD answers as GET, without a body.
	req, _ := http.NewRequest(http.MethodHead, a.base+"/", nil)
	if resp, err := httpClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD / = %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}

// The vendored chart library is the pinned release: the files embedded in the binary
// have the sums its README lists (so an update must update the README too).
func TestVendoredUPlot(t *testing.T) {
	readme, err := webFiles.ReadFile("web/assets/vendor/README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"uPlot.iife.min.js", "uPlot.min.css"} {
		b, err := webFiles.ReadFile("web/assets/vendor/" + name)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		if row := "| `" + name + "` | `" + hex.EncodeToString(sum[:]) + "` |"; !strings.Contains(string(readme), row) {
			t.Errorf("%s: sha256 %x is not the one web/assets/vendor/README.md lists", name, sum)
		}
		if name == "uPlot.iife.min.js" && !strings.HasPrefix(string(b), "/*! https://github.com/leeoniya/uPlot (v1.6.32) */") {
			t.Errorf("%s is not uPlot 1.6.32", name)
		}
	}
	if _, err := webFiles.ReadFile("web/assets/vendor/uPlot.LICENSE"); err != nil {
		t.Error("uPlot's licence is not vendored with it")
	}
}

// With QUERY_KEYS, the dashboard's pages, their files, the live stream and the reports
// want a key like every other route; the browser's own Basic-auth prompt gives it.
func TestDashboardKeys(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	const key = "rk_dash"
	a := startAPI(t, s, "QUERY_KEYS", key)
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(key+":"))
	for _, path := range []string{"/", "/products/p1", "/users/u1", "/users?id=u1", "/assets/app.js", "/assets/vendor/uPlot.iife.min.js",
		"/v1/live", "/v1/reports/daily", "/v1/stats/summary?format=csv"} {
		r := a.getAuth(path, "")
		if r.status != http.StatusUnauthorized || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), `Basic realm="queryapi"`) {
			t.Errorf("GET %s without a key = %d (%q), want 401 with a Basic challenge", path, r.status, r.header.Get("WWW-Authenticate"))
		}
		if path == "/v1/live" {
			if st, r := a.openLive("Authorization", basic); st == nil {
				t.Errorf("GET /v1/live with the key = %d %s", r.status, r.body)
			} else {
				st.close()
			}
			continue
		}
		if path == "/users?id=u1" {
			continue // a redirect to /users/u1, which is checked too
		}
		if r := a.getAuth(path, basic); r.status != http.StatusOK {
			t.Errorf("GET %s with the key = %d %s", path, r.status, r.body)
		}
	}
}
