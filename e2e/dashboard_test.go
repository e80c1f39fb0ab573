package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"math/big"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/clickstream/pipeline/internal/browsertest"
	"github.com/clickstream/pipeline/internal/proctest"
	"github.com/clickstream/pipeline/internal/redistest"
	wl "github.com/clickstream/pipeline/internal/workload"
)

// The dashboard in a real headless Chromium, against the real binaries and a real
// redis-server, with QUERY_KEYS set: the browser answers its own Basic-auth prompt once
// and every request of the page (the EventSource included) carries the key from then
// on. Events with known times are posted; the page's tiles must show exactly what the
// API answers, the chart must be drawn, the live tiles must follow new events, the
// product and user pages must show their totals, and the range must switch. Screenshots
// at 1400×1000 and 375×800 are kept in a temp dir (the path is logged); with
// UPDATE_SCREENSHOT=1 the wide one also becomes docs/dashboard.png.
func TestDashboard(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: starts redis-server, the three services and Chromium")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// The browser first: a machine without Chromium fails here, at once, with the
	// command that installs it.
	browser := browsertest.Start(t)
	dir := shotDir(t)

	srv := redistest.Start(t)
	ns := redistest.Namespace(t)
	f := proctest.NewTestFleet(t)
	const key = "dashboard-test-key"
	addrs := map[string]string{}
	for _, svc := range []string{"ingest", "processor", "queryapi"} {
		addr, err := proctest.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		addrs[svc] = addr
		v := map[string]string{"ingest": "INGEST_ADDR", "queryapi": "QUERY_ADDR", "processor": "PROCESSOR_ADDR"}[svc]
		env := []string{"REDIS_URL=" + srv.URL(), "REDIS_NAMESPACE=" + ns, v + "=" + addr, "QUERY_KEYS=" + key, "LIVE_INTERVAL=250ms"}
		if _, err := f.Start(ctx, svc, svc, addr, env...); err != nil {
			t.Fatal(err)
		}
	}
	base := "http://" + addrs["queryapi"]
	api := wl.NewQuery(&http.Client{Timeout: 10 * time.Second, Transport: keyTransport(key)}, base)
	get := func(path string, v any) {
		t.Helper()
		if err := api.Get(ctx, path, v); err != nil {
			t.Fatal(err)
		}
	}

	// Without the key the page is refused, with the challenge that makes a browser ask.
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
		t.Fatalf("GET / without a key: %d, WWW-Authenticate %q; want 401 with a Basic challenge", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}

	// A day of traffic with a daily rhythm, and events of the last minutes; none near
	// an edge of the 1-hour or 24-hour range, so that the ranges' numbers cannot move
	// while the test compares them.
	now := time.Now()
	rng := rand.New(rand.NewPCG(1, 2))
	var evs []string
	for i := 0; len(evs) < 3000; i++ {
		age := time.Duration(rng.Int64N(int64(23 * time.Hour)))
		if age < 6*time.Minute || age > 50*time.Minute && age < 70*time.Minute {
			continue
		}
		at := now.Add(-age)
		// Busier in the (UTC) afternoon and evening than at night.
		if rng.Float64() > 0.35+0.3*math.Sin(float64(at.UTC().Hour()-9)/24*2*math.Pi) {
			continue
		}
		evs = append(evs, eventJSON(rng, at, fmt.Sprintf("%s-old-%d", ns, i)))
	}
	postEvents(t, "http://"+addrs["ingest"], evs)
	postEvents(t, "http://"+addrs["ingest"], []string{
		`{"user_id":"u007","product_id":"p01","type":"click"}`,
		`{"user_id":"u007","product_id":"p01","type":"page_view"}`,
		`{"user_id":"u007","product_id":"p02","type":"dwell","duration_ms":12345}`,
		`{"user_id":"u008","product_id":"p01","type":"click"}`,
	})
	if _, err := api.WaitDrained(ctx); err != nil {
		t.Fatal(err)
	}

	challenges := browser.BasicAuth(key, "")
	browser.Navigate(base + "/?range=1h")
	browser.WaitFor(60*time.Second, "the chart drawn",
		`document.querySelector('#chart[data-state=ready] canvas') !== null && document.body.dataset.loaded === '1h'`,
		`document.querySelector('#chart').outerHTML.slice(0, 300)`)
	checkTiles(t, browser, get, "1h")
	var active struct {
		ActiveUsers int64 `json:"active_users"`
	}
	get("/v1/stats/active?window=5m", &active)
	waitText(t, browser, "#tile-active", group(active.ActiveUsers))
	// events/s needs two readings of the stream.
	browser.WaitFor(30*time.Second, "events/s as a number", `/^[0-9][0-9,.]*$/.test(document.querySelector('#tile-rate').textContent)`,
		`document.querySelector('#tile-rate').textContent`)
	var series struct {
		Points [][2]any `json:"points"`
	}
	get("/v1/stats/timeseries?range=1h&interval=minute&metric=clicks", &series)
	if got := browsertest.Eval[string](browser, `document.querySelector('#chart').dataset.points`); got != strconv.Itoa(len(series.Points)) {
		t.Errorf("the 1-hour chart has %s points, the API %d", got, len(series.Points))
	}

	// More events: the live tiles follow without a reload.
	before := browsertest.Eval[string](browser, `document.querySelector('#tile-events').textContent`)
	var more []string
	for i := range 25 {
		more = append(more, fmt.Sprintf(`{"user_id":"live%02d","product_id":"p03","type":"click"}`, i))
	}
	postEvents(t, "http://"+addrs["ingest"], more)
	if _, err := api.WaitDrained(ctx); err != nil {
		t.Fatal(err)
	}
	after := checkTiles(t, browser, get, "1h")
	if after.Events != parseGrouped(t, before)+25 {
		t.Errorf("events tile went from %s to %d, want +25", before, after.Events)
	}
	get("/v1/stats/active?window=5m", &active)
	waitText(t, browser, "#tile-active", group(active.ActiveUsers))

	// A product page, from the top-products table.
	var top struct {
		Products []struct {
			ProductID string `json:"product_id"`
		} `json:"products"`
	}
	get("/v1/stats/top-products?range=1h&limit=10", &top)
	if len(top.Products) == 0 {
		t.Fatal("no top products")
	}
	first := top.Products[0].ProductID
	browser.WaitFor(30*time.Second, "the top-products table", fmt.Sprintf(`(document.querySelector('#top tbody a') || {}).textContent === %q`, first),
		`document.querySelector('#top tbody').textContent`)
	browser.Do(60*time.Second, chromedp.Click(chromedp.CSS(`#top tbody a`)))
	browser.WaitFor(60*time.Second, "the product page", `location.pathname === '/products/`+first+`' && document.body.dataset.loaded === '1h'`, `location.href`)
	var product totals
	get("/v1/products/"+first, &product)
	for sel, want := range map[string]string{
		"#tile-clicks":      group(product.Clicks),
		"#tile-page_views":  group(product.PageViews),
		"#tile-dwell_count": group(product.DwellCount),
		"#tile-avg_dwell":   avgDwell(product.DwellMs, product.DwellCount),
	} {
		waitText(t, browser, sel, want)
	}
	browser.WaitFor(30*time.Second, "the product's chart", `document.querySelector('#chart[data-state=ready] canvas') !== null`, "")
	browser.Screenshot(filepath.Join(dir, "product-1h-1400x1000.png"), 1400, 1000, "")
	browser.Do(30*time.Second, chromedp.Click(chromedp.CSS(`.ranges a[data-range="24h"]`)))
	browser.WaitFor(60*time.Second, "the product page for 24 hours", `document.body.dataset.loaded === '24h' && location.search === '?range=24h'`, `location.href`)
	browser.Screenshot(filepath.Join(dir, "product-24h-375x800.png"), 375, 800, `document.querySelector('#chart[data-state=ready] canvas') !== null`)
	browser.SetSize(1400, 1000)

	// A user page, from the lookup form.
	browser.Navigate(base + "/?range=1h")
	browser.Do(60*time.Second,
		chromedp.WaitVisible(chromedp.CSS(`#lookup-id`)),
		chromedp.SendKeys(chromedp.CSS(`#lookup-id`), "u007"),
		chromedp.Submit(chromedp.CSS(`#lookup-id`)))
	browser.WaitFor(60*time.Second, "the user page", `location.pathname === '/users/u007' && document.body.dataset.loaded !== undefined`, `location.href`)
	var user totals
	get("/v1/users/u007", &user)
	for sel, want := range map[string]string{
		"#tile-clicks":      group(user.Clicks),
		"#tile-page_views":  group(user.PageViews),
		"#tile-dwell_ms":    dwell(float64(user.DwellMs)),
		"#tile-dwell_count": group(user.DwellCount),
		"#tile-avg_dwell":   avgDwell(user.DwellMs, user.DwellCount),
	} {
		waitText(t, browser, sel, want)
	}

	// Switch the range with the page's own buttons: the URL keeps it, the tiles and
	// the chart follow.
	browser.Navigate(base + "/?range=1h")
	browser.WaitFor(60*time.Second, "the dashboard", `document.body.dataset.loaded === '1h'`, "")
	for _, r := range []struct{ name, interval string }{{"30d", "day"}, {"7d", "hour"}, {"24h", "hour"}} {
		browser.Do(30*time.Second, chromedp.Click(chromedp.CSS(`.ranges a[data-range="`+r.name+`"]`)))
		browser.WaitFor(60*time.Second, "range "+r.name, `document.body.dataset.loaded === '`+r.name+`' && location.search === '?range=`+r.name+`'`, `location.search`)
		checkTiles(t, browser, get, r.name)
		get("/v1/stats/timeseries?range="+r.name+"&interval="+r.interval+"&metric=clicks", &series)
		browser.WaitFor(30*time.Second, "the "+r.name+" chart", fmt.Sprintf(`document.querySelector('#chart').dataset.points === '%d'`, len(series.Points)),
			`document.querySelector('#chart').dataset.points`)
		for sel, want := range map[string]string{
			"#csv-summary": "/v1/stats/summary?range=" + r.name + "&format=csv",
			"#csv-top":     "/v1/stats/top-products?range=" + r.name + "&limit=10&format=csv",
			"#csv-series":  "/v1/stats/timeseries?range=" + r.name + "&interval=" + r.interval + "&format=csv&metric=clicks,page_views,unique_users",
		} {
			if got := browsertest.Eval[string](browser, `document.querySelector('`+sel+`').getAttribute('href')`); got != want {
				t.Errorf("range %s: the %s link is %q, want %q", r.name, sel, got, want)
			}
		}
		if got := browsertest.Eval[string](browser, `document.querySelector('#series-table tbody tr td').textContent`); !isNumber(got) {
			t.Errorf("range %s: the chart's table shows %q, want a number", r.name, got)
		}
	}

	// The chart waits for layout at each size before the capture.
	ready := `document.querySelector('#chart[data-state=ready] canvas') !== null && document.body.dataset.loaded === '24h'`
	wide := filepath.Join(dir, "dashboard-1400x1000.png")
	browser.Screenshot(wide, 1400, 1000, ready)
	browser.Screenshot(filepath.Join(dir, "dashboard-375x800.png"), 375, 800, ready)
	if os.Getenv("UPDATE_SCREENSHOT") == "1" {
		root, err := proctest.ModuleRoot()
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(wide)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "docs", "dashboard.png"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote docs/dashboard.png")
	}

	// The key in the address (a kiosk screen): the page's own requests must not carry
	// it in their URLs, which fetch refuses.
	browser.Navigate("http://" + key + "@" + addrs["queryapi"] + "/?range=7d")
	browser.WaitFor(60*time.Second, "the dashboard opened as http://KEY@host/", `document.body.dataset.loaded === '7d'`,
		`document.querySelector('#error').textContent`)

	if n := challenges.Load(); n != 1 {
		t.Errorf("the browser was asked for the key %d times, want once: the page's requests must carry the cached key", n)
	}
	if p := browser.Problems(); len(p) > 0 {
		t.Errorf("the pages logged errors:\n  %s", strings.Join(p, "\n  "))
	}
}

