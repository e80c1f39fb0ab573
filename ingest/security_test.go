package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// postAuth posts body as JSON with the given Authorization header ("" sends none).
func (s *ingestUnderTest) postAuth(t *testing.T, path, contentType, authorization, body string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	a, err := do(s.client, req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	return a
}

func basicAuth(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// With INGEST_KEYS set, only a request carrying one of the keys (HTTP Basic username as
// Segment sends it, or Bearer) is accepted; anything else is a 401 that writes nothing
// and says nothing more than "unauthorized". Health endpoints stay open, and the keys
// never reach the log.
func TestIngestKeys(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	const k1, k2 = "wk_live_7f3a9c01", "wk_live_second_42"
	svc := startIngest(t, rs, map[string]string{"INGEST_KEYS": k1 + ", " + k2})
	const body = `{"user_id":"u1","product_id":"p1"}`

	refused := []struct{ name, path, contentType, auth, body string }{
		{"no key", "/v1/events", "application/json", "", body},
		{"no key, /click", "/click", "application/json", "", body},
		{"wrong bearer", "/v1/events", "application/json", "Bearer wk_live_7f3a9c02", body},
		{"wrong basic", "/v1/events", "application/json", basicAuth("wk_live_7f3a9c0", ""), body},
		{"key as the basic password", "/v1/events", "application/json", basicAuth("", k1), body},
		{"bare key", "/click", "application/json", k1, body},
		// Authentication comes first: an unauthenticated client learns nothing about
		// what the API would have said of its request.
		{"no key, wrong content type", "/v1/events", "text/plain", "", body},
		{"no key, invalid event", "/v1/events", "application/json", "", `{"user_id":"u 1"}`},
	}
	for _, tc := range refused {
		a := svc.postAuth(t, tc.path, tc.contentType, tc.auth, tc.body)
		if a.status != http.StatusUnauthorized || strings.TrimSpace(string(a.body)) != `{"error":"unauthorized"}` {
			t.Errorf("%s: %d %s, want 401 {\"error\":\"unauthorized\"}", tc.name, a.status, a.body)
		}
		if ch := a.header.Values("WWW-Authenticate"); len(ch) == 0 || !strings.HasPrefix(ch[0], "Basic ") {
			t.Errorf("%s: WWW-Authenticate %q, want a Basic challenge", tc.name, ch)
		}
	}
	if n := svc.streamLen(t); n != 0 {
		t.Fatalf("stream holds %d entries after refused requests, want 0", n)
	}

	for _, tc := range []struct{ name, path, auth string }{
		{"basic, empty password", "/v1/events", basicAuth(k1, "")},
		{"basic, password ignored", "/v1/events", basicAuth(k2, "whatever")},
		{"bearer", "/click", "Bearer " + k2},
	} {
		if got := accepted(t, svc.postAuth(t, tc.path, "application/json", tc.auth, body)); got != (Accepted{Accepted: 1}) {
			t.Errorf("%s: %+v, want 1 accepted", tc.name, got)
		}
	}
	want := []events.Event{{UserID: "u1", ProductID: "p1"}, {UserID: "u1", ProductID: "p1"}, {UserID: "u1", ProductID: "p1"}}
	if got := svc.streamEvents(t); !reflect.DeepEqual(got, want) {
		t.Errorf("stream holds %+v, want %+v", got, want)
	}

	for _, path := range []string{"/healthz", "/readyz"} {
		if a, err := svc.get(svc.client, path); err != nil || a.status != http.StatusOK {
			t.Errorf("GET %s without a key: %d %v, want 200", path, a.status, err)
		}
	}
	logs := svc.logs.String()
	if strings.Contains(logs, k1) || strings.Contains(logs, k2) {
		t.Errorf("a key is in the log:\n%s", logs)
	}
	if !strings.Contains(logs, "keys=2") || strings.Contains(logs, "open to anyone") {
		t.Errorf("log does not say keys=2, or warns the API is open:\n%s", logs)
	}
}

// Without INGEST_KEYS ingest is open, and says so at start.
func TestIngestWithoutKeysIsOpenAndWarns(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	svc := startIngest(t, rs, nil)
	accepted(t, svc.post(t, "/v1/events", "application/json", `{"user_id":"u1","product_id":"p1"}`, false))
	if logs := svc.logs.String(); !strings.Contains(logs, "INGEST_KEYS is not set: the ingest API is open to anyone") {
		t.Errorf("no warning that the API is open in the log:\n%s", logs)
	}
}

// A malformed INGEST_KEYS stops ingest at start, naming the variable but not the key.
func TestIngestBadKeysConfig(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"wk_live_ok,wk:live:secret", ",,"} {
		vars := map[string]string{"INGEST_KEYS": v}
		err := runWith(context.Background(), func(k string) string { return vars[k] }, io.Discard, nil)
		if err == nil || !strings.Contains(err.Error(), "INGEST_KEYS") || strings.Contains(err.Error(), "secret") {
			t.Errorf("INGEST_KEYS=%q: run returned %v, want an error naming INGEST_KEYS without the key", v, err)
		}
	}
}

// A Redis that requires a password: with the password in REDIS_URL ingest is ready and
// stores events, and the password is masked in the log; without it, or with a wrong
// one, ingest is not ready and answers 503, writing nothing.
func TestRedisPassword(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t, redistest.Args("--requirepass", "s3cret"))
	socket := strings.TrimPrefix(rs.URL(), "unix://")
	withPassword := "unix://:s3cret@" + socket
	opt, err := redis.ParseURL(withPassword)
	if err != nil {
		t.Fatal(err)
	}
	admin := redis.NewClient(opt) // the test's own view of the stream
	t.Cleanup(func() { admin.Close() })

	svc := startIngest(t, rs, map[string]string{"REDIS_URL": withPassword})
	svc.rdb = admin
	if a, err := svc.get(svc.client, "/readyz"); err != nil || a.status != http.StatusOK {
		t.Fatalf("GET /readyz with the password: %d %s %v, want 200", a.status, a.body, err)
	}
	if got := accepted(t, svc.post(t, "/v1/events", "application/json", `{"user_id":"u1","product_id":"p1","event_id":"e1"}`, false)); got != (Accepted{Accepted: 1}) {
		t.Errorf("answer %+v, want 1 accepted", got)
	}
	if n := svc.streamLen(t); n != 1 {
		t.Errorf("stream length %d, want 1", n)
	}
	if logs := svc.logs.String(); strings.Contains(logs, "s3cret") || !strings.Contains(logs, "unix://:xxxxx@") {
		t.Errorf("log shows the password, or no masked REDIS_URL:\n%s", logs)
	}

	for name, url := range map[string]string{"no password": rs.URL(), "wrong password": "unix://:wrong@" + socket} {
		svc := startIngest(t, rs, map[string]string{"REDIS_URL": url, "REDIS_TIMEOUT": "500ms"})
		svc.rdb = admin
		c := svc.newClient(10 * time.Second)
		r, err := svc.get(c, "/readyz")
		if err != nil {
			t.Fatalf("%s: GET /readyz: %v", name, err)
		}
		var body struct{ Status, Reason string }
		if err := json.Unmarshal(r.body, &body); err != nil || r.status != http.StatusServiceUnavailable || body.Status != "not ready" || body.Reason == "" {
			t.Errorf("%s: GET /readyz = %d %s, want 503 not ready with a reason", name, r.status, r.body)
		}
		a, err := svc.tryPost(c, "/v1/events", "application/json", `{"user_id":"u2","product_id":"p2"}`, false)
		if err != nil {
			t.Fatalf("%s: POST: %v", name, err)
		}
		checkUnavailable(t, name+": POST", a)
		if n := svc.streamLen(t); n != 0 {
			t.Errorf("%s: stream length %d, want 0", name, n)
		}
	}
}
