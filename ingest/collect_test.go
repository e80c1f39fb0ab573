package main

import (
	"context"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/redistest"
)

// request sends method to path with the given headers and body, failing the test if
// it cannot.
func (s *ingestUnderTest) request(t *testing.T, method, path string, header map[string]string, body string) answer {
	t.Helper()
	req, err := http.NewRequest(method, s.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	a, err := do(s.client, req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return a
}

// beacon posts body to /v1/collect as navigator.sendBeacon posts a string: text/plain,
// the page's Origin, no Authorization header.
func (s *ingestUnderTest) beacon(t *testing.T, query, body string) answer {
	t.Helper()
	return s.request(t, http.MethodPost, "/v1/collect"+query,
		map[string]string{"Content-Type": "text/plain;charset=UTF-8", "Origin": "https://shop.example.com"}, body)
}

func envelope(key string, evs ...string) string {
	k := ""
	if key != "" {
		k = `"writeKey":"` + key + `",`
	}
	return `{` + k + `"events":[` + strings.Join(evs, ",") + `]}`
}

// The tracker's endpoint takes what sendBeacon sends: a text/plain body, the key in the
// body or the URL; a beacon the browser sends twice (the same event_ids) is counted
// once; without a key nothing is written.
func TestCollect(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	const key = "wk_public_1"
	svc := startIngest(t, rs, map[string]string{"INGEST_KEYS": key})
	view := `{"user_id":"anon:5e1f","product_id":"sku-1","type":"page_view","event_id":"b1"}`
	dwell := `{"user_id":"anon:5e1f","product_id":"sku-1","type":"dwell","duration_ms":4200,"event_id":"b2"}`
	click := `{"user_id":"anon:5e1f","product_id":"sku-2","type":"click","event_id":"b3"}`

	// Refused: no key, a wrong one, a key of the right shape in the wrong place.
	for _, tc := range []struct{ name, query, body string }{
		{"no key", "", envelope("", view)},
		{"wrong key in the body", "", envelope("wk_public_2", view)},
		{"wrong key in the URL", "?key=wk_public_2", envelope("", view)},
		{"no key, bare event", "", view},
		{"no key, invalid body", "", `{"events":[{"user_id":"u 1"}]}`},
		{"key after a syntax error", "", `{"events":[{"user_id":}],"writeKey":"` + key + `"}`},
	} {
		a := svc.beacon(t, tc.query, tc.body)
		if a.status != http.StatusUnauthorized || strings.TrimSpace(string(a.body)) != `{"error":"unauthorized"}` {
			t.Errorf("%s: %d %s, want 401 {\"error\":\"unauthorized\"}", tc.name, a.status, a.body)
		}
	}
	if n := svc.streamLen(t); n != 0 {
		t.Fatalf("stream holds %d entries after refused beacons, want 0", n)
	}

	// The key in the body, as t.js sends it.
	if got := accepted(t, svc.beacon(t, "", envelope(key, view, dwell))); got != (Accepted{Accepted: 2}) {
		t.Errorf("first beacon: %+v, want 2 accepted", got)
	}
	// The browser sends the same beacon again (a retry after a lost answer): counted once.
	if got := accepted(t, svc.beacon(t, "", envelope(key, view, dwell))); got != (Accepted{Duplicates: 2}) {
		t.Errorf("the same beacon again: %+v, want 2 duplicates", got)
	}
	// The key in the URL, the body as /v1/events takes it; and an Authorization header.
	if got := accepted(t, svc.beacon(t, "?key="+key, click)); got != (Accepted{Accepted: 1}) {
		t.Errorf("key in the URL: %+v, want 1 accepted", got)
	}
	a := svc.request(t, http.MethodPost, "/v1/collect", map[string]string{"Content-Type": "application/json", "Authorization": "Bearer " + key},
		`[{"user_id":"u7","product_id":"sku-3","type":"page_view"}]`)
	if got := accepted(t, a); got != (Accepted{Accepted: 1}) {
		t.Errorf("Bearer key, JSON array: %+v, want 1 accepted", got)
	}
	a = svc.request(t, http.MethodPost, "/v1/collect?key="+key, map[string]string{"Content-Type": "application/x-ndjson"},
		`{"user_id":"u7","product_id":"sku-3"}`+"\n"+`{"user_id":"u8","product_id":"sku-3"}`+"\n")
	if got := accepted(t, a); got != (Accepted{Accepted: 2}) {
		t.Errorf("NDJSON: %+v, want 2 accepted", got)
	}
	a = svc.request(t, http.MethodPost, "/v1/collect", map[string]string{"Content-Type": "text/plain", "Content-Encoding": "gzip"},
		gzipped(t, envelope(key, `{"user_id":"u9","product_id":"sku-4"}`)))
	if got := accepted(t, a); got != (Accepted{Accepted: 1}) {
		t.Errorf("gzip: %+v, want 1 accepted", got)
	}

	want := []events.Event{
		{UserID: "anon:5e1f", ProductID: "sku-1", Type: events.PageView, EventID: "b1"},
		{UserID: "anon:5e1f", ProductID: "sku-1", Type: events.Dwell, DurationMs: 4200, EventID: "b2"},
		{UserID: "anon:5e1f", ProductID: "sku-2", Type: events.Click, EventID: "b3"},
		{UserID: "u7", ProductID: "sku-3", Type: events.PageView},
		{UserID: "u7", ProductID: "sku-3"},
		{UserID: "u8", ProductID: "sku-3"},
		{UserID: "u9", ProductID: "sku-4"},
	}
	got := svc.streamEvents(t)
	if len(got) != len(want) {
		t.Fatalf("stream holds %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

// /v1/collect refuses what /v1/events refuses, with the same status and message, and
// writes nothing: the decoder is the same (events.DecodeCollect is fuzzed against
// DecodeRequest), so these are the rules where the envelope or the endpoint adds
// something.
func TestCollectRejects(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	const maxBody, maxEvents = 600, 3
	const key = "wk_public_1"
	svc := startIngest(t, rs, map[string]string{"INGEST_KEYS": key,
		"MAX_BODY_BYTES": strconv.Itoa(maxBody), "MAX_EVENTS_PER_REQUEST": strconv.Itoa(maxEvents)})
	accepted(t, svc.beacon(t, "", envelope(key, `{"user_id":"seed","product_id":"p"}`)))
	ok := `{"user_id":"u","product_id":"p"}`
	big := `{"user_id":"` + strings.Repeat("u", 120) + `","product_id":"p"}`
	idx := func(i int) *int { return &i }

	for _, tc := range []struct {
		name, contentType, encoding, body string
		status                            int
		index                             *int
		mention                           string
	}{
		{name: "not JSON", body: `writeKey=` + key, status: 401, mention: "unauthorized"},
		{name: "truncated envelope", body: `{"writeKey":"` + key + `","events":[` + ok, status: 400, mention: "unexpected end"},
		{name: "invalid event at index 1", body: envelope(key, ok, `{"user_id":"u","product_id":"p","type":"dwell","duration_ms":-1}`), status: 400, index: idx(1), mention: "duration_ms"},
		{name: "dwell over the maximum", body: envelope(key, `{"user_id":"u","product_id":"p","type":"dwell","duration_ms":86400001}`), status: 400, index: idx(0), mention: "duration_ms"},
		{name: "unknown field in an event", body: envelope(key, `{"user_id":"u","product_id":"p","url":"/x"}`), status: 400, index: idx(0), mention: "url"},
		{name: "unknown field in the envelope", body: `{"writeKey":"` + key + `","events":[` + ok + `],"sentAt":1}`, status: 400, mention: "sentAt"},
		{name: "no events", body: `{"writeKey":"` + key + `","events":[]}`, status: 400, mention: "no events"},
		{name: "events missing", body: `{"writeKey":"` + key + `"}`, status: 400, mention: "events"},
		{name: "duplicate writeKey", body: `{"writeKey":"` + key + `","writeKey":"x","events":[` + ok + `]}`, status: 400, mention: "writeKey"},
		{name: "too many events", body: envelope(key, ok, ok, ok, ok), status: 413, mention: "more than 3 events"},
		{name: "body over MAX_BODY_BYTES", body: envelope(key, big, big, big, big, big), status: 413, mention: "600 bytes"},
		{name: "form body", contentType: "application/x-www-form-urlencoded", body: envelope(key, ok), status: 415, mention: "text/plain"},
		{name: "no Content-Type", contentType: "-", body: envelope(key, ok), status: 415, mention: "text/plain"},
		{name: "brotli", encoding: "br", body: envelope(key, ok), status: 415, mention: "br"},
		{name: "not gzip", encoding: "gzip", body: envelope(key, ok), status: 400, mention: "gzip"},
	} {
		h := map[string]string{"Content-Type": "text/plain;charset=UTF-8"}
		switch tc.contentType {
		case "-":
			delete(h, "Content-Type")
		case "":
		default:
			h["Content-Type"] = tc.contentType
		}
		if tc.encoding != "" {
			h["Content-Encoding"] = tc.encoding
		}
		a := svc.request(t, http.MethodPost, "/v1/collect", h, tc.body)
		if a.status != tc.status {
			t.Errorf("%s: status %d, want %d; body %s", tc.name, a.status, tc.status, a.body)
			continue
		}
		e := errorOf(t, a)
		if tc.index != nil && (e.Index == nil || *e.Index != *tc.index) {
			t.Errorf("%s: error body %s, want index %d", tc.name, a.body, *tc.index)
		}
		if !strings.Contains(*e.Error, tc.mention) {
			t.Errorf("%s: error %q does not name %q", tc.name, *e.Error, tc.mention)
		}
		if n := svc.streamLen(t); n != 1 {
			t.Fatalf("%s: stream length %d after a rejected beacon, want 1", tc.name, n)
		}
	}
	// Exactly MAX_EVENTS_PER_REQUEST are taken.
	if got := accepted(t, svc.beacon(t, "", envelope(key, ok, ok, ok))); got != (Accepted{Accepted: 3}) {
		t.Errorf("3 events: %+v, want 3 accepted", got)
	}
}

// Backpressure and a Redis that is down refuse beacons as they refuse /v1/events: 503
// with Retry-After, nothing written.
func TestCollectBackpressureAndRedisDown(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	svc := startIngest(t, rs, map[string]string{"MAX_LAG": "2", "BACKPRESSURE_INTERVAL": "20ms"})
	ctx := context.Background()
	group := svc.keys.Gen(1).Group()
	if err := svc.rdb.XGroupCreateMkStream(ctx, svc.keys.Stream(), group, "$").Err(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		accepted(t, svc.beacon(t, "", envelope("", `{"user_id":"u1","product_id":"p1","event_id":"bp-`+strconv.Itoa(i)+`"}`)))
	}
	c := svc.newClient(0)
	svc.waitReady(t, c, 500, "backpressure", func(r readyState) bool { return r.status == http.StatusServiceUnavailable })
	a := svc.beacon(t, "", envelope("", `{"user_id":"u1","product_id":"p1","event_id":"bp-3"}`))
	refused(t, "a beacon while processing is behind", a, regexp.MustCompile(`^processing is behind by 3 entries \(MAX_LAG 2\); retry later$`))
	if n := svc.streamLen(t); n != 3 {
		t.Fatalf("stream length %d, want the 3 accepted", n)
	}

	// Caught up, then Redis goes away.
	if err := svc.rdb.XGroupSetID(ctx, svc.keys.Stream(), group, "$").Err(); err != nil {
		t.Fatal(err)
	}
	svc.waitReady(t, c, 500, "ready again", func(r readyState) bool { return r.status == http.StatusOK })
	rs.Kill()
	a = svc.beacon(t, "", envelope("", `{"user_id":"u1","product_id":"p1","event_id":"down"}`))
	checkUnavailable(t, "a beacon with Redis killed", a)
	if msg := *errorOf(t, a).Error; msg != "storage unavailable, retry later" {
		t.Errorf("a beacon with Redis killed: error %q, want storage unavailable", msg)
	}
}