// keyTransport sends the key as Basic credentials (the key as user name), as a browser
// does after its prompt.
type keyTransport string

func (k keyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.SetBasicAuth(string(k), "")
	return http.DefaultTransport.RoundTrip(r)
}

// shotDir makes the directory the test's screenshots are kept in: it outlives the test
// so that a person can look at them.
func shotDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "dashboard-screenshots-")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", d)
	return d
}

func eventJSON(rng *rand.Rand, at time.Time, id string) string {
	user := fmt.Sprintf("u%03d", int(200*math.Pow(rng.Float64(), 2)))
	product := fmt.Sprintf("p%02d", 1+int(25*math.Pow(rng.Float64(), 3)))
	switch x := rng.IntN(10); {
	case x < 6:
		return fmt.Sprintf(`{"user_id":%q,"product_id":%q,"type":"click","ts":%d,"event_id":%q}`, user, product, at.UnixMilli(), id)
	case x < 9:
		return fmt.Sprintf(`{"user_id":%q,"product_id":%q,"type":"page_view","ts":%d,"event_id":%q}`, user, product, at.UnixMilli(), id)
	default:
		return fmt.Sprintf(`{"user_id":%q,"product_id":%q,"type":"dwell","duration_ms":%d,"ts":%d,"event_id":%q}`,
			user, product, 500+rng.IntN(90_000), at.UnixMilli(), id)
	}
}

