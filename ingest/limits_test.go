package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clickstream/pipeline/internal/metrics/metricstest"
	"github.com/clickstream/pipeline/internal/redistest"
)

// rawConn is a client connection written byte for byte, to hold a request half-sent.
type rawConn struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func (s *ingestUnderTest) dial(t *testing.T) *rawConn {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawConn{t: t, conn: conn, r: bufio.NewReader(conn)}
}

func (c *rawConn) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// answer reads the next answer on the connection, waiting at most 10 s for it.
func (c *rawConn) answer() (answer, error) {
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, header: resp.Header, body: b}, err
}

func (c *rawConn) mustAnswer(what string) answer {
	c.t.Helper()
	a, err := c.answer()
	if err != nil {
		c.t.Fatalf("%s: no answer: %v", what, err)
	}
	return a
}

// open reports whether the server still holds the connection open: a read that times
// out, rather than meeting the end of the connection. Call it with no answer pending.
func (c *rawConn) open() bool {
	c.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	_, err := c.r.ReadByte()
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// postHead is the head of a POST /v1/events with a JSON body of length n (-1: chunked).
func postHead(n int) string {
	h := "POST /v1/events HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\n"
	if n < 0 {
		return h + "Transfer-Encoding: chunked\r\n\r\n"
	}
	return h + "Content-Length: " + strconv.Itoa(n) + "\r\n\r\n"
}

// waitMetric polls /metrics until series satisfies ok, for at most 10 s. A series that
// is not there at all fails the test at once.
func (s *ingestUnderTest) waitMetric(t *testing.T, series string, ok func(float64) bool) float64 {
	t.Helper()
	var v float64
	for range 500 {
		m := metricstest.Scrape(t, s.base+"/metrics")
		var found bool
		if v, found = m[series]; !found {
			t.Fatalf("/metrics has no %s", series)
		}
		if ok(v) {
			return v
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s = %g, never the value wanted", series, v)
	return v
}

func eq(want float64) func(float64) bool { return func(v float64) bool { return v == want } }

// paddedBatch is a JSON array of n events padded with spaces to exactly size bytes.
func paddedBatch(n, size int) string {
	ev := `{"user_id":"u1","product_id":"p1"}`
	b := "[" + strings.Repeat(ev+",", n-1) + ev + "]"
	return b + strings.Repeat(" ", size-len(b))
}

// With MAX_INFLIGHT_BYTES of bodies being received, a request whose Content-Length
// would take the total over is refused at once with 503 + Retry-After, before a byte
// of its body is read, and a chunked body is refused once what it has sent would. The
// refused requests write nothing; the held ones are accepted once they finish, and
// their bytes are given back.
func TestInflightBodyBytesLimit(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	const size = 100_000
	svc := startIngest(t, rs, map[string]string{
		"MAX_BODY_BYTES": strconv.Itoa(size), "MAX_INFLIGHT_BYTES": "250000", "HTTP_READ_TIMEOUT": "1m",
		"SEGMENT_MAX_BATCH_BYTES": "250000",
	})
	body := paddedBatch(100, size)
	const gauge = "ingest_inflight_body_bytes"

	// Two bodies of 100,000 bytes, all but the last byte: 200,000 of 250,000 held.
	held := []*rawConn{svc.dial(t), svc.dial(t)}
	for i, c := range held {
		c.send(postHead(size) + body[:size-1])
		svc.waitMetric(t, gauge, eq(float64((i+1)*size)))
	}

	// A third declares 100,000 bytes and sends none of them: it is refused on the length.
	// (net/http reads a short unread body to its end before it sends the answer, so that
	// the connection can be used again: the answer comes once the body is sent, and the
	// body is read into no buffer.)
	const rejected = `ingest_rejected_requests_total{reason="inflight"}`
	third := svc.dial(t)
	third.send(postHead(size))
	svc.waitMetric(t, rejected, eq(1))
	third.send(body)
	a := third.mustAnswer("third body, refused on its Content-Length")
	refused(t, "third body", a, regexp.MustCompile(`^too many request bodies are being received at once \(MAX_INFLIGHT_BYTES\); retry later$`))

	// A chunked body is refused once its buffer would take the total over: at 32 KiB it
	// grows to 64 KiB, and 200,000 + 65,536 > 250,000.
	chunked := svc.dial(t)
	chunked.send(postHead(-1) + fmt.Sprintf("%x\r\n", size-1) + body[:40_000])
	svc.waitMetric(t, rejected, eq(2))
	chunked.send(body[40_000:size-1] + "\r\n0\r\n\r\n")
	a = chunked.mustAnswer("chunked body over the limit")
	refused(t, "chunked body", a, regexp.MustCompile(`MAX_INFLIGHT_BYTES`))
	svc.waitMetric(t, gauge, eq(2*size))

	// The held bodies finish and are written; their bytes are given back.
	for i, c := range held {
		c.send(body[size-1:])
		if got := accepted(t, c.mustAnswer(fmt.Sprintf("held body %d", i))); got != (Accepted{Accepted: 100}) {
			t.Errorf("held body %d: %+v, want 100 accepted", i, got)
		}
	}
	svc.waitMetric(t, gauge, eq(0))
	if got := accepted(t, svc.post(t, "/v1/events", "application/json", body, false)); got != (Accepted{Accepted: 100}) {
		t.Errorf("a body after the held ones: %+v, want 100 accepted", got)
	}
	if n := svc.streamLen(t); n != 300 {
		t.Errorf("stream length %d, want 300: the 3 accepted bodies, nothing of the refused ones", n)
	}
	metricstest.Scrape(t, svc.base+"/metrics").Check(t, map[string]float64{
		rejected: 2,
		`ingest_rejected_requests_total{reason="backpressure"}`: 0,
		`ingest_events_total{result="accepted"}`:                300,
	})
}

// At MAX_CONNECTIONS open connections, a new client is still served: an idle
// keep-alive connection is closed to make room for it, so ingest never holds more than
// MAX_CONNECTIONS. When none is idle, the new connection waits until a request ends.
func TestConnectionLimit(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	const limit = 20
	svc := startIngest(t, rs, map[string]string{"MAX_CONNECTIONS": strconv.Itoa(limit), "HTTP_READ_TIMEOUT": "1m"})
	const ev = `{"user_id":"u1","product_id":"p1"}`
	req := postHead(len(ev)) + ev

	// 60 keep-alive clients, one after the other, each leaving its connection idle.
	var conns []*rawConn
	for i := range 3 * limit {
		c := svc.dial(t)
		c.send(req)
		accepted(t, c.mustAnswer(fmt.Sprintf("client %d", i)))
		conns = append(conns, c)
	}
	var open []*rawConn
	for _, c := range conns {
		if c.open() {
			open = append(open, c)
		}
	}
	if len(open) != limit {
		t.Fatalf("%d of %d idle keep-alive connections still open, want MAX_CONNECTIONS (%d)", len(open), len(conns), limit)
	}
	if !conns[len(conns)-1].open() {
		t.Error("the newest connection was closed, want an older idle one closed instead")
	}
	for i, c := range open { // the ones kept still work
		c.send(req)
		accepted(t, c.mustAnswer(fmt.Sprintf("open connection %d, again", i)))
	}

	// Every slot busy with a request whose body is still coming: a new client waits,
	// and gets its answer as soon as one of them ends.
	body := paddedBatch(1, 1000)
	busy := make([]*rawConn, limit)
	for i := range busy {
		busy[i] = svc.dial(t)
		busy[i].send(postHead(len(body)) + body[:len(body)-1])
	}
	// (No look at /metrics here: it would need a connection too.) Connections are
	// accepted in the order they were made, so this one comes after every busy one.
	late := svc.dial(t)
	late.send(req)
	busy[0].send(body[len(body)-1:])
	accepted(t, busy[0].mustAnswer("the first busy request"))
	accepted(t, late.mustAnswer("the client that waited for a slot"))
	for i, c := range busy[1:] {
		c.send(body[len(body)-1:])
		accepted(t, c.mustAnswer(fmt.Sprintf("busy request %d", i+1)))
	}
	if n := svc.waitMetric(t, "ingest_open_connections", func(v float64) bool { return v <= limit }); n > limit {
		t.Errorf("ingest_open_connections %g, want at most %d", n, limit)
	}
}

// Limits that cannot work stop ingest at start, naming the variable.
func TestLimitsConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		vars map[string]string
		name string
	}{
		{map[string]string{"MAX_INFLIGHT_BYTES": "1000", "MAX_BODY_BYTES": "2000"}, "MAX_INFLIGHT_BYTES"},
		{map[string]string{"MAX_INFLIGHT_BYTES": "lots"}, "MAX_INFLIGHT_BYTES"},
		{map[string]string{"MAX_INFLIGHT_BYTES": "500000", "MAX_BODY_BYTES": "100000"}, "SEGMENT_MAX_BATCH_BYTES"},
		{map[string]string{"SEGMENT_MAX_CALL_BYTES": "0"}, "SEGMENT_MAX_CALL_BYTES"},
		{map[string]string{"SEGMENT_MAX_BATCH_EVENTS": "many"}, "SEGMENT_MAX_BATCH_EVENTS"},
		{map[string]string{"SEGMENT_VIEW_EVENTS": "Product Viewed, Product Clicked"}, "SEGMENT_VIEW_EVENTS"},
		{map[string]string{"MAX_CONNECTIONS": "0"}, "MAX_CONNECTIONS"},
	} {
		err := runWith(context.Background(), func(k string) string { return tc.vars[k] }, io.Discard, nil)
		if err == nil || !strings.Contains(err.Error(), tc.name) {
			t.Errorf("%v: run returned %v, want an error naming %s", tc.vars, err, tc.name)
		}
	}
}
