package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/clickstream/pipeline/internal/server/servertest"
)

// Every accepted body shape ends up in the stream as exactly the posted events, in
// order, and the answer counts them.
func TestAcceptedEventsAreInTheStream(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)

	ts1 := time.Now().Add(-time.Minute).UnixMilli()
	ts2 := time.Now().Add(-2 * time.Minute).Truncate(time.Millisecond)

	cases := []struct {
		name        string
		path        string
		contentType string
		body        string
		want        []events.Event
	}{
		{
			name:        "one object",
			path:        "/v1/events",
			contentType: "application/json",
			body:        `{"user_id":"u1","product_id":"p1"}`,
			want:        []events.Event{{UserID: "u1", ProductID: "p1", Type: events.Click}},
		},
		{
			name:        "array of every type",
			path:        "/v1/events",
			contentType: "application/json; charset=utf-8",
			body: `[
				{"user_id":"u1","product_id":"p1","type":"click"},
				{"user_id":"u2","product_id":"p-2","type":"page_view","event_id":"ev:1","ts":` + strconv.FormatInt(ts1, 10) + `},
				{"user_id":"user@example.com","product_id":"p.3","type":"dwell","duration_ms":1500,"ts":"` + ts2.UTC().Format(time.RFC3339Nano) + `"}
			]`,
			want: []events.Event{
				{UserID: "u1", ProductID: "p1", Type: events.Click},
				{UserID: "u2", ProductID: "p-2", Type: events.PageView, EventID: "ev:1", TS: ts1},
				{UserID: "user@example.com", ProductID: "p.3", Type: events.Dwell, DurationMs: 1500, TS: ts2.UnixMilli()},
			},
		},
		{
			name:        "NDJSON",
			path:        "/v1/events",
			contentType: "application/x-ndjson",
			body: "{\"user_id\":\"u1\",\"product_id\":\"p1\",\"type\":\"dwell\",\"duration_ms\":86400000}\r\n" +
				"\n" +
				"{\"user_id\":\"u2\",\"product_id\":\"p2\",\"type\":\"page_view\"}\n" +
				"{\"user_id\":\"u3\",\"product_id\":\"p3\",\"event_id\":\"e-3\"}",
			want: []events.Event{
				{UserID: "u1", ProductID: "p1", Type: events.Dwell, DurationMs: 86_400_000},
				{UserID: "u2", ProductID: "p2", Type: events.PageView},
				{UserID: "u3", ProductID: "p3", Type: events.Click, EventID: "e-3"},
			},
		},
		{
			name:        "NDJSON as application/ndjson",
			path:        "/v1/events",
			contentType: "application/ndjson",
			body:        "{\"user_id\":\"u1\",\"product_id\":\"p1\"}\n{\"user_id\":\"u2\",\"product_id\":\"p2\",\"type\":\"page_view\"}\n",
			want: []events.Event{
				{UserID: "u1", ProductID: "p1", Type: events.Click},
				{UserID: "u2", ProductID: "p2", Type: events.PageView},
			},
		},
		{
			name:        "POST /click",
			path:        "/click",
			contentType: "application/json",
			body:        `{"user_id":"u9","product_id":"p9"}`,
			want:        []events.Event{{UserID: "u9", ProductID: "p9", Type: events.Click}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			svc := startIngest(t, rs, nil)
			got := accepted(t, svc.post(t, tc.path, tc.contentType, tc.body, false))
			if want := (Accepted{Accepted: len(tc.want)}); got != want {
				t.Errorf("answer %+v, want %+v", got, want)
			}
			if stored := svc.streamEvents(t); !reflect.DeepEqual(stored, tc.want) {
				t.Errorf("stream holds\n%+v\nwant\n%+v", stored, tc.want)
			}
		})
	}
}