// postEvents posts evs as NDJSON, 500 a request, each expecting 202.
func postEvents(t *testing.T, ingest string, evs []string) {
	t.Helper()
	for len(evs) > 0 {
		n := min(500, len(evs))
		body := strings.Join(evs[:n], "\n")
		evs = evs[n:]
		resp, err := http.Post(ingest+"/v1/events", "application/x-ndjson", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("post: %d %s", resp.StatusCode, b)
		}
	}
}

type summary struct {
	Events           int64    `json:"events"`
	Clicks           int64    `json:"clicks"`
	PageViews        int64    `json:"page_views"`
	UniqueUsers      int64    `json:"unique_users"`
	AvgDwellMs       *float64 `json:"avg_dwell_ms"`
	ClickThroughRate *float64 `json:"click_through_rate"`
}

type totals struct {
	Clicks     int64 `json:"clicks"`
	PageViews  int64 `json:"page_views"`
	DwellMs    int64 `json:"dwell_ms"`
	DwellCount int64 `json:"dwell_count"`
}

// checkTiles waits until the dashboard's tiles show exactly what /v1/stats/summary
// answers for the range, formatted as the page formats them (en-US), and returns the
// summary.
func checkTiles(t *testing.T, b *browsertest.Browser, get func(string, any), rng string) summary {
	t.Helper()
	var s summary
	get("/v1/stats/summary?range="+rng, &s)
	avg, ctr := "–", "–"
	if s.AvgDwellMs != nil {
		avg = dwell(*s.AvgDwellMs)
	}
	if s.ClickThroughRate != nil {
		ctr = ecmaFixed1Scaled(*s.ClickThroughRate, 1000) + "%"
	}
	for sel, want := range map[string]string{
		"#tile-events":       group(s.Events),
		"#tile-clicks":       group(s.Clicks),
		"#tile-page_views":   group(s.PageViews),
		"#tile-unique_users": group(s.UniqueUsers),
		"#tile-avg_dwell":    avg,
		"#tile-ctr":          ctr,
	} {
		waitText(t, b, sel, want)
	}
	return s
}

