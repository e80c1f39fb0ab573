package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/clickstream/pipeline/internal/testlog"
	"github.com/redis/go-redis/v9"
)

// ingestUnderTest is one ingest service running in-process against a test's Redis.
type ingestUnderTest struct {
	base   string // http://127.0.0.1:port
	keys   events.Keys
	rdb    *redis.Client         // the test's own client, for looking at the stream
	layout events.Layout         // STREAM_PARTITIONS's, with keys its first partition
	all    redis.UniversalClient // the test's own client, a cluster's too
	client *http.Client
	logs   *testlog.Buffer // the service's log

	mu         sync.Mutex
	transports []*http.Transport
}

// startIngest runs the whole ingest service (runWith) on 127.0.0.1:0, with its own
// namespace on rs. env adds or overrides variables. The service is stopped when the
// test ends, and runWith must then return nil.
func startIngest(t *testing.T, rs *redistest.Server, env map[string]string) *ingestUnderTest {
	t.Helper()
	svc := startIngestOn(t, rs.URL(), rs.Client(), env)
	svc.rdb = rs.Client()
	return svc
}

// startIngestOn is startIngest on the Redis (or cluster) at url, with rdb the test's
// client of it.
func startIngestOn(t *testing.T, url string, rdb redis.UniversalClient, env map[string]string) *ingestUnderTest {
	t.Helper()
	ns := redistest.Namespace(t)
	vars := map[string]string{
		"REDIS_URL":       url,
		"REDIS_NAMESPACE": ns,
	}
	for k, v := range env {
		vars[k] = v
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(vars["STREAM_PARTITIONS"])
	ns = vars["REDIS_NAMESPACE"]
	svc := &ingestUnderTest{
		base:   "http://" + ln.Addr().String(),
		keys:   events.NewKeys(ns),
		layout: events.NewLayout(ns, n),
		all:    rdb,
	}
	svc.client = svc.newClient(0)
	logs := &testlog.Buffer{}
	svc.logs = logs
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runWith(ctx, func(k string) string { return vars[k] }, logs, ln) }()
	t.Cleanup(func() {
		// A connection the client dialled but never used is "new" to the server, and
		// a graceful shutdown waits seconds for it: close them first.
		svc.mu.Lock()
		for _, tr := range svc.transports {
			tr.CloseIdleConnections()
		}
		svc.mu.Unlock()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("runWith returned %v after its context was cancelled, want nil", err)
		}
		if t.Failed() {
			t.Logf("ingest log:\n%s", logs.String())
		}
	})
	return svc
}

// newClient returns an HTTP client of its own (timeout 0: none), whose idle
// connections are closed before the service stops.
func (s *ingestUnderTest) newClient(timeout time.Duration) *http.Client {
	tr := &http.Transport{MaxIdleConns: 64, MaxIdleConnsPerHost: 64}
	s.mu.Lock()
	s.transports = append(s.transports, tr)
	s.mu.Unlock()
	return &http.Client{Transport: tr, Timeout: timeout}
}

// answer is an HTTP response, read in full.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// post sends body to path. contentType "" sends no Content-Type header. chunked hides
// the length, so the body goes out with Transfer-Encoding: chunked.
func (s *ingestUnderTest) post(t *testing.T, path, contentType, body string, chunked bool) answer {
	t.Helper()
	a, err := s.tryPost(s.client, path, contentType, body, chunked)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	return a
}

func (s *ingestUnderTest) tryPost(c *http.Client, path, contentType, body string, chunked bool) (answer, error) {
	var r io.Reader = strings.NewReader(body)
	if chunked {
		r = io.MultiReader(r) // not a *strings.Reader: net/http cannot know the length
	}
	req, err := http.NewRequest(http.MethodPost, s.base+path, r)
	if err != nil {
		return answer{}, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return do(c, req)
}

func (s *ingestUnderTest) get(c *http.Client, path string) (answer, error) {
	req, err := http.NewRequest(http.MethodGet, s.base+path, nil)
	if err != nil {
		return answer{}, err
	}
	return do(c, req)
}

func do(c *http.Client, req *http.Request) (answer, error) {
	resp, err := c.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// accepted decodes a 202's body, failing the test on any other answer.
func accepted(t *testing.T, a answer) Accepted {
	t.Helper()
	if a.status != http.StatusAccepted {
		t.Fatalf("status %d, want 202; body %s", a.status, a.body)
	}
	var got Accepted
	dec := json.NewDecoder(bytes.NewReader(a.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("202 body %q is not {accepted, duplicates}: %v", a.body, err)
	}
	return got
}

// errorBody is the JSON every error answer carries.
type errorBody struct {
	Error *string `json:"error"`
	Index *int    `json:"index"`
}

// errorOf checks that a is a JSON error body with a non-empty "error" and returns it.
func errorOf(t *testing.T, a answer) errorBody {
	t.Helper()
	if ct := a.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("error answer has Content-Type %q, want application/json; body %q", ct, a.body)
	}
	var e errorBody
	if err := json.Unmarshal(a.body, &e); err != nil {
		t.Fatalf("error body %q is not JSON: %v", a.body, err)
	}
	if e.Error == nil || *e.Error == "" {
		t.Fatalf("error body %q has no \"error\" field", a.body)
	}
	return e
}

// streamEvents returns every entry of the stream, decoded, in stream order.
func (s *ingestUnderTest) streamEvents(t *testing.T) []events.Event {
	t.Helper()
	msgs, err := s.rdb.XRange(context.Background(), s.keys.Stream(), "-", "+").Result()
	if err != nil {
		t.Fatalf("XRANGE %s: %v", s.keys.Stream(), err)
	}
	out := make([]events.Event, 0, len(msgs))
	for _, m := range msgs {
		kv := make([]string, 0, 2*len(m.Values))
		for k, v := range m.Values {
			kv = append(kv, k, v.(string))
		}
		ev, err := events.DecodeEntry(kv)
		if err != nil {
			t.Fatalf("stream entry %s %v does not decode: %v", m.ID, m.Values, err)
		}
		out = append(out, ev)
	}
	return out
}

func (s *ingestUnderTest) streamLen(t *testing.T) int64 {
	t.Helper()
	n, err := s.rdb.XLen(context.Background(), s.keys.Stream()).Result()
	if err != nil {
		t.Fatalf("XLEN %s: %v", s.keys.Stream(), err)
	}
	return n
}