// Every rejected request gets its status and a JSON error body, and writes nothing.
func TestRejectedRequestsWriteNothing(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	const maxBody, maxEvents = 512, 5
	svc := startIngest(t, rs, map[string]string{
		"MAX_BODY_BYTES":         strconv.Itoa(maxBody),
		"MAX_EVENTS_PER_REQUEST": strconv.Itoa(maxEvents),
	})
	// One event already in the stream, so "unchanged" is not just "still empty".
	accepted(t, svc.post(t, "/v1/events", "application/json", `{"user_id":"seed","product_id":"p"}`, false))

	ok := `{"user_id":"u","product_id":"p"}`
	many := func(n int, sep string) string {
		s := make([]string, n)
		for i := range s {
			s[i] = ok
		}
		return strings.Join(s, sep)
	}
	big := `{"user_id":"` + strings.Repeat("u", 100) + `","product_id":"p"}`
	tooBig := "[" + strings.Repeat(big+",", 5) + big + "]" // > 512 bytes, 6 events
	if len(tooBig) <= maxBody {
		t.Fatalf("test body is %d bytes, want more than %d", len(tooBig), maxBody)
	}
	future := strconv.FormatInt(time.Now().Add(2*time.Hour).UnixMilli(), 10)
	idx := func(i int) *int { return &i }

	cases := []struct {
		name        string
		path        string
		contentType string
		body        string
		chunked     bool
		status      int
		index       *int   // nil: not checked
		mention     string // the error message must contain this
	}{
		// Malformed JSON.
		{name: "truncated object", body: `{"user_id":"u",`, status: 400},
		{name: "not JSON", body: `hello`, status: 400},
		{name: "empty body", body: ``, status: 400},
		{name: "empty array", body: `[]`, status: 400},
		{name: "array of non-objects", body: `[1,2]`, status: 400},
		{name: "trailing data", body: ok + ` x`, status: 400},
		{name: "two objects without array", body: ok + ok, status: 400},
		{name: "unterminated array", body: `[` + ok, status: 400},
		{name: "invalid UTF-8", body: "{\"user_id\":\"u\xff\",\"product_id\":\"p\"}", status: 400},
		{name: "NDJSON line that is not an object", contentType: "application/x-ndjson", body: ok + "\n[1]\n", status: 400, index: idx(1)},
		{name: "NDJSON two objects on one line", contentType: "application/x-ndjson", body: ok + ok + "\n", status: 400, index: idx(0)},

		// An invalid event anywhere in a batch rejects the batch, naming the first one.
		{name: "bad user_id at index 2", body: `[` + ok + `,` + ok + `,{"user_id":"a b","product_id":"p"}]`, status: 400, index: idx(2), mention: "user_id"},
		{name: "missing product_id at index 1", body: `[` + ok + `,{"user_id":"u"},` + ok + `]`, status: 400, index: idx(1), mention: "product_id"},
		{name: "first of two bad events", body: `[` + ok + `,{"user_id":"u","product_id":"{p}"},` + ok + `,{"user_id":"","product_id":"p"}]`, status: 400, index: idx(1), mention: "product_id"},
		{name: "dwell without duration", body: `[{"user_id":"u","product_id":"p","type":"dwell"}]`, status: 400, index: idx(0), mention: "duration_ms"},
		{name: "duration on a click", body: `[` + ok + `,{"user_id":"u","product_id":"p","type":"click","duration_ms":5}]`, status: 400, index: idx(1), mention: "duration_ms"},
		{name: "duration out of range", body: `[{"user_id":"u","product_id":"p","type":"dwell","duration_ms":86400001}]`, status: 400, index: idx(0), mention: "duration_ms"},
		{name: "fractional duration", body: `[{"user_id":"u","product_id":"p","type":"dwell","duration_ms":1.5}]`, status: 400, index: idx(0), mention: "duration_ms"},
		{name: "unknown type", body: `[` + ok + `,` + ok + `,` + ok + `,{"user_id":"u","product_id":"p","type":"purchase"}]`, status: 400, index: idx(3), mention: "type"},
		{name: "user_id not a string", body: `[{"user_id":7,"product_id":"p"}]`, status: 400, index: idx(0), mention: "user_id"},
		{name: "user_id too long", body: `{"user_id":"` + strings.Repeat("u", 129) + `","product_id":"p"}`, status: 400, index: idx(0), mention: "user_id"},
		{name: "ts in the future", body: `[` + ok + `,{"user_id":"u","product_id":"p","ts":` + future + `}]`, status: 400, index: idx(1), mention: "ts"},
		{name: "ts not a time", body: `{"user_id":"u","product_id":"p","ts":"yesterday"}`, status: 400, index: idx(0), mention: "ts"},
		{name: "user_id ..", body: `[` + ok + `,{"user_id":"..","product_id":"p"}]`, status: 400, index: idx(1), mention: "user_id"},
		{name: "product_id .", body: `{"user_id":"u","product_id":"."}`, status: 400, index: idx(0), mention: "product_id"},
		{name: "event_id .. on /click", path: "/click", body: `{"user_id":"u","product_id":"p","event_id":".."}`, status: 400, index: idx(0), mention: "event_id"},
		{name: "bad event_id", body: `{"user_id":"u","product_id":"p","event_id":"a/b"}`, status: 400, index: idx(0), mention: "event_id"},
		{name: "NDJSON bad event at line 2", contentType: "application/x-ndjson", body: ok + "\n" + ok + "\n" + `{"user_id":"u"}` + "\n", status: 400, index: idx(2), mention: "product_id"},
		{name: "duplicate field", body: `{"user_id":"u","product_id":"p","user_id":"v"}`, status: 400, index: idx(0), mention: "user_id"},

		// Unknown fields are rejected, not ignored.
		{name: "unknown field", body: `{"user_id":"u","product_id":"p","color":"red"}`, status: 400, index: idx(0), mention: "color"},
		{name: "unknown field at index 1", body: `[` + ok + `,{"user_id":"u","product_id":"p","UserID":"x"}]`, status: 400, index: idx(1), mention: "UserID"},
		{name: "unknown field on /click", path: "/click", body: `{"user_id":"u","product_id":"p","extra":1}`, status: 400, index: idx(0), mention: "extra"},

		// Size limits.
		{name: "body over MAX_BODY_BYTES", body: tooBig, status: 413, mention: "512 bytes"},
		{name: "body over MAX_BODY_BYTES, chunked", body: tooBig, chunked: true, status: 413, mention: "512 bytes"},
		{name: "NDJSON body over MAX_BODY_BYTES, chunked", contentType: "application/x-ndjson", body: strings.ReplaceAll(tooBig[1:len(tooBig)-1], "},{", "}\n{"), chunked: true, status: 413, mention: "512 bytes"},
		{name: "too many events in an array", body: "[" + many(maxEvents+1, ",") + "]", status: 413, mention: "more than 5 events"},
		{name: "too many events in NDJSON", contentType: "application/x-ndjson", body: many(maxEvents+1, "\n"), status: 413, mention: "more than 5 events"},
		{name: "too many events, chunked", body: "[" + many(maxEvents+1, ",") + "]", chunked: true, status: 413, mention: "more than 5 events"},

		// Content-Type.
		{name: "no Content-Type", contentType: "-", body: ok, status: 415},
		{name: "text/plain", contentType: "text/plain", body: ok, status: 415},
		{name: "form", contentType: "application/x-www-form-urlencoded", body: ok, status: 415},
		{name: "malformed Content-Type", contentType: "application/json; =", body: ok, status: 415},
		{name: "no Content-Type on /click", path: "/click", contentType: "-", body: ok, status: 415},
		{name: "text/plain on /click", path: "/click", contentType: "text/plain", body: ok, status: 415},
		{name: "malformed JSON on /click", path: "/click", body: `{"user_id":`, status: 400},
	}
	for _, tc := range cases {
		path := tc.path
		if path == "" {
			path = "/v1/events"
		}
		ct := tc.contentType
		switch ct {
		case "":
			ct = "application/json"
		case "-":
			ct = ""
		}
		a := svc.post(t, path, ct, tc.body, tc.chunked)
		if a.status != tc.status {
			t.Errorf("%s: status %d, want %d; body %s", tc.name, a.status, tc.status, a.body)
			continue
		}
		e := errorOf(t, a)
		if tc.index != nil {
			if e.Index == nil {
				t.Errorf("%s: error body %s has no index, want %d", tc.name, a.body, *tc.index)
			} else if *e.Index != *tc.index {
				t.Errorf("%s: error body %s has index %d, want %d", tc.name, a.body, *e.Index, *tc.index)
			}
		}
		if !strings.Contains(*e.Error, tc.mention) {
			t.Errorf("%s: error %q does not name %q", tc.name, *e.Error, tc.mention)
		}
		if n := svc.streamLen(t); n != 1 {
			t.Fatalf("%s: stream length %d after a rejected request, want 1", tc.name, n)
		}
	}

	// The limits are inclusive: exactly MAX_EVENTS_PER_REQUEST events are accepted.
	got := accepted(t, svc.post(t, "/v1/events", "application/json", "["+many(maxEvents, ",")+"]", false))
	if got != (Accepted{Accepted: maxEvents}) {
		t.Errorf("answer %+v for %d events, want all accepted", got, maxEvents)
	}
	if n := svc.streamLen(t); n != 1+maxEvents {
		t.Errorf("stream length %d, want %d", n, 1+maxEvents)
	}
}

