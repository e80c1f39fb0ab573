package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/metrics/metricstest"
	"github.com/clickstream/pipeline/internal/redistest"
)

// segmentAnswer decodes a Segment endpoint's 200, failing the test on any other answer.
func segmentAnswer(t *testing.T, a answer) SegmentAnswer {
	t.Helper()
	if a.status != http.StatusOK {
		t.Fatalf("status %d, want 200; body %s", a.status, a.body)
	}
	var got SegmentAnswer
	dec := json.NewDecoder(bytes.NewReader(a.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil || !got.Success || got.Errors == nil {
		t.Fatalf("200 body %q is not a Segment answer with success and errors: %v", a.body, err)
	}
	return got
}

// call is one Segment call, written as the SDKs write them.
func call(typ, event, user string, props string, extra ...string) string {
	s := `{"type":"` + typ + `"`
	if event != "" {
		s += `,"event":"` + event + `"`
	}
	if user != "" {
		s += `,"userId":"` + user + `"`
	}
	if props != "" {
		s += `,"properties":` + props
	}
	for _, e := range extra {
		s += "," + e
	}
	return s + `,"context":{"library":{"name":"analytics-test","version":"1.0"}}}`
}

func batchOf(calls ...string) string { return `{"batch":[` + strings.Join(calls, ",") + `]}` }

// Every Segment endpoint takes what the SDKs send and maps it to the contract: tracks
// by name, pages and screens, messageId as event_id, anonymousId prefixed, timestamps
// corrected by sentAt; identify, group, alias and other tracks are ignored, invalid calls
// rejected with their index, and the others of the batch are written all the same.
func TestSegmentEndpoints(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	svc := startIngest(t, rs, nil)
	now := time.Now().UTC()
	past := now.Add(-2 * time.Hour)
	const props = `{"product_id":"p1","price":12.5}`

	body := `{"messageId":"batch-1","batch":[` + strings.Join([]string{
		call("track", "Product Clicked", "u1", props, `"messageId":"m-1"`),
		call("track", "Product Viewed", "", props, `"anonymousId":"a-1"`, `"messageId":"m-2"`),
		call("track", "Product Dwelled", "u1", `{"sku":"s1","duration_ms":2500}`, `"messageId":"m 3"`),
		call("page", "", "u1", props, `"name":"Shoe"`, `"messageId":"m-4"`, `"timestamp":"`+past.Format(time.RFC3339Nano)+`"`,
			// The client's clock is 10 s ahead: its sentAt says so.
			`"sentAt":"`+now.Add(10*time.Second).Format(time.RFC3339Nano)+`"`),
		call("screen", "", "u2", `{"sku":"s2"}`, `"messageId":"m-5"`),
		call("identify", "", "u1", "", `"traits":{"email":"u1@example.com"}`),
		call("track", "Order Completed", "u1", props),
		call("track", "Product Clicked", "", props),
		call("page", "", "u1", `{"url":"/"}`),
		call("track", "Product Dwelled", "u1", `{"product_id":"p1","duration_ms":-5}`),
		call("group", "", "u1", "", `"groupId":"g1"`),
		call("alias", "", "u1", "", `"previousId":"a-1"`),
	}, ",") + `],"sentAt":"` + now.Format(time.RFC3339Nano) + `","context":{"library":{"name":"analytics-test"}}}`
	got := segmentAnswer(t, svc.post(t, "/v1/batch", "application/json", body, false))
	want := SegmentAnswer{Success: true, Accepted: 5, Ignored: 4, Rejected: 3, Errors: []SegmentError{
		{Index: 7, Error: "userId or anonymousId: one is required"},
		{Index: 8, Error: "properties.product_id (or properties.sku): is required"},
		{Index: 9, Error: "properties.duration_ms: must be an integer from 1 to 86400000"},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("answer\n got %+v\nwant %+v", got, want)
	}

	stored := svc.streamEvents(t)
	if len(stored) != 5 {
		t.Fatalf("stream holds %d events, want 5: %+v", len(stored), stored)
	}
	page := stored[3]
	// receivedAt − (sentAt − timestamp): the page happened 2 h 10 s before ingest received it.
	if skew := now.Add(-2*time.Hour-10*time.Second).UnixMilli() - page.TS; skew < -60_000 || skew > 60_000 {
		t.Errorf("page ts %d is %d ms from its corrected time", page.TS, skew)
	}
	page.TS = 0
	wantStored := []events.Event{
		{UserID: "u1", ProductID: "p1", Type: events.Click, EventID: "m-1"},
		{UserID: "anon:a-1", ProductID: "p1", Type: events.PageView, EventID: "m-2"},
		{UserID: "u1", ProductID: "s1", Type: events.Dwell, DurationMs: 2500, EventID: events.SegmentEventID("m 3")},
		{UserID: "u1", ProductID: "p1", Type: events.PageView, EventID: "m-4"},
		{UserID: "u2", ProductID: "s2", Type: events.PageView, EventID: "m-5"},
	}
	stored[3] = page
	if !reflect.DeepEqual(stored, wantStored) {
		t.Errorf("stream\n got %+v\nwant %+v", stored, wantStored)
	}

	// The single-call endpoints: the path gives the type.
	single := []struct {
		path, body string
		want       SegmentAnswer
	}{
		{"/v1/track", `{"event":"Product Clicked","userId":"u3","properties":{"product_id":"p3"},"messageId":"t-1"}`, SegmentAnswer{Accepted: 1}},
		{"/v1/page", `{"userId":"u3","properties":{"product_id":"p3"},"messageId":"t-2"}`, SegmentAnswer{Accepted: 1}},
		{"/v1/screen", `{"anonymousId":"a3","properties":{"sku":"p3"}}`, SegmentAnswer{Accepted: 1}},
		{"/v1/import", batchOf(call("page", "", "u3", `{"product_id":"p3"}`, `"messageId":"t-1"`)), SegmentAnswer{Duplicates: 1}},
		{"/v1/identify", `{"userId":"u3","traits":{"plan":"pro"}}`, SegmentAnswer{Ignored: 1}},
		{"/v1/group", `{"userId":"u3","groupId":"g"}`, SegmentAnswer{Ignored: 1}},
		{"/v1/alias", `{"userId":"u3","previousId":"a3"}`, SegmentAnswer{Ignored: 1}},
		{"/v1/track", `{"event":"Signed Up","userId":"u3"}`, SegmentAnswer{Ignored: 1}},
		{"/v1/track", `{"event":"Product Clicked","properties":{"product_id":"p3"}}`,
			SegmentAnswer{Rejected: 1, Errors: []SegmentError{{Index: 0, Error: "userId or anonymousId: one is required"}}}},
		{"/v1/batch", `{"batch":[]}`, SegmentAnswer{}},
	}
	for _, c := range single {
		got := segmentAnswer(t, svc.post(t, c.path, "", c.body, false))
		c.want.Success = true
		if c.want.Errors == nil {
			c.want.Errors = []SegmentError{}
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("POST %s %s:\n got %+v\nwant %+v", c.path, c.body, got, c.want)
		}
	}
	if n := svc.streamLen(t); n != 8 {
		t.Errorf("stream length %d, want 8", n)
	}
	metricstest.Scrape(t, svc.base+"/metrics").Check(t, map[string]float64{
		`ingest_segment_dropped_total{reason="identify",result="ignored"}`:   2,
		`ingest_segment_dropped_total{reason="group",result="ignored"}`:      2,
		`ingest_segment_dropped_total{reason="alias",result="ignored"}`:      2,
		`ingest_segment_dropped_total{reason="track_name",result="ignored"}`: 2,
		`ingest_segment_dropped_total{reason="user",result="rejected"}`:      2,
		`ingest_segment_dropped_total{reason="product",result="rejected"}`:   1,
		`ingest_segment_dropped_total{reason="duration",result="rejected"}`:  1,
		`ingest_segment_dropped_total{reason="timestamp",result="rejected"}`: 0,
		`ingest_events_total{result="accepted"}`:                             8,
		`ingest_events_total{result="duplicate"}`:                            1,
	})
}

// Calls with one messageId, in one batch or in two, are written once; an answer names
// the first 10 rejected calls and counts them all.
func TestSegmentDuplicatesAndErrors(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	svc := startIngest(t, rs, nil)
	click := call("track", "Product Clicked", "u1", `{"product_id":"p1"}`, `"messageId":"same"`)
	got := segmentAnswer(t, svc.post(t, "/v1/batch", "", batchOf(click, click, click), false))
	if got.Accepted != 1 || got.Duplicates != 2 {
		t.Errorf("one messageId three times in a batch: %+v, want 1 accepted and 2 duplicates", got)
	}
	var calls []string
	for i := range 12 {
		calls = append(calls, call("page", "", "u1", `{"product_id":"p 1"}`), call("page", "", "u1", `{"product_id":"p1"}`, fmt.Sprintf(`"messageId":"pv-%d"`, i)))
	}
	got = segmentAnswer(t, svc.post(t, "/v1/batch", "", batchOf(calls...), false))
	if got.Accepted != 12 || got.Rejected != 12 || len(got.Errors) != 10 || got.Errors[9].Index != 18 {
		t.Errorf("12 bad and 12 good calls: %+v, want 12 accepted, 12 rejected, errors for the first 10 (the last at index 18)", got)
	}
	if n := svc.streamLen(t); n != 13 {
		t.Errorf("stream length %d, want 13", n)
	}
}

// With INGEST_KEYS, the write key is taken as HTTP Basic user name (every SDK), as a
// Bearer token, or from the body's writeKey (analytics-node); without one of the keys
// the request is a 401 and nothing is written.
func TestSegmentKeys(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	const key = "wk_seg_1"
	svc := startIngest(t, rs, map[string]string{"INGEST_KEYS": "other," + key})
	n := 0
	body := func(writeKey string) string {
		n++
		c := call("track", "Product Clicked", "u1", `{"product_id":"p1"}`, fmt.Sprintf(`"messageId":"k-%d"`, n))
		if writeKey != "" {
			return `{"writeKey":"` + writeKey + `","batch":[` + c + `]}`
		}
		return batchOf(c)
	}
	for _, tc := range []struct {
		name, path, auth, body string
		status                 int
	}{
		{"basic", "/v1/batch", basicAuth(key, ""), body(""), 200},
		{"bearer", "/v1/import", "Bearer " + key, body(""), 200},
		{"writeKey in the body", "/v1/batch", "", body(key), 200},
		{"writeKey in a single call", "/v1/track", "", `{"writeKey":"` + key + `","event":"Product Clicked","userId":"u1","properties":{"product_id":"p1"}}`, 200},
		{"wrong header, right writeKey", "/v1/batch", basicAuth("nope", ""), body(key), 200},
		{"no key", "/v1/batch", "", body(""), 401},
		{"wrong basic", "/v1/batch", basicAuth("wk_seg_2", ""), body(""), 401},
		{"wrong writeKey", "/v1/batch", "", body("wk_seg_2"), 401},
		{"key as basic password", "/v1/page", basicAuth("", key), `{"userId":"u1","properties":{"product_id":"p1"}}`, 401},
		{"malformed body without a key", "/v1/batch", "", `{"batch":[`, 401},
		{"identify without a key", "/v1/identify", "", `{"userId":"u1"}`, 401},
	} {
		a := svc.postAuth(t, tc.path, "application/json", tc.auth, tc.body)
		if a.status != tc.status {
			t.Errorf("%s: status %d, want %d; body %s", tc.name, a.status, tc.status, a.body)
			continue
		}
		if tc.status == 401 {
			if e := errorOf(t, a); *e.Error != "unauthorized" || len(a.header.Values("WWW-Authenticate")) != 2 {
				t.Errorf("%s: %s %v, want unauthorized with two challenges", tc.name, a.body, a.header)
			}
		}
	}
	if n := svc.streamLen(t); n != 5 {
		t.Errorf("stream length %d, want 5: the authorized calls only", n)
	}
	metricstest.Scrape(t, svc.base+"/metrics").Check(t, map[string]float64{
		`ingest_rejected_requests_total{reason="unauthorized"}`: 6,
	})
}

// Segment's limits: a single call over SEGMENT_MAX_CALL_BYTES and a batch over
// SEGMENT_MAX_BATCH_BYTES or SEGMENT_MAX_BATCH_EVENTS get 400 and write nothing; a call
// of a batch over SEGMENT_MAX_CALL_BYTES is rejected alone.
func TestSegmentLimits(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	svc := startIngest(t, rs, map[string]string{"SEGMENT_MAX_BATCH_EVENTS": "50", "SEGMENT_MAX_BATCH_BYTES": "20000",
		"SEGMENT_MAX_CALL_BYTES": "1000"})
	small := call("page", "", "u1", `{"product_id":"p1"}`)
	large := call("page", "", "u1", `{"product_id":"p1","description":"`+strings.Repeat("d", 1000)+`"}`)
	for _, tc := range []struct {
		name, path, body string
		chunked          bool
		msg              string
	}{
		{"single call over the limit", "/v1/track", `{"event":"Product Clicked","userId":"u1","properties":{"product_id":"p1","d":"` + strings.Repeat("d", 1000) + `"}}`, false,
			"request body larger than 1000 bytes (Segment's limit per call; the SDKs stay under it)"},
		{"batch over the limit, chunked", "/v1/batch", batchOf(slices(large, 20)...), true,
			"request body larger than 20000 bytes (Segment's limit per batch; the SDKs stay under it)"},
		{"51 calls", "/v1/batch", batchOf(slices(small, 51)...), false, "more than 50 calls in one batch (SEGMENT_MAX_BATCH_EVENTS)"},
		{"not JSON", "/v1/batch", `{"batch":[` + small + `,]}`, false, "invalid JSON value at byte "},
		{"no batch", "/v1/batch", `{"calls":[]}`, false, "batch: is required: an array of calls"},
	} {
		a := svc.post(t, tc.path, "application/json", tc.body, tc.chunked)
		if a.status != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400; body %s", tc.name, a.status, a.body)
			continue
		}
		if msg := *errorOf(t, a).Error; !strings.HasPrefix(msg, tc.msg) {
			t.Errorf("%s: error %q, want %q", tc.name, msg, tc.msg)
		}
	}
	if n := svc.streamLen(t); n != 0 {
		t.Fatalf("stream length %d after the refused requests, want 0", n)
	}
	got := segmentAnswer(t, svc.post(t, "/v1/batch", "", batchOf(append(slices(small, 49), large)...), false))
	want := SegmentAnswer{Success: true, Accepted: 49, Rejected: 1, Errors: []SegmentError{{Index: 49, Error: "call larger than 1000 bytes"}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("49 calls and one too large: %+v, want %+v", got, want)
	}
	metricstest.Scrape(t, svc.base+"/metrics").Check(t, map[string]float64{
		`ingest_rejected_requests_total{reason="too_large"}`:                 2,
		`ingest_rejected_requests_total{reason="too_many"}`:                  1,
		`ingest_rejected_requests_total{reason="invalid"}`:                   2,
		`ingest_segment_dropped_total{reason="too_large",result="rejected"}`: 1,
	})
}

func slices(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// Redis down: a Segment endpoint answers 503 with Retry-After, which every SDK retries,
// and nothing is half-written; once Redis is back the retry is written once.
func TestSegmentRedisDown(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	svc := startIngest(t, rs, nil)
	c := svc.newClient(3 * time.Second)
	body := batchOf(call("page", "", "u1", `{"product_id":"p1"}`, `"messageId":"down-1"`),
		call("track", "Product Clicked", "u1", `{"product_id":"p1"}`, `"messageId":"down-2"`))
	rs.Kill()
	a, err := svc.tryPost(c, "/v1/batch", "application/json", body, false)
	if err != nil {
		t.Fatalf("POST /v1/batch with Redis killed: %v", err)
	}
	checkUnavailable(t, "POST /v1/batch with Redis killed", a)
	rs.Restart()
	for i := 0; ; i++ {
		a, err = svc.tryPost(c, "/v1/batch", "application/json", body, false)
		if err == nil && a.status == http.StatusOK {
			break
		}
		if i == 100 {
			t.Fatalf("no 200 after Redis came back: %v %d %s", err, a.status, a.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := segmentAnswer(t, a); got.Accepted+got.Duplicates != 2 {
		t.Errorf("answer %+v, want 2 events accepted or duplicate", got)
	}
	if n := svc.streamLen(t); n != 2 {
		t.Errorf("stream length %d, want 2", n)
	}
}
