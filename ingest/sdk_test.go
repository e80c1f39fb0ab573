package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/aggregate"
	"github.com/clickstream/pipeline/internal/metrics/metricstest"
	"github.com/clickstream/pipeline/internal/redistest"
	analytics "github.com/segmentio/analytics-go/v3"
)

// These tests drive ingest with Segment's own Go SDK, analytics-go v3.3.0, unchanged:
// only its Config.Endpoint points at ingest.

// sdkOutcome counts what analytics-go reports through its Callback: a message is a
// success once a request carrying it got a 2xx, a failure once the SDK gave up on it.
type sdkOutcome struct {
	success, failure atomic.Int64
	mu               sync.Mutex
	errs             []error
}

func (o *sdkOutcome) Success(analytics.Message) { o.success.Add(1) }
func (o *sdkOutcome) Failure(_ analytics.Message, err error) {
	o.failure.Add(1)
	o.mu.Lock()
	o.errs = append(o.errs, err)
	o.mu.Unlock()
}

// sdkLog passes the SDK's log lines to the test log.
type sdkLog struct{ t *testing.T }

func (l sdkLog) Logf(format string, args ...any)   { l.t.Logf("analytics-go: "+format, args...) }
func (l sdkLog) Errorf(format string, args ...any) { l.t.Logf("analytics-go error: "+format, args...) }

