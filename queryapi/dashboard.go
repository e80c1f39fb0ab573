package main

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"html/template"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"path"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/server"
	"github.com/labstack/echo/v4"
)

// The dashboard is a few files embedded in the binary (web/): the page, its script and
// style sheet, and the vendored chart library (web/assets/vendor). Nothing is fetched
// from another host, so it works on a machine without internet, and there is no build
// step.
//
//go:embed web
var webFiles embed.FS

// dashboard serves the pages and their assets.
type dashboard struct {
	page   *template.Template
	report *template.Template
	assets map[string]asset // by path under /assets/
}

type asset struct {
	body        []byte
	etag        string
	contentType string
}

// pageCSP lets the pages run their own script and style sheets and talk to their own
// origin, and nothing else. uPlot styles elements through the DOM (allowed), never
// through inline style attributes.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
	"form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// mustDashboard reads the embedded files. They are part of the binary, so an error is
// a bug in the build that every test of the package shows, not a runtime condition.
func mustDashboard() *dashboard {
	d, err := newDashboard()
	if err != nil {
		panic("dashboard files: " + err.Error())
	}
	return d
}

func newDashboard() (*dashboard, error) {
	d := &dashboard{assets: map[string]asset{}}
	var err error
	if d.page, err = template.ParseFS(webFiles, "web/index.html"); err != nil {
		return nil, err
	}
	if d.report, err = template.New("report.html").Funcs(reportFuncs).ParseFS(webFiles, "web/report.html"); err != nil {
		return nil, err
	}
	err = fs.WalkDir(webFiles, "web/assets", func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := webFiles.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		ct := mime.TypeByExtension(path.Ext(p))
		switch path.Ext(p) {
		case ".js":
			ct = "text/javascript; charset=utf-8" // whatever the machine's mime.types says
		case ".css":
			ct = "text/css; charset=utf-8"
		case ".md", ".LICENSE":
			ct = "text/plain; charset=utf-8"
		}
		d.assets[p[len("web/assets/"):]] = asset{body: b, etag: `"` + hex.EncodeToString(sum[:8]) + `"`, contentType: ct}
		return nil
	})
	return d, err
}

// pageData is what the page template shows before its script runs.
type pageData struct {
	View  string // dashboard, product or user
	ID    string
	Title string
}

func (d *dashboard) render(c echo.Context, p pageData) error {
	var b bytes.Buffer
	if err := d.page.Execute(&b, p); err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set("Content-Security-Policy", pageCSP)
	h.Set(echo.HeaderCacheControl, "no-cache")
	return c.HTMLBlob(http.StatusOK, b.Bytes())
}

// home is GET /: the dashboard.
func (d *dashboard) home(c echo.Context) error {
	return d.render(c, pageData{View: "dashboard", Title: "Dashboard"})
}

// productPage is GET /products/:id: a product's totals and series.
func (d *dashboard) productPage(c echo.Context) error {
	id, err := pathID(c, "product_id")
	if err != nil {
		return err
	}
	return d.render(c, pageData{View: "product", ID: id, Title: "Product " + id})
}

// userPage is GET /users/:id: a user's totals.
func (d *dashboard) userPage(c echo.Context) error {
	id, err := pathID(c, "user_id")
	if err != nil {
		return err
	}
	return d.render(c, pageData{View: "user", ID: id, Title: "User " + id})
}

// lookup is GET /users?id=…, where the page's lookup form goes without its script: it
// redirects to the user's page.
func (d *dashboard) lookup(c echo.Context) error {
	id := c.QueryParam("id")
	if !events.ValidID(id) {
		return server.BadRequest("id: " + events.IDRule)
	}
	target := "/users/" + url.PathEscape(id)
	if r := c.QueryParam("range"); r != "" {
		if _, ok := namedRanges[r]; ok {
			target += "?range=" + r
		}
	}
	return c.Redirect(http.StatusSeeOther, target)
}

// asset is GET /assets/*. Every answer carries a hash of the file as its ETag and asks
// the browser to revalidate, so a new binary's files are never mixed with a cached old
// page's, and an unchanged file costs a 304.
func (d *dashboard) asset(c echo.Context) error {
	a, ok := d.assets[c.Param("*")]
	if !ok {
		return echo.ErrNotFound
	}
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, a.contentType)
	h.Set("ETag", a.etag)
	h.Set(echo.HeaderCacheControl, "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(c.Response(), c.Request(), "", time.Time{}, bytes.NewReader(a.body))
	return nil
}