// A retried event (same event_id) is stored once, however the copies arrive.
func TestDuplicateEventIDIsStoredOnce(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)

	t.Run("posted twice", func(t *testing.T) {
		t.Parallel()
		svc := startIngest(t, rs, nil)
		body := `{"user_id":"u1","product_id":"p1","event_id":"retry-1"}`
		if got := accepted(t, svc.post(t, "/v1/events", "application/json", body, false)); got != (Accepted{Accepted: 1}) {
			t.Errorf("first answer %+v, want accepted 1", got)
		}
		if got := accepted(t, svc.post(t, "/v1/events", "application/json", body, false)); got != (Accepted{Duplicates: 1}) {
			t.Errorf("second answer %+v, want duplicates 1", got)
		}
		// The retry may come through another endpoint and format.
		if got := accepted(t, svc.post(t, "/v1/events", "application/x-ndjson", body+"\n", false)); got != (Accepted{Duplicates: 1}) {
			t.Errorf("NDJSON retry answer %+v, want duplicates 1", got)
		}
		want := []events.Event{{UserID: "u1", ProductID: "p1", EventID: "retry-1"}}
		if stored := svc.streamEvents(t); !reflect.DeepEqual(stored, want) {
			t.Errorf("stream holds %+v, want %+v", stored, want)
		}
	})

	t.Run("twice in one request", func(t *testing.T) {
		t.Parallel()
		svc := startIngest(t, rs, nil)
		body := `[{"user_id":"u1","product_id":"p1","event_id":"same"},{"user_id":"u2","product_id":"p2"},{"user_id":"u1","product_id":"p1","event_id":"same"}]`
		if got := accepted(t, svc.post(t, "/v1/events", "application/json", body, false)); got != (Accepted{Accepted: 2, Duplicates: 1}) {
			t.Errorf("answer %+v, want accepted 2, duplicates 1", got)
		}
		want := []events.Event{
			{UserID: "u1", ProductID: "p1", EventID: "same"},
			{UserID: "u2", ProductID: "p2"},
		}
		if stored := svc.streamEvents(t); !reflect.DeepEqual(stored, want) {
			t.Errorf("stream holds %+v, want %+v", stored, want)
		}
	})

	t.Run("50 concurrent copies", func(t *testing.T) {
		t.Parallel()
		svc := startIngest(t, rs, nil)
		const copies = 50
		body := `{"user_id":"u1","product_id":"p1","type":"page_view","event_id":"storm"}`
		var wg sync.WaitGroup
		answers := make([]answer, copies)
		errs := make([]error, copies)
		start := make(chan struct{})
		for i := range copies {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				answers[i], errs[i] = svc.tryPost(svc.client, "/v1/events", "application/json", body, false)
			}()
		}
		close(start)
		wg.Wait()
		var sum Accepted
		for i, a := range answers {
			if errs[i] != nil {
				t.Fatalf("request %d: %v", i, errs[i])
			}
			got := accepted(t, a)
			sum.Accepted += got.Accepted
			sum.Duplicates += got.Duplicates
		}
		if sum != (Accepted{Accepted: 1, Duplicates: copies - 1}) {
			t.Errorf("answers add up to %+v, want accepted 1, duplicates %d", sum, copies-1)
		}
		want := []events.Event{{UserID: "u1", ProductID: "p1", Type: events.PageView, EventID: "storm"}}
		if stored := svc.streamEvents(t); !reflect.DeepEqual(stored, want) {
			t.Errorf("stream holds %+v, want %+v", stored, want)
		}
	})
}

