package e2e

import (
	"context"
	"fmt"
	"html"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/browsertest"
	"github.com/clickstream/pipeline/internal/metrics/metricstest"
	"github.com/clickstream/pipeline/internal/proctest"
	"github.com/clickstream/pipeline/internal/redistest"
	wl "github.com/clickstream/pipeline/internal/workload"
)

// testShop serves the pages of a site that includes the tracker from ingest, on an
// origin of its own (an httptest server), as a real shop would.
type testShop struct {
	ingest, key string
}

// pages: attrs are the tag's data- attributes; head goes into <head>, before the tag.
var shopPages = map[string]struct{ attrs, head, body string }{
	// A product page (data-product on the tag) with a link to another product.
	"/a": {attrs: `data-product="sku-1"`,
		body: `<a id="to-b" href="/b" data-product-id="sku-2">Rain jacket</a>`},
	// A product page whose product is in a meta tag, with a single-page app's
	// navigation: a button that shows another product with pushState, and back.
	"/b": {head: `<meta name="product-id" content="sku-2">`,
		body: `<button id="spa" type="button">Quick view of the beanie</button>
<script>
document.getElementById('spa').addEventListener('click', function () {
  document.querySelector('meta[name="product-id"]').content = 'sku-3';
  history.pushState({}, '', '/b/quick-view');
});
addEventListener('popstate', function () {
  document.querySelector('meta[name="product-id"]').content = 'sku-2';
});
</script>`},
	// A signed-in user: the site's own id; DNT respected, and not set.
	"/known": {attrs: `data-product="sku-4" data-user-id="u-known" data-respect-dnt`},
	// Anonymous tracking off: nothing until the site knows the user.
	"/quiet": {attrs: `data-product="sku-5" data-anonymous="false"`,
		body: `<button id="buy" type="button" data-product-id="sku-5">Buy</button>`},
	// Global Privacy Control on, and respected.
	"/private": {attrs: `data-product="sku-6" data-respect-dnt`,
		head: `<script>Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', { get: function () { return true; } });</script>`,
		body: `<button id="buy" type="button" data-product-id="sku-6">Buy</button>`},
}

func (s *testShop) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if path == "/b/quick-view" {
		path = "/b"
	}
	p, ok := shopPages[path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	fmt.Fprintf(w, `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>Test shop %s</title>%s
<script defer src="%s/t.js" data-key="%s" %s></script>
</head><body><h1>Test shop</h1>%s</body></html>`, html.EscapeString(path), p.head, s.ingest, s.key, p.attrs, p.body)
}

