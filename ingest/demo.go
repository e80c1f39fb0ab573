package main

import (
	_ "embed"
	"html/template"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// The demo shop (DEMO=1): a few product pages that carry the tracker, so that someone
// trying the pipeline can click around and watch the dashboard move. scripts/run.sh
// turns it on. It is served by ingest, so its pages and ingest share an origin; a real
// shop is on an origin of its own, which the browser test covers.

//go:embed web/demo.html
var demoPage string

var demoTemplate = template.Must(template.New("demo").Parse(demoPage))

// demoProduct is one product of the demo shop.
type demoProduct struct {
	ID, Name, Blurb, Price, Color string
}

var demoProducts = []demoProduct{
	{"sku-1", "Trail runner", "A light shoe for rough paths.", "€89", "#2a6f97"},
	{"sku-2", "Rain jacket", "Keeps the weather out, folds into its pocket.", "€120", "#e76f51"},
	{"sku-3", "Wool beanie", "Merino, warm and soft.", "€25", "#6a994e"},
	{"sku-4", "Canvas backpack", "Twenty litres, a laptop sleeve.", "€65", "#bc6c25"},
	{"sku-5", "Steel bottle", "Keeps water cold for a day.", "€30", "#577590"},
	{"sku-6", "Headlamp", "300 lumens, rechargeable.", "€40", "#9b5de5"},
}

// demoShop renders the demo's pages.
type demoShop struct {
	key       string // the write key the pages carry ("" when ingest is open)
	dashboard string // DEMO_DASHBOARD_URL, ending in "/", or ""
}

func newDemoShop(key, dashboard string) *demoShop {
	if dashboard != "" && !strings.HasSuffix(dashboard, "/") {
		dashboard += "/"
	}
	return &demoShop{key: key, dashboard: dashboard}
}

type demoData struct {
	Product   *demoProduct
	Products  []demoProduct
	Others    []demoProduct
	Src, Key  string
	Tag       string // the tag, as text to show
	Dashboard string
}

// page renders the shop (no product) or a product's page.
func (d *demoShop) page(c echo.Context) error {
	data := demoData{Products: demoProducts, Key: d.key, Dashboard: d.dashboard,
		Src: c.Scheme() + "://" + c.Request().Host + "/t.js"}
	if id := c.Param("id"); id != "" {
		for i := range demoProducts {
			if demoProducts[i].ID == id {
				data.Product = &demoProducts[i]
			} else if len(data.Others) < 3 {
				data.Others = append(data.Others, demoProducts[i])
			}
		}
		if data.Product == nil {
			return echo.NewHTTPError(http.StatusNotFound, "no such product in the demo shop")
		}
	}
	data.Tag = `<script defer src="` + data.Src + `"`
	if d.key != "" {
		data.Tag += ` data-key="` + d.key + `"`
	}
	if data.Product != nil {
		data.Tag += ` data-product="` + data.Product.ID + `"`
	}
	data.Tag += `></script>`
	var b strings.Builder
	if err := demoTemplate.Execute(&b, data); err != nil {
		return err
	}
	return c.HTML(http.StatusOK, b.String())
}