// checkUnavailable asserts a 503 with Retry-After and a JSON error body.
func checkUnavailable(t *testing.T, what string, a answer) {
	t.Helper()
	if a.status != http.StatusServiceUnavailable {
		t.Fatalf("%s: status %d, want 503; body %s", what, a.status, a.body)
	}
	ra := a.header.Get("Retry-After")
	if n, err := strconv.Atoi(ra); err != nil || n < 1 {
		t.Errorf("%s: Retry-After %q, want a positive number of seconds", what, ra)
	}
}

// retryUntilAccepted posts body (which carries an event_id, so retries are safe) until
// it gets a 202, for at most attempts tries, and returns that answer.
func retryUntilAccepted(t *testing.T, svc *ingestUnderTest, c *http.Client, body string, attempts int) Accepted {
	t.Helper()
	var last answer
	var lastErr error
	for range attempts {
		last, lastErr = svc.tryPost(c, "/v1/events", "application/json", body, false)
		if lastErr == nil && last.status == http.StatusAccepted {
			return accepted(t, last)
		}
		if lastErr == nil && last.status != http.StatusServiceUnavailable {
			t.Fatalf("status %d while Redis recovers, want 503 or 202; body %s", last.status, last.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no 202 after %d attempts; last answer %d %s, err %v", attempts, last.status, last.body, lastErr)
	return Accepted{}
}

// With Redis gone, ingest says so at once (503 + Retry-After, /readyz 503) instead of
// hanging or pretending; once Redis is back it accepts again.
func TestRedisKilledAnswers503ThenRecovers(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	svc := startIngest(t, rs, nil)
	c := svc.newClient(3 * time.Second) // a hang fails the request, and the test
	accepted(t, svc.post(t, "/v1/events", "application/json", `{"user_id":"u0","product_id":"p0"}`, false))

	rs.Kill()
	body := `{"user_id":"u1","product_id":"p1","event_id":"after-kill"}`
	for _, path := range []string{"/v1/events", "/click"} {
		a, err := svc.tryPost(c, path, "application/json", body, false)
		if err != nil {
			t.Fatalf("POST %s with Redis killed did not return: %v", path, err)
		}
		checkUnavailable(t, "POST "+path+" with Redis killed", a)
		errorOf(t, a)
	}
	a, err := svc.get(c, "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz with Redis killed did not return: %v", err)
	}
	checkUnavailable(t, "GET /readyz with Redis killed", a)
	if a, err := svc.get(c, "/healthz"); err != nil || a.status != http.StatusOK {
		t.Errorf("GET /healthz with Redis killed: %d %v, want 200 (the process is alive)", a.status, err)
	}

	rs.Restart() // no persistence: the restarted Redis starts empty
	got := retryUntilAccepted(t, svc, c, body, 100)
	if got.Accepted+got.Duplicates != 1 {
		t.Errorf("answer %+v, want one event accepted or duplicate", got)
	}
	want := []events.Event{{UserID: "u1", ProductID: "p1", EventID: "after-kill"}}
	if stored := svc.streamEvents(t); !reflect.DeepEqual(stored, want) {
		t.Errorf("stream holds %+v after restart, want %+v", stored, want)
	}
	if a, err := svc.get(c, "/readyz"); err != nil || a.status != http.StatusOK {
		t.Errorf("GET /readyz after restart: %d %v, want 200", a.status, err)
	}
}

// A frozen Redis (SIGSTOP: connections open, no answers) must not hang clients either.
// The 503 does not say whether the write happened, so the client retries with the same
// event_id, and the stream holds the event exactly once.
func TestRedisFrozenAnswers503ThenRecovers(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	svc := startIngest(t, rs, nil)
	c := svc.newClient(3 * time.Second)
	accepted(t, svc.post(t, "/v1/events", "application/json", `{"user_id":"u0","product_id":"p0"}`, false))

	rs.Stop()
	body := `{"user_id":"u1","product_id":"p1","type":"dwell","duration_ms":250,"event_id":"while-frozen"}`
	a, err := svc.tryPost(c, "/v1/events", "application/json", body, false)
	if err != nil {
		rs.Cont()
		t.Fatalf("POST with Redis frozen did not return: %v", err)
	}
	checkUnavailable(t, "POST with Redis frozen", a)
	errorOf(t, a)
	r, err := svc.get(c, "/readyz")
	if err != nil {
		rs.Cont()
		t.Fatalf("GET /readyz with Redis frozen did not return: %v", err)
	}
	checkUnavailable(t, "GET /readyz with Redis frozen", r)

	rs.Cont()
	got := retryUntilAccepted(t, svc, c, body, 100)
	t.Logf("answer after SIGCONT: %+v (duplicates 1: the request answered 503 was written after all)", got)
	if got.Accepted+got.Duplicates != 1 {
		t.Errorf("answer %+v, want one event accepted or duplicate", got)
	}
	want := []events.Event{
		{UserID: "u0", ProductID: "p0"},
		{UserID: "u1", ProductID: "p1", Type: events.Dwell, DurationMs: 250, EventID: "while-frozen"},
	}
	if stored := svc.streamEvents(t); !reflect.DeepEqual(stored, want) {
		t.Errorf("stream holds %+v after SIGCONT, want %+v", stored, want)
	}
}

// Many concurrent single-event requests share Redis round trips in the writer; every
// one of them is answered 202 and stored exactly once, unchanged.
func TestConcurrentSingleEventPosts(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	svc := startIngest(t, rs, nil)
	const total, workers = 2000, 32
	c := svc.newClient(30 * time.Second) // a lost request fails rather than hangs

	next := make(chan int)
	go func() {
		defer close(next)
		for i := range total {
			next <- i
		}
	}()
	var mu sync.Mutex
	var failures []string
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				body := fmt.Sprintf(`{"user_id":"u-%d","product_id":"p-%d","type":"dwell","duration_ms":%d}`, i, i%20, i+1)
				a, err := svc.tryPost(c, "/v1/events", "application/json", body, false)
				var got Accepted
				if err == nil && a.status == http.StatusAccepted && json.Unmarshal(a.body, &got) == nil && got == (Accepted{Accepted: 1}) {
					continue
				}
				mu.Lock()
				failures = append(failures, fmt.Sprintf("event %d: %d %s %v", i, a.status, a.body, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d requests not accepted once, e.g. %s", len(failures), total, failures[0])
	}
	if n := svc.streamLen(t); n != total {
		t.Fatalf("stream length %d, want %d", n, total)
	}
	seen := make(map[string]bool, total)
	for _, ev := range svc.streamEvents(t) {
		var i int
		if _, err := fmt.Sscanf(ev.UserID, "u-%d", &i); err != nil {
			t.Fatalf("unexpected event in stream: %+v", ev)
		}
		want := events.Event{UserID: fmt.Sprintf("u-%d", i), ProductID: fmt.Sprintf("p-%d", i%20), Type: events.Dwell, DurationMs: int64(i + 1)}
		if ev != want {
			t.Errorf("stream holds %+v, want %+v", ev, want)
		}
		if seen[ev.UserID] {
			t.Errorf("event %s stored twice", ev.UserID)
		}
		seen[ev.UserID] = true
	}
	if len(seen) != total {
		t.Errorf("stream holds %d distinct events, want %d", len(seen), total)
	}
}

func TestClickEndpointRecordsClicksOnly(t *testing.T) {
	t.Parallel()
	h := startIngest(t, redistest.Start(t), nil)
	for _, tc := range []struct {
		name, ct, body string
		status         int
	}{
		{"page view", "application/json", `{"user_id":"u1","product_id":"p1","type":"page_view"}`, http.StatusBadRequest},
		{"dwell", "application/json", `{"user_id":"u1","product_id":"p1","type":"dwell","duration_ms":5}`, http.StatusBadRequest},
		{"ndjson", "application/x-ndjson", `{"user_id":"u1","product_id":"p1"}`, http.StatusUnsupportedMediaType},
	} {
		a := h.post(t, "/click", tc.ct, tc.body, false)
		if a.status != tc.status || !strings.Contains(string(a.body), `"error"`) {
			t.Errorf("%s: got %d %s, want %d with a JSON error", tc.name, a.status, a.body, tc.status)
		}
	}
	if n := h.streamLen(t); n != 0 {
		t.Fatalf("stream holds %d entries after rejected /click requests, want 0", n)
	}
}

// HEAD is answered wherever GET is, as GET would be without the body; the event
// endpoints take POST only, and say so to HEAD as to GET.
func TestHead(t *testing.T) {
	t.Parallel()
	svc := startIngest(t, redistest.Start(t), nil)
	servertest.CheckHead(t, svc.base, "/healthz", "/readyz", "/metrics", "/v1/events", "/click", "/nope")
}