// The tracker in a real headless Chromium, on a test shop served from an origin of its
// own, against the real ingest, processor and queryapi on a real redis-server: every
// page view, click and dwell the pages send is counted, for the anonymous id the
// tracker keeps or the site's user, and each dwell lies between 1 ms and the time the
// test spent around it; a page of an origin CORS_ORIGINS does not list writes nothing.
func TestTracker(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: starts redis-server, the three services and Chromium")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	browser := browsertest.Start(t)

	const key = "wk_public_tracker"
	shop, other := &testShop{key: key}, &testShop{key: key}
	shopSrv, otherSrv := httptest.NewServer(shop), httptest.NewServer(other)
	defer shopSrv.Close()
	defer otherSrv.Close()

	srv := redistest.Start(t)
	ns := redistest.Namespace(t)
	f := proctest.NewTestFleet(t)
	addrs := map[string]string{}
	for _, svc := range []string{"ingest", "processor", "queryapi"} {
		addr, err := proctest.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		addrs[svc] = addr
		v := map[string]string{"ingest": "INGEST_ADDR", "queryapi": "QUERY_ADDR", "processor": "PROCESSOR_ADDR"}[svc]
		env := []string{"REDIS_URL=" + srv.URL(), "REDIS_NAMESPACE=" + ns, v + "=" + addr, "READ_BLOCK=100ms",
			"INGEST_KEYS=" + key, "CORS_ORIGINS=" + shopSrv.URL, "DEMO=1"}
		if _, err := f.Start(ctx, svc, svc, addr, env...); err != nil {
			t.Fatal(err)
		}
	}
	ingest := "http://" + addrs["ingest"]
	shop.ingest, other.ingest = ingest, ingest
	api := wl.NewQuery(&http.Client{Timeout: 10 * time.Second}, "http://"+addrs["queryapi"])

	// wait waits until queryapi's counts of path (a user or a product) are want's, and
	// returns its totals. Dwell times are checked by dwellWithin.
	wait := func(what, path string, want totals) totals {
		t.Helper()
		var got totals
		var err error
		deadline := time.Now().Add(60 * time.Second)
		for {
			err = api.Get(ctx, path, &got)
			if err == nil && got.Clicks == want.Clicks && got.PageViews == want.PageViews && got.DwellCount == want.DwellCount {
				return got
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s answers %+v (%v), want the counts of %+v", what, path, got, err, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	var dwells []string // what the test measured, for the log
	// dwellWithin waits for a product's counts, one more dwell than before, and checks
	// that the new dwell lasted from 1 ms to until-since: the page's visible time began
	// after since (before the page was loaded or shown) and ended before until (once the
	// page was seen hidden, or left by pushState or popstate, whose handlers run in the
	// task that changes the state the test looks at), whatever the machine's speed. A
	// zero until is when the dwell is counted: a page left by a navigation may run its
	// pagehide after the next page has loaded (Chromium unloads a page of another
	// process after it commits the next one).
	dwellWithin := func(what, product string, want, before totals, since, until time.Time) {
		t.Helper()
		got := wait(what, "/v1/products/"+product, want)
		if until.IsZero() {
			until = time.Now()
		}
		bound := int64(math.Ceil(float64(until.Sub(since)) / float64(time.Millisecond)))
		d := got.DwellMs - before.DwellMs
		if got.DwellCount != before.DwellCount+1 || d < 1 || d > bound {
			t.Errorf("%s: %d dwells (%d before), the new one %d ms; want one of 1 ms to the %d ms the test spent", what, got.DwellCount, before.DwellCount, d, bound)
		}
		dwells = append(dwells, fmt.Sprintf("%s: %d ms (test spent %d ms)", what, d, bound))
	}
	product := func(id string) totals {
		t.Helper()
		var got totals
		if err := api.Get(ctx, "/v1/products/"+id, &got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	anonID := regexp.MustCompile(`^anon:[0-9a-f]{32}$`)

	// 1. A product page: its page view, for a new anonymous id kept in localStorage.
	t0 := time.Now()
	browser.Navigate(shopSrv.URL + "/a")
	anon := browsertest.Eval[string](browser, `localStorage.getItem('cs_anon')`)
	if !anonID.MatchString(anon) {
		t.Fatalf("the anonymous id in localStorage is %q, want anon: and 32 hex digits", anon)
	}
	if c := browsertest.Eval[string](browser, `document.cookie`); c != "" {
		t.Errorf("the tracker set cookies %q", c)
	}
	user := "/v1/users/" + anon
	wait("the page view of /a", user, totals{PageViews: 1})
	sku1 := wait("the page view of /a", "/v1/products/sku-1", totals{PageViews: 1})

	// 2. A click on a product's link, which leaves the page: the click, the dwell of the
	// page left (pagehide), the page view of the next page (its product in a meta tag).
	t1 := time.Now()
	browser.Do(60*time.Second, chromedp.Click(chromedp.CSS(`#to-b`)))
	browser.WaitFor(60*time.Second, "the link's page", `location.pathname === '/b' && document.readyState === 'complete'`, `location.href`)
	dwellWithin("/a, left by a link", "sku-1", totals{PageViews: 1, DwellCount: 1}, sku1, t0, time.Time{})
	wait("the click on the link and the page view of /b", "/v1/products/sku-2", totals{Clicks: 1, PageViews: 1})
	wait("the click, the dwell and the page view", user, totals{Clicks: 1, PageViews: 2, DwellCount: 1})

	// 3. A reload: the dwell of the page, and a new page view for the same id.
	sku2 := product("sku-2")
	t2 := time.Now()
	browser.Do(60*time.Second, chromedp.Reload())
	dwellWithin("/b, reloaded", "sku-2", totals{Clicks: 1, PageViews: 2, DwellCount: 1}, sku2, t1, time.Time{})
	wait("the reload", user, totals{Clicks: 1, PageViews: 3, DwellCount: 2})
	if got := browsertest.Eval[string](browser, `localStorage.getItem('cs_anon')`); got != anon {
		t.Fatalf("after a reload the anonymous id is %s, was %s", got, anon)
	}

	// 4. A single-page app's navigation (pushState) and back (popstate): each ends the
	// dwell of the page shown and starts a page view of the next.
	sku2 = product("sku-2")
	t3 := time.Now()
	browser.Do(60*time.Second, chromedp.Click(chromedp.CSS(`#spa`)))
	browser.WaitFor(60*time.Second, "the quick view", `location.pathname === '/b/quick-view'`, `location.href`)
	dwellWithin("/b, left by pushState", "sku-2", totals{Clicks: 1, PageViews: 2, DwellCount: 2}, sku2, t2, time.Now())
	sku3 := wait("the page view of the quick view", "/v1/products/sku-3", totals{PageViews: 1})
	wait("pushState", user, totals{Clicks: 1, PageViews: 4, DwellCount: 3})
	t4 := time.Now()
	browser.Do(30*time.Second, chromedp.Evaluate[chromedp.Void](`history.back()`))
	browser.WaitFor(60*time.Second, "back from the quick view", `location.pathname === '/b'`, `location.href`)
	dwellWithin("the quick view, left by popstate", "sku-3", totals{PageViews: 1, DwellCount: 1}, sku3, t3, time.Now())
	wait("the page view of /b again", "/v1/products/sku-2", totals{Clicks: 1, PageViews: 3, DwellCount: 2})
	wait("popstate", user, totals{Clicks: 1, PageViews: 5, DwellCount: 4})

	// 5. The window is minimized (the person switches to another application): the
	// dwell of the page, once. A reload while it is hidden is a page view whose time
	// hidden does not count: once shown, and hidden again, its dwell is at most the
	// time since it was shown. Leaving a hidden page sends nothing.
	sku2 = product("sku-2")
	browser.Hide()
	browser.WaitFor(30*time.Second, "the page hidden", `document.visibilityState === 'hidden'`, `document.visibilityState`)
	dwellWithin("/b, hidden", "sku-2", totals{Clicks: 1, PageViews: 3, DwellCount: 3}, sku2, t4, time.Now())
	browser.Do(60*time.Second, chromedp.Reload())
	if v := browsertest.Eval[string](browser, `document.visibilityState`); v != "hidden" {
		t.Fatalf("the page reloaded in the minimized window is %s", v)
	}
	sku2 = wait("the reload while hidden", "/v1/products/sku-2", totals{Clicks: 1, PageViews: 4, DwellCount: 3})
	wait("the reload while hidden", user, totals{Clicks: 1, PageViews: 6, DwellCount: 5})
	// The person stays away a while; no condition is awaited. Were time hidden
	// counted, the next dwell would pass its bound by about this much.
	time.Sleep(time.Second)
	t5 := time.Now()
	browser.Show()
	browser.WaitFor(30*time.Second, "the page shown", `document.visibilityState === 'visible'`, `document.visibilityState`)
	browser.Hide()
	browser.WaitFor(30*time.Second, "the page hidden again", `document.visibilityState === 'hidden'`, `document.visibilityState`)
	dwellWithin("/b, loaded hidden, shown, hidden", "sku-2", totals{Clicks: 1, PageViews: 4, DwellCount: 4}, sku2, t5, time.Now())
	wait("shown and hidden", user, totals{Clicks: 1, PageViews: 6, DwellCount: 6})
	if p := browser.Problems(); len(p) > 0 {
		t.Errorf("the shop's pages logged errors:\n  %s", strings.Join(p, "\n  "))
	}

	// 6. A user the site knows, with DNT respected and not set; the page is loaded in
	// the minimized window, which is then restored. /b, left while hidden, sends nothing
	// (the stream's events, at the end, say so).
	browser.Navigate(shopSrv.URL + "/known")
	wait("the signed-in user's page view", "/v1/users/u-known", totals{PageViews: 1})
	browser.Show()
	browser.WaitFor(30*time.Second, "the page shown", `document.visibilityState === 'visible'`, `document.visibilityState`)

	// 7. Anonymous tracking off: nothing for an unknown user, until the site knows them.
	browser.Navigate(shopSrv.URL + "/quiet")
	wait("/known, left", "/v1/users/u-known", totals{PageViews: 1, DwellCount: 1})
	browser.Do(30*time.Second, chromedp.Evaluate[chromedp.Void](`window.csUserId = 'u-late'`))
	browser.Do(30*time.Second, chromedp.Click(chromedp.CSS(`#buy`)))
	wait("the click once the user is known", "/v1/users/u-late", totals{Clicks: 1})
	wait("/quiet, viewed before the user was known", "/v1/products/sku-5", totals{Clicks: 1})

	// 8. Global Privacy Control with data-respect-dnt: nothing at all.
	browser.Navigate(shopSrv.URL + "/private")
	wait("/quiet, left", "/v1/users/u-late", totals{Clicks: 1, DwellCount: 1})
	browser.Do(30*time.Second, chromedp.Click(chromedp.CSS(`#buy`)))
	browser.Navigate(shopSrv.URL + "/known")
	wait("the signed-in user's page view again", "/v1/users/u-known", totals{PageViews: 2, DwellCount: 1})
	wait("the private page, after the next page's view", "/v1/products/sku-6", totals{})

	// 9. The demo shop, served by ingest: its own origin, its own anonymous id.
	browser.Navigate(ingest + "/demo/p/sku-1")
	wait("/known, left again", "/v1/users/u-known", totals{PageViews: 2, DwellCount: 2})
	demo := browsertest.Eval[string](browser, `localStorage.getItem('cs_anon')`)
	if !anonID.MatchString(demo) || demo == anon {
		t.Fatalf("the demo shop's anonymous id is %q (the test shop's %s); want one of its own", demo, anon)
	}
	wait("the demo's page view", "/v1/users/"+demo, totals{PageViews: 1})
	browser.Do(30*time.Second, chromedp.Click(chromedp.CSS(`#add`)))
	wait("the demo's add to cart", "/v1/users/"+demo, totals{Clicks: 1, PageViews: 1})
	if p := browser.Problems(); len(p) > 0 {
		t.Errorf("the pages logged errors:\n  %s", strings.Join(p, "\n  "))
	}

	// 10. A page of an origin CORS_ORIGINS does not list: its beacons are refused, and
	// nothing is counted. Ingest's metrics say when all four have been refused: the
	// page view, then the click, the dwell and the page view of the link.
	browser.Navigate(otherSrv.URL + "/a")
	wait("the demo page, left", "/v1/users/"+demo, totals{Clicks: 1, PageViews: 1, DwellCount: 1})
	browser.Do(60*time.Second, chromedp.Click(chromedp.CSS(`#to-b`)))
	browser.WaitFor(60*time.Second, "the link's page", `location.pathname === '/b' && document.readyState === 'complete'`, `location.href`)
	stranger := browsertest.Eval[string](browser, `localStorage.getItem('cs_anon')`)
	const refusedSeries = `ingest_rejected_requests_total{reason="origin"}`
	deadline := time.Now().Add(60 * time.Second)
	for metricstest.Scrape(t, ingest+"/metrics")[refusedSeries] < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("%s is %v, want 4 beacons refused", refusedSeries, metricstest.Scrape(t, ingest+"/metrics")[refusedSeries])
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := wait("the other origin's visitor", "/v1/users/"+stranger, totals{}); got != (totals{}) {
		t.Errorf("the other origin's visitor %s has %+v, want nothing", stranger, got)
	}

	// Every event in the stream: exactly the ones above, each with an event_id of its own.
	type event struct {
		user, product string
		typ           events.Type
	}
	var want []event
	add := func(user string, evs ...any) {
		for i := 0; i < len(evs); i += 2 {
			want = append(want, event{user, evs[i+1].(string), evs[i].(events.Type)})
		}
	}
	pv, click, dwell := events.PageView, events.Click, events.Dwell
	add(anon, pv, "sku-1", click, "sku-2", dwell, "sku-1", pv, "sku-2", dwell, "sku-2", pv, "sku-2",
		dwell, "sku-2", pv, "sku-3", dwell, "sku-3", pv, "sku-2", dwell, "sku-2", pv, "sku-2", dwell, "sku-2")
	add("u-known", pv, "sku-4", dwell, "sku-4", pv, "sku-4", dwell, "sku-4")
	add("u-late", click, "sku-5", dwell, "sku-5")
	add(demo, pv, "sku-1", click, "sku-1", dwell, "sku-1")
	entries, err := srv.Client().XRange(ctx, events.NewKeys(ns).Stream(), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var got []event
	ids := map[string]bool{}
	for _, m := range entries {
		kv := make([]string, 0, 2*len(m.Values))
		for k, v := range m.Values {
			kv = append(kv, k, v.(string))
		}
		ev, err := events.DecodeEntry(kv)
		if err != nil {
			t.Fatalf("entry %s: %v", m.ID, err)
		}
		if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(ev.EventID) || ids[ev.EventID] {
			t.Errorf("entry %s: event_id %q, want 32 hex digits of its own", m.ID, ev.EventID)
		}
		ids[ev.EventID] = true
		got = append(got, event{ev.UserID, ev.ProductID, ev.Type})
	}
	order := func(a, b event) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) }
	slices.SortFunc(got, order)
	slices.SortFunc(want, order)
	if !slices.Equal(got, want) {
		t.Errorf("the stream holds\n%v\nwant\n%v", got, want)
	}
	t.Logf("dwell times measured by the tracker:\n  %s", strings.Join(dwells, "\n  "))
}