// waitText waits until the element's text is want. The page changes by itself (the
// live stream), so the deadline is generous; it is never a measurement.
func waitText(t *testing.T, b *browsertest.Browser, sel, want string) {
	t.Helper()
	q := fmt.Sprintf(`document.querySelector(%q)`, sel)
	b.WaitFor(60*time.Second, fmt.Sprintf("%s to show %q", sel, want), fmt.Sprintf(`(%s || {}).textContent === %q`, q, want),
		fmt.Sprintf(`(%s || {}).textContent`, q))
}

func avgDwell(ms, n int64) string {
	if n == 0 {
		return "–"
	}
	return dwell(float64(ms) / float64(n))
}

// dwell is the page's format of a time in ms: whole ms below a second, else seconds,
// minutes or hours with one decimal; a no-break space before the unit.
func dwell(ms float64) string {
	switch {
	case ms < 1000:
		return group(int64(math.Round(ms))) + "\u00a0ms"
	case ms < 60_000:
		return ecmaFixed1(ms/1000) + "\u00a0s"
	case ms < 3_600_000:
		return ecmaFixed1(ms/60_000) + "\u00a0min"
	default:
		return ecmaFixed1(ms/3_600_000) + "\u00a0h"
	}
}

// ecmaFixed1 formats x with one decimal and thousands separators as
// Intl.NumberFormat('en-US') does: rounded from the exact value of the double, a tie
// away from zero (strconv rounds a tie to even).
func ecmaFixed1(x float64) string { return ecmaFixed1Scaled(x, 10) }

// ecmaFixed1Scaled is ecmaFixed1 of x*scale/10, computed exactly (a percentage with one
// decimal is x scaled by 1000).
func ecmaFixed1Scaled(x float64, scale int64) string {
	r := new(big.Rat).SetFloat64(x)
	r.Mul(r, new(big.Rat).SetInt64(scale))
	r.Add(r, big.NewRat(1, 2))
	n := new(big.Int).Quo(r.Num(), r.Denom()) // floor for x ≥ 0
	tenths := n.Int64()
	return group(tenths/10) + "." + strconv.FormatInt(tenths%10, 10)
}

func group(n int64) string {
	s := strconv.FormatInt(n, 10)
	var b bytes.Buffer
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			b.WriteByte(',')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func parseGrouped(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(strings.ReplaceAll(s, ",", ""), 10, 64)
	if err != nil {
		t.Fatalf("tile text %q is not a number", s)
	}
	return n
}

func isNumber(s string) bool {
	_, err := strconv.ParseFloat(strings.ReplaceAll(s, ",", ""), 64)
	return err == nil
}