// newSDK returns an analytics-go client that sends to endpoint with key, in batches of
// up to batchSize, retrying after 10 ms (the SDK's default waits up to 10 s between
// tries).
func newSDK(t *testing.T, svc *ingestUnderTest, endpoint, key string, batchSize int, out *sdkOutcome) analytics.Client {
	t.Helper()
	c, err := analytics.NewWithConfig(key, analytics.Config{
		Endpoint:   endpoint,
		Interval:   100 * time.Millisecond,
		BatchSize:  batchSize,
		Transport:  svc.newClient(0).Transport,
		Callback:   out,
		Logger:     sdkLog{t},
		RetryAfter: func(int) time.Duration { return 10 * time.Millisecond },
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// sdkTraffic is what a test enqueues: tracks of the three mapped names, pages and
// screens, for 7 users and 5 products, with identify calls and tracks of other names
// in between; want is the totals it must come to per user and per product.
type sdkTraffic struct {
	msgs          []analytics.Message
	calls         []nodeCall // the same calls, as analytics-node takes them
	counted       int
	users, prods  map[string]aggregate.Totals
	invalidAtStep int // -1: none; else the message of this step has no product
}

func newSDKTraffic(n, invalidAt int) *sdkTraffic {
	tr := &sdkTraffic{users: map[string]aggregate.Totals{}, prods: map[string]aggregate.Totals{}, invalidAtStep: invalidAt}
	for i := range n {
		user, prod := fmt.Sprintf("user-%d", i%7), fmt.Sprintf("sku-%d", i%5)
		props := analytics.NewProperties().Set("product_id", prod).Set("price", 19.99)
		if i == invalidAt {
			props = analytics.NewProperties().Set("price", 1)
		}
		var ev *events.Event
		track := func(name string) {
			tr.msgs = append(tr.msgs, analytics.Track{UserId: user, Event: name, Properties: props})
			tr.calls = append(tr.calls, nodeCall{"track", map[string]any{"userId": user, "event": name, "properties": props}})
		}
		switch i % 6 {
		case 0:
			track("Product Clicked")
			ev = &events.Event{Type: events.Click}
		case 1:
			tr.msgs = append(tr.msgs, analytics.Page{UserId: user, Name: "Product", Properties: props})
			tr.calls = append(tr.calls, nodeCall{"page", map[string]any{"userId": user, "name": "Product", "properties": props}})
			ev = &events.Event{Type: events.PageView}
		case 2:
			props.Set("duration_ms", 100+i)
			track("Product Dwelled")
			ev = &events.Event{Type: events.Dwell, DurationMs: int64(100 + i)}
		case 3:
			tr.msgs = append(tr.msgs, analytics.Screen{UserId: user, Name: "Product", Properties: props})
			tr.calls = append(tr.calls, nodeCall{"screen", map[string]any{"userId": user, "name": "Product", "properties": props}})
			ev = &events.Event{Type: events.PageView}
		case 4:
			track("Product Viewed")
			ev = &events.Event{Type: events.PageView}
		default:
			traits := analytics.NewTraits().SetEmail(user + "@example.com")
			tr.msgs = append(tr.msgs, analytics.Identify{UserId: user, Traits: traits})
			tr.calls = append(tr.calls, nodeCall{"identify", map[string]any{"userId": user, "traits": traits}})
			track("Order Completed")
		}
		if ev != nil && i != invalidAt {
			tr.counted++
			u, p := tr.users[user], tr.prods[prod]
			u.Add(ev)
			p.Add(ev)
			tr.users[user], tr.prods[prod] = u, p
		}
	}
	return tr
}

// check compares the stream, counted per user and per product, with the traffic's totals.
func (tr *sdkTraffic) check(t *testing.T, svc *ingestUnderTest) {
	t.Helper()
	stored := svc.streamEvents(t)
	users, prods := map[string]aggregate.Totals{}, map[string]aggregate.Totals{}
	ids := map[string]bool{}
	for i := range stored {
		ev := &stored[i]
		u, p := users[ev.UserID], prods[ev.ProductID]
		u.Add(ev)
		p.Add(ev)
		users[ev.UserID], prods[ev.ProductID] = u, p
		if ev.EventID == "" || ids[ev.EventID] {
			t.Errorf("event %+v: no event_id, or one seen before", ev)
		}
		ids[ev.EventID] = true
	}
	if len(stored) != tr.counted {
		t.Errorf("stream holds %d events, want %d", len(stored), tr.counted)
	}
	if !reflect.DeepEqual(users, tr.users) {
		t.Errorf("per user\n got %+v\nwant %+v", users, tr.users)
	}
	if !reflect.DeepEqual(prods, tr.prods) {
		t.Errorf("per product\n got %+v\nwant %+v", prods, tr.prods)
	}
}

// enqueueAll enqueues msgs, waits until the SDK has reported the outcome of each (it
// sends a batch when it is full or every Interval, and retries a failed one), then
// closes the client. Close alone would not do: it stops the retries.
func enqueueAll(t *testing.T, c analytics.Client, msgs []analytics.Message, out *sdkOutcome) {
	t.Helper()
	for _, m := range msgs {
		if err := c.Enqueue(m); err != nil {
			t.Fatalf("Enqueue %+v: %v", m, err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for out.success.Load()+out.failure.Load() < int64(len(msgs)) {
		if time.Now().After(deadline) {
			t.Fatalf("analytics-go reported %d of %d messages in a minute", out.success.Load()+out.failure.Load(), len(msgs))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// Tracks, pages and screens sent by analytics-go arrive and are counted exactly per user
// and product; identify calls and tracks of other names are taken (the SDK hears
// success) and not counted.
func TestAnalyticsGo(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	const key = "wk_go_sdk"
	svc := startIngest(t, rs, map[string]string{"INGEST_KEYS": key})
	tr := newSDKTraffic(600, -1)
	var out sdkOutcome
	enqueueAll(t, newSDK(t, svc, svc.base, key, 100, &out), tr.msgs, &out)
	if out.success.Load() != int64(len(tr.msgs)) || out.failure.Load() != 0 {
		t.Fatalf("analytics-go: %d sent, %d failed (%v); want all %d sent", out.success.Load(), out.failure.Load(), out.errs, len(tr.msgs))
	}
	tr.check(t, svc)
	samples := metricstest.Scrape(t, svc.base+"/metrics")
	samples.Check(t, map[string]float64{
		`ingest_events_total{result="accepted"}`:                             float64(tr.counted),
		`ingest_segment_dropped_total{reason="identify",result="ignored"}`:   100,
		`ingest_segment_dropped_total{reason="track_name",result="ignored"}`: 100,
		`ingest_rejected_requests_total{reason="unauthorized"}`:              0,
		`ingest_events_total{result="duplicate"}`:                            0,
	})
	// 700 messages in batches of at most 100: at least 7 requests, more when the SDK's
	// flush interval ticks before a batch is full (how many is the SDK's timing).
	if n := samples[`http_requests_total{method="POST",route="/v1/batch",status="200"}`]; n < 7 {
		t.Errorf("analytics-go sent %v batches of 700 messages, want at least 7 (100 a batch)", n)
	}
}

// With a wrong write key analytics-go delivers nothing: every try gets a 401, the SDK
// gives up on every message after its 10 tries, and the stream stays empty.
func TestAnalyticsGoWrongKey(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	svc := startIngest(t, rs, map[string]string{"INGEST_KEYS": "wk_right"})
	tr := newSDKTraffic(30, -1)
	var out sdkOutcome
	enqueueAll(t, newSDK(t, svc, svc.base, "wk_wrong", 100, &out), tr.msgs, &out)
	if out.success.Load() != 0 || out.failure.Load() != int64(len(tr.msgs)) {
		t.Errorf("analytics-go: %d sent, %d failed; want all %d failed", out.success.Load(), out.failure.Load(), len(tr.msgs))
	}
	if n := svc.streamLen(t); n != 0 {
		t.Errorf("stream length %d, want 0", n)
	}
	m := metricstest.Scrape(t, svc.base+"/metrics")
	m.Check(t, map[string]float64{
		`ingest_events_total{result="accepted"}`: 0,
	})
	// 10 tries of each batch (the SDK sends the 35 messages in one batch, or two when its
	// interval ticks while they are being enqueued).
	if n := m[`ingest_rejected_requests_total{reason="unauthorized"}`]; n != 10 && n != 20 {
		t.Errorf("%g requests refused with 401, want 10 tries of each batch", n)
	}
}

// A lost acknowledgement: a proxy between analytics-go and ingest lets the first request
// through to ingest, which writes its events, but answers the SDK 503, as a load
// balancer might when the connection to ingest breaks after the write. The SDK sends the
// same batch again; its messageIds make ingest answer duplicates, and every event is
// counted once.
func TestAnalyticsGoLostAcknowledgement(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	svc := startIngest(t, rs, nil)
	var (
		mu      sync.Mutex
		bodies  [][]byte
		answers []string
	)
	client := svc.newClient(0)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("proxy: %v", err)
			return
		}
		req, _ := http.NewRequest(r.Method, svc.base+r.URL.Path, bytes.NewReader(body))
		req.Header = r.Header.Clone()
		a, err := do(client, req)
		if err != nil {
			t.Errorf("proxy: %v", err)
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		mu.Lock()
		first := len(answers) == 0
		bodies = append(bodies, body)
		answers = append(answers, fmt.Sprintf("%d %s", a.status, a.body))
		mu.Unlock()
		if first {
			w.Header().Set("Retry-After", "1")
			http.Error(w, `{"error":"the acknowledgement was lost"}`, http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(a.status)
		w.Write(a.body)
	}))
	defer proxy.Close()

	tr := newSDKTraffic(50, -1)
	var out sdkOutcome
	enqueueAll(t, newSDK(t, svc, proxy.URL, "", 500, &out), tr.msgs, &out)
	if out.success.Load() != int64(len(tr.msgs)) || out.failure.Load() != 0 {
		t.Fatalf("analytics-go: %d sent, %d failed (%v); want all %d sent", out.success.Load(), out.failure.Load(), out.errs, len(tr.msgs))
	}
	mu.Lock()
	defer mu.Unlock()
	n := tr.counted
	want := []string{
		fmt.Sprintf(`200 {"success":true,"accepted":%d,"duplicates":0,"ignored":%d,"rejected":0,"errors":[]}`, n, len(tr.msgs)-n),
		fmt.Sprintf(`200 {"success":true,"accepted":0,"duplicates":%d,"ignored":%d,"rejected":0,"errors":[]}`, n, len(tr.msgs)-n),
	}
	if !reflect.DeepEqual(answers, want) {
		t.Errorf("ingest answered\n%s\nwant\n%s", strings.Join(answers, "\n"), strings.Join(want, "\n"))
	}
	if len(bodies) == 2 && !bytes.Equal(bodies[0], bodies[1]) {
		t.Errorf("the SDK's retry was not the same batch:\n%s\n%s", bodies[0], bodies[1])
	}
	tr.check(t, svc)
}

// One invalid event in a batch (a track without a product) is rejected alone: the SDK
// hears success, and every other event of the batch is counted.
func TestAnalyticsGoInvalidEventCountsOthers(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	svc := startIngest(t, rs, nil)
	tr := newSDKTraffic(40, 12) // the 12th step is a click without product_id
	var out sdkOutcome
	enqueueAll(t, newSDK(t, svc, svc.base, "", 250, &out), tr.msgs, &out)
	if out.success.Load() != int64(len(tr.msgs)) || out.failure.Load() != 0 {
		t.Fatalf("analytics-go: %d sent, %d failed (%v); want all %d sent", out.success.Load(), out.failure.Load(), out.errs, len(tr.msgs))
	}
	tr.check(t, svc)
	metricstest.Scrape(t, svc.base+"/metrics").Check(t, map[string]float64{
		`ingest_segment_dropped_total{reason="product",result="rejected"}`: 1,
		`ingest_events_total{result="accepted"}`:                           float64(tr.counted),
	})
}
