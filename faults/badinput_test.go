package faults

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// ingest's documented limits (README, "HTTP API"); the test runs it with the defaults.
const (
	maxBodyBytes = 1 << 20
	maxEvents    = 1000
)

// hostile is one malformed or hostile request and the answer it must get.
type hostile struct {
	name    string
	query   bool   // sent to queryapi (GET) instead of ingest (POST)
	method  string // default POST to ingest, GET to queryapi
	path    string // default /v1/events
	ct      string // Content-Type; "" sends application/json, "-" sends none
	header  []string
	body    string
	big     []byte // a body too large to build per case; used instead of body
	chunked bool   // send the body with Transfer-Encoding: chunked (no length)
	drip    bool   // send the body a byte every 100 ms, declaring a longer length
	status  int
}

// TestHostileRequests sends more than a hundred malformed and hostile requests to the
// real ingest and queryapi. Each gets its documented 4xx status with a JSON error body,
// writes nothing to the stream, and the services stay up; ingest's resident memory does
// not grow with them, nor with 200 ten-megabyte lines and 100 gzip bombs after them.
//
// Ingest runs with HTTP_READ_TIMEOUT=1s so that a body dripped a byte at a time is cut
// off after a second (408) instead of holding a connection and a handler.
func TestHostileRequests(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := startPipeline(ctx, t, setup{ingestEnv: []string{"HTTP_READ_TIMEOUT=1s"}})
	stream := p.keys.Stream()
	xlen := func() int64 {
		t.Helper()
		n, err := p.rdb.XLen(ctx, stream).Result()
		if err != nil {
			t.Fatalf("XLEN %s: %v", stream, err)
		}
		return n
	}

	// One accepted event first, so that "unchanged" is not just "still empty".
	ok := `{"user_id":"u1","product_id":"p1","event_id":"seed-1"}`
	if a := p.send(t, hostile{body: ok}); a.status != http.StatusAccepted {
		t.Fatalf("seed event: %d %s", a.status, a.body)
	}
	if n := xlen(); n != 1 {
		t.Fatalf("stream length %d after the seed event, want 1", n)
	}
	rssBefore, err := p.ingest.RSS()
	if err != nil {
		t.Fatal(err)
	}

	cases := hostileRequests()
	if len(cases) < 60 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, tc := range cases {
		start := time.Now()
		a := p.send(t, tc)
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Logf("%s: answered after %v", tc.name, d.Round(time.Millisecond)) // not an assertion
		}
		switch {
		case a.err != nil:
			t.Errorf("%s: no answer: %v", tc.name, a.err)
		case a.status != tc.status:
			t.Errorf("%s: status %d, want %d; body %s", tc.name, a.status, tc.status, a.body)
		default:
			if err := jsonError(a); err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
		}
		if n := xlen(); n != 1 {
			t.Fatalf("%s: stream length %d after a rejected request, want 1", tc.name, n)
		}
	}

	// Ten megabytes on one line, 200 times: with a length (refused before it is read)
	// and chunked (read up to the limit), in turn.
	line := append(append([]byte(`{"user_id":"`), bytes.Repeat([]byte("u"), 10<<20)...), `","product_id":"p1"}`+"\n"...)
	for i := range 200 {
		a := p.send(t, hostile{name: "10 MB line", ct: "application/x-ndjson", big: line, chunked: i%2 == 1})
		if a.err != nil || a.status != http.StatusRequestEntityTooLarge {
			t.Fatalf("10 MB line #%d (chunked %v): %d %s %v, want 413", i, i%2 == 1, a.status, a.body, a.err)
		}
	}
	if n := xlen(); n != 1 {
		t.Fatalf("stream length %d after the 10 MB lines, want 1", n)
	}

	// 100 gzip bombs of 512 MiB each, about 500 KB compressed: decompression stops at
	// MAX_BODY_BYTES, so they cost no more memory than a body of that size.
	bomb := []byte(gzipBomb(512 << 20))
	for i := range 100 {
		a := p.send(t, hostile{name: "gzip bomb", header: []string{"Content-Encoding", "gzip"}, big: bomb, chunked: i%2 == 1})
		if a.err != nil || a.status != http.StatusRequestEntityTooLarge {
			t.Fatalf("gzip bomb #%d (chunked %v): %d %s %v, want 413", i, i%2 == 1, a.status, a.body, a.err)
		}
	}
	if n := xlen(); n != 1 {
		t.Fatalf("stream length %d after the gzip bombs, want 1", n)
	}

	// Still up, and still accepting.
	if a := p.send(t, hostile{body: `{"user_id":"u2","product_id":"p2","event_id":"after-1"}`}); a.status != http.StatusAccepted {
		t.Errorf("valid event after the hostile ones: %d %s %v, want 202", a.status, a.body, a.err)
	}
	if n := xlen(); n != 2 {
		t.Errorf("stream length %d after the valid event, want 2", n)
	}
	rssAfter, err := p.ingest.RSS()
	if err != nil {
		t.Fatal(err)
	}
	const bound = 64 << 20
	grew := rssAfter - rssBefore
	if grew > bound {
		t.Errorf("ingest's VmRSS grew by %d MiB (from %d to %d MiB) over the hostile requests, want at most %d MiB",
			grew>>20, rssBefore>>20, rssAfter>>20, bound>>20)
	}
	result := "all rejected as documented, memory flat"
	if t.Failed() {
		result = "FAILED"
	}
	t.Logf("RESULT | %-38s | requests %d + 200 × 10 MB | ingest VmRSS %d → %d MiB | %s",
		"bad input", len(cases), rssBefore>>20, rssAfter>>20, result)
}

// hostileRequests is the table: every request here must be refused.
func hostileRequests() []hostile {
	const ok = `{"user_id":"u1","product_id":"p1"}`
	withUser := func(v string) string { return `{"user_id":` + v + `,"product_id":"p1"}` }
	dwell := func(v string) string {
		return `{"user_id":"u1","product_id":"p1","type":"dwell","duration_ms":` + v + `}`
	}
	long := strings.Repeat("x", 129)
	events := func(n int, sep string) string { return strings.Repeat(ok+sep, n-1) + ok }

	// A valid array padded with spaces to exactly MAX_BODY_BYTES, plus one byte.
	full := "[" + events(maxEvents, ",") + "]"
	overByOne := full + strings.Repeat(" ", maxBodyBytes+1-len(full))

	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(ok))
	zw.Close()
	flipped := []byte(gz.String())
	flipped[len(flipped)/2] ^= 0xff
	corrupt := string(flipped)

	cases := []hostile{
		// Truncated and invalid JSON.
		{name: "truncated object", body: `{"user_id":"u1","product_id":"p`, status: 400},
		{name: "truncated after a comma", body: `{"user_id":"u1",`, status: 400},
		{name: "truncated array", body: `[` + ok + `,`, status: 400},
		{name: "truncated escape", body: `{"user_id":"u\`, status: 400},
		{name: "truncated \\u escape", body: `{"user_id":"u\u00`, status: 400},
		{name: "not JSON", body: `hello`, status: 400},
		{name: "single quotes", body: `{'user_id':'u1','product_id':'p1'}`, status: 400},
		{name: "unquoted keys", body: `{user_id:"u1",product_id:"p1"}`, status: 400},
		{name: "trailing comma in object", body: `{"user_id":"u1","product_id":"p1",}`, status: 400},
		{name: "trailing comma in array", body: `[` + ok + `,]`, status: 400},
		{name: "comment", body: `/* hi */` + ok, status: 400},
		{name: "byte order mark", body: "\xef\xbb\xbf" + ok, status: 400},
		{name: "trailing garbage", body: ok + ` x`, status: 400},
		{name: "two objects, no array", body: ok + ok, status: 400},
		{name: "null", body: `null`, status: 400},
		{name: "a string", body: `"u1"`, status: 400},
		{name: "a number", body: `42`, status: 400},
		{name: "true", body: `true`, status: 400},
		{name: "array of numbers", body: `[1,2]`, status: 400},
		{name: "array nested in an array", body: `[[` + ok + `]]`, status: 400},
		{name: "100,000 nested arrays", body: strings.Repeat("[", 100_000), status: 400},
		{name: "50,000 nested objects", body: strings.Repeat(`{"user_id":`, 50_000), status: 400},
		{name: "empty array", body: `[]`, status: 400},
		{name: "empty object", body: `{}`, status: 400},
		{name: "empty body", body: ``, status: 400},
		{name: "whitespace only", body: " \n\t\r ", status: 400},
		{name: "NDJSON under application/json", body: ok + "\n" + ok + "\n", status: 400},
		{name: "array under application/x-ndjson", ct: "application/x-ndjson", body: `[` + ok + `]`, status: 400},
		{name: "NDJSON two objects on a line", ct: "application/x-ndjson", body: ok + ok + "\n", status: 400},
		{name: "NDJSON lines split by CR only", ct: "application/x-ndjson", body: ok + "\r" + ok, status: 400},
		{name: "NDJSON bad third line", ct: "application/x-ndjson", body: ok + "\n" + ok + "\n{\"user_id\":\n", status: 400},
		{name: "corrupt gzip body", header: []string{"Content-Encoding", "gzip"}, body: corrupt, status: 400},
		{name: "truncated gzip body", header: []string{"Content-Encoding", "gzip"}, body: gz.String()[:gz.Len()-4], status: 400},
		{name: "plain body labelled gzip", header: []string{"Content-Encoding", "gzip"}, body: ok, status: 400},
		{name: "gzip bomb (10 MiB of zeros in 10 KB)", header: []string{"Content-Encoding", "gzip"}, body: gzipBomb(10 << 20), status: 413},
		{name: "gzip bomb to /v1/batch", path: "/v1/batch", header: []string{"Content-Encoding", "gzip"}, body: gzipBomb(10 << 20), status: 400},
		{name: "gzip twice", header: []string{"Content-Encoding", "gzip, gzip"}, body: gz.String(), status: 415},

		// Segment's API.
		{name: "/v1/batch not JSON", path: "/v1/batch", body: `{"batch":[{"type":"page",}]}`, status: 400},
		{name: "/v1/batch without batch", path: "/v1/batch", body: `{"type":"page","userId":"u1"}`, status: 400},
		{name: "/v1/batch of 2,501 calls", path: "/v1/batch", body: `{"batch":[` + strings.Repeat(`{"type":"page","userId":"u1","properties":{"product_id":"p1"}},`, 2500) + `{}]}`, status: 400},
		{name: "/v1/batch over 500 KiB", path: "/v1/batch", body: `{"batch":[],"x":"` + strings.Repeat("x", 500<<10) + `"}`, status: 400},
		{name: "/v1/track over 32 KiB", path: "/v1/track", body: `{"event":"Product Clicked","userId":"u1","x":"` + strings.Repeat("x", 32<<10) + `"}`, status: 400},
		{name: "/v1/track invalid UTF-8", path: "/v1/track", body: "{\"event\":\"Product Clicked\",\"userId\":\"u\xff\"}", status: 400},
		{name: "/v1/page 50,000 nested arrays", path: "/v1/page", body: `{"properties":` + strings.Repeat("[", 50_000), status: 400},
		{name: "plain body labelled br", header: []string{"Content-Encoding", "br"}, body: ok, status: 415},
		{name: "UTF-16 body", ct: "application/json; charset=utf-16", body: utf16(ok), status: 400},

		// Invalid UTF-8.
		{name: "invalid UTF-8 in an id", body: withUser("\"u\xff\""), status: 400},
		{name: "overlong UTF-8", body: withUser("\"u\xc0\xaf\""), status: 400},
		{name: "UTF-8 surrogate bytes", body: withUser("\"u\xed\xa0\x80\""), status: 400},
		{name: "lone surrogate escape", body: withUser(`"u\ud800"`), status: 400},
		{name: "invalid UTF-8 in a key", body: "{\"user_\xff\":\"u1\",\"product_id\":\"p1\"}", status: 400},
		{name: "invalid UTF-8 between tokens", body: "{\xff\"user_id\":\"u1\",\"product_id\":\"p1\"}", status: 400},

		// Wrong types.
		{name: "user_id a number", body: withUser(`7`), status: 400},
		{name: "user_id null", body: withUser(`null`), status: 400},
		{name: "user_id an array", body: withUser(`["u1"]`), status: 400},
		{name: "user_id an object", body: withUser(`{"id":"u1"}`), status: 400},
		{name: "user_id true", body: withUser(`true`), status: 400},
		{name: "type a number", body: `{"user_id":"u1","product_id":"p1","type":1}`, status: 400},
		{name: "type unknown", body: `{"user_id":"u1","product_id":"p1","type":"purchase"}`, status: 400},
		{name: "type in capitals", body: `{"user_id":"u1","product_id":"p1","type":"CLICK"}`, status: 400},
		{name: "duration_ms a string", body: dwell(`"100"`), status: 400},
		{name: "duration_ms true", body: dwell(`true`), status: 400},
		{name: "duration_ms null", body: dwell(`null`), status: 400},
		{name: "event_id a number", body: `{"user_id":"u1","product_id":"p1","event_id":12}`, status: 400},
		{name: "ts true", body: `{"user_id":"u1","product_id":"p1","ts":true}`, status: 400},
		{name: "ts not a time", body: `{"user_id":"u1","product_id":"p1","ts":"yesterday"}`, status: 400},

		// NaN, Infinity, huge and out-of-range numbers.
		{name: "duration_ms NaN", body: dwell(`NaN`), status: 400},
		{name: "duration_ms Infinity", body: dwell(`Infinity`), status: 400},
		{name: "duration_ms -Infinity", body: dwell(`-Infinity`), status: 400},
		{name: "duration_ms 1e400", body: dwell(`1e400`), status: 400},
		{name: "duration_ms 2^64", body: dwell(`18446744073709551616`), status: 400},
		{name: "duration_ms 10^30", body: dwell(`1` + strings.Repeat("0", 30)), status: 400},
		{name: "duration_ms 1.5", body: dwell(`1.5`), status: 400},
		{name: "duration_ms 1e3", body: dwell(`1e3`), status: 400},
		{name: "duration_ms leading zero", body: dwell(`0100`), status: 400},
		{name: "duration_ms hex", body: dwell(`0x10`), status: 400},
		{name: "duration_ms plus sign", body: dwell(`+5`), status: 400},
		{name: "duration_ms over a day", body: dwell(`86400001`), status: 400},
		{name: "duration_ms zero", body: dwell(`0`), status: 400},
		{name: "duration_ms negative", body: dwell(`-1`), status: 400},
		{name: "duration_ms minus zero", body: dwell(`-0`), status: 400},
		{name: "dwell without duration_ms", body: `{"user_id":"u1","product_id":"p1","type":"dwell"}`, status: 400},
		{name: "duration_ms on a click", body: `{"user_id":"u1","product_id":"p1","type":"click","duration_ms":5}`, status: 400},
		{name: "ts 2^63", body: `{"user_id":"u1","product_id":"p1","ts":9223372036854775808}`, status: 400},
		{name: "ts negative", body: `{"user_id":"u1","product_id":"p1","ts":-1}`, status: 400},
		{name: "ts in the year 3000", body: `{"user_id":"u1","product_id":"p1","ts":"3000-01-01T00:00:00Z"}`, status: 400},
		{name: "ts in the year 1", body: `{"user_id":"u1","product_id":"p1","ts":"0001-01-01T00:00:00Z"}`, status: 400},
		{name: "ts a fraction", body: `{"user_id":"u1","product_id":"p1","ts":1.7e12}`, status: 400},

		// Ids that would change a Redis key's meaning, or are just not ids.
		{name: "user_id with {", body: withUser(`"a{b"`), status: 400},
		{name: "user_id with }", body: withUser(`"a}b"`), status: 400},
		{name: "user_id a hash tag", body: withUser(`"{cs}:events"`), status: 400},
		{name: "user_id { escaped", body: withUser(`"a\u007bb"`), status: 400},
		{name: "user_id with a space", body: withUser(`"a b"`), status: 400},
		{name: "user_id with a raw tab", body: withUser("\"a\tb\""), status: 400},
		{name: "user_id with \\u0001", body: withUser(`"a\u0001b"`), status: 400},
		{name: "user_id with NUL", body: withUser(`"a\u0000b"`), status: 400},
		{name: "user_id with \\n", body: withUser(`"a\nb"`), status: 400},
		{name: "user_id with DEL", body: withUser("\"a\x7fb\""), status: 400},
		{name: "user_id with a slash", body: withUser(`"a/b"`), status: 400},
		{name: "user_id with *", body: withUser(`"u*"`), status: 400},
		{name: "user_id non-ASCII", body: withUser(`"ü"`), status: 400},
		{name: "user_id empty", body: withUser(`""`), status: 400},
		{name: "user_id 129 chars", body: withUser(`"` + long + `"`), status: 400},
		{name: "product_id 129 chars", body: `{"user_id":"u1","product_id":"` + long + `"}`, status: 400},
		{name: "event_id 129 chars", body: `{"user_id":"u1","product_id":"p1","event_id":"` + long + `"}`, status: 400},
		{name: "event_id with }", body: `{"user_id":"u1","product_id":"p1","event_id":"e}1"}`, status: 400},
		{name: "missing user_id", body: `{"product_id":"p1"}`, status: 400},
		{name: "missing product_id", body: `{"user_id":"u1"}`, status: 400},

		// Duplicate and unknown keys.
		{name: "duplicate user_id", body: `{"user_id":"u1","product_id":"p1","user_id":"u2"}`, status: 400},
		{name: "duplicate type", body: `{"user_id":"u1","product_id":"p1","type":"click","type":"page_view"}`, status: 400},
		{name: "duplicate key, one escaped", body: `{"user_id":"u1","product_id":"p1","user\u005fid":"u2"}`, status: 400},
		{name: "unknown field", body: `{"user_id":"u1","product_id":"p1","color":"red"}`, status: 400},
		{name: "field name in other case", body: `{"User_ID":"u1","product_id":"p1"}`, status: 400},
		{name: "bad event deep in a batch", body: "[" + events(500, ",") + `,{"user_id":"a b","product_id":"p1"}]`, status: 400},
		{name: "bad 1,000th event", body: "[" + events(maxEvents-1, ",") + `,{"user_id":"u1","product_id":"p1","type":"dwell"}]`, status: 400},

		// Sizes.
		{name: "body one byte over MAX_BODY_BYTES", body: overByOne, status: 413},
		{name: "body one byte over MAX_BODY_BYTES, chunked", body: overByOne, chunked: true, status: 413},
		{name: "1,001 events", body: "[" + events(maxEvents+1, ",") + "]", status: 413},
		{name: "1,001 events, NDJSON", ct: "application/x-ndjson", body: events(maxEvents+1, "\n"), status: 413},
		{name: "1,001 events, chunked", body: "[" + events(maxEvents+1, ",") + "]", chunked: true, status: 413},
		{name: "10 MB announced, Expect: 100-continue", header: []string{"Expect", "100-continue"}, big: make([]byte, 10<<20), status: 413},

		// Content types.
		{name: "no Content-Type", ct: "-", body: ok, status: 415},
		{name: "text/plain", ct: "text/plain", body: ok, status: 415},
		{name: "form", ct: "application/x-www-form-urlencoded", body: "user_id=u1&product_id=p1", status: 415},
		{name: "multipart", ct: "multipart/form-data; boundary=x", body: ok, status: 415},
		{name: "malformed Content-Type", ct: "application/json; =", body: ok, status: 415},
		{name: "application/jsonx", ct: "application/jsonx", body: ok, status: 415},
		{name: "bare json", ct: "json", body: ok, status: 415},
		{name: "empty Content-Type", ct: " ", body: ok, status: 415},
		{name: "/click without Content-Type", path: "/click", ct: "-", body: ok, status: 415},
		{name: "/click malformed", path: "/click", body: `{"user_id":`, status: 400},
		{name: "/click with an unknown field", path: "/click", body: `{"user_id":"u1","product_id":"p1","x":1}`, status: 400},

		// Bodies dripped a byte every 100 ms, cut off by HTTP_READ_TIMEOUT.
		{name: "slow drip", body: ok + strings.Repeat(" ", 500), drip: true, status: 408},
		{name: "slow drip, chunked", body: ok + strings.Repeat(" ", 500), drip: true, chunked: true, status: 408},

		// Routes that do not exist.
		{name: "GET /v1/events", method: http.MethodGet, body: "", status: 405},
		{name: "unknown path", path: "/v1/event", body: ok, status: 404},
	}

	// queryapi: bad ids and limits.
	for _, id := range []string{long, "a%7Bb", "a%7Db", "%7Bcs%7D:events", "a%20b", "a%01b", "a%00", "a%7F",
		"%C3%BC", "%FF", "a%2Fb", "a*b", "a%0Ab"} {
		cases = append(cases,
			hostile{name: "user id " + abbrev(id), query: true, path: "/v1/users/" + id, status: 400},
			hostile{name: "product id " + abbrev(id), query: true, path: "/v1/products/" + id, status: 400})
	}
	cases = append(cases,
		hostile{name: "clicks of a bad user id", query: true, path: "/user/a%20b/clicks", status: 400},
		hostile{name: "clicks of a 129-char user id", query: true, path: "/user/" + long + "/clicks", status: 400})
	for _, limit := range []string{"0", "101", "-1", "abc", "1.5", "1e1", "0x10", "99999999999999999999", "%00", "%2010", "10%00"} {
		cases = append(cases, hostile{name: "top limit=" + limit, query: true, path: "/v1/products/top?limit=" + limit, status: 400})
	}
	return cases
}

// utf16 encodes an ASCII string as UTF-16LE with a byte order mark.
func utf16(s string) string {
	b := []byte{0xff, 0xfe}
	for i := 0; i < len(s); i++ {
		b = append(b, s[i], 0)
	}
	return string(b)
}

func abbrev(s string) string {
	if len(s) > 12 {
		return s[:8] + "…(" + strconv.Itoa(len(s)) + ")"
	}
	return s
}

// answer is what a raw request got.
type answer struct {
	status int
	header http.Header
	body   string
	err    error // no answer
}

// send makes the request over a connection of its own, written byte for byte as tc
// says (net/http's client would fix up or refuse some of these requests), and reads the
// answer while the body is still being written: a server may answer and close before
// reading a body it refuses.
func (p *pipeline) send(t *testing.T, tc hostile) answer {
	t.Helper()
	addr := p.ingestAddr
	method := http.MethodPost
	if tc.query {
		addr, method = p.queryAddr, http.MethodGet
	}
	if tc.method != "" {
		method = tc.method
	}
	path := tc.path
	if path == "" {
		path = "/v1/events"
	}
	body := []byte(tc.body)
	if tc.big != nil {
		body = tc.big
	}

	conn, err := net.DialTimeout("tcp", addr, clientTimeout)
	if err != nil {
		return answer{err: err}
	}
	var head bytes.Buffer
	fmt.Fprintf(&head, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, path, addr)
	if !tc.query {
		switch tc.ct {
		case "":
			head.WriteString("Content-Type: application/json\r\n")
		case "-":
		default:
			fmt.Fprintf(&head, "Content-Type: %s\r\n", tc.ct)
		}
		if tc.chunked {
			head.WriteString("Transfer-Encoding: chunked\r\n")
		} else {
			declared := len(body)
			if tc.drip {
				declared += 1000 // more than will come before the server gives up
			}
			fmt.Fprintf(&head, "Content-Length: %d\r\n", declared)
		}
	}
	for i := 0; i+1 < len(tc.header); i += 2 {
		fmt.Fprintf(&head, "%s: %s\r\n", tc.header[i], tc.header[i+1])
	}
	head.WriteString("\r\n")

	stop := make(chan struct{})
	var writing sync.WaitGroup
	writing.Add(1)
	go func() {
		defer writing.Done()
		if _, err := conn.Write(head.Bytes()); err != nil || tc.query {
			return
		}
		var r io.Reader = bytes.NewReader(body)
		if tc.drip {
			r = &drip{data: body, stop: stop}
		}
		w := io.Writer(conn)
		var cw io.WriteCloser
		if tc.chunked {
			cw = httputil.NewChunkedWriter(conn)
			w = cw
		}
		if _, err := io.Copy(w, r); err != nil {
			return // the server stopped reading: fine, its answer is what counts
		}
		if cw != nil {
			cw.Close()
			conn.Write([]byte("\r\n"))
		}
	}()
	defer func() {
		close(stop)
		conn.Close() // ends a write the server stopped reading
		writing.Wait()
	}()

	// Long enough for any of these answers (the dripped ones come after
	// HTTP_READ_TIMEOUT); a server that never answers fails the case, not the run.
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		return answer{err: fmt.Errorf("reading the answer: %w", err)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{err: fmt.Errorf("reading the answer's body: %w", err)}
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// drip is a body that arrives a byte every 100 ms, until stop is closed.
type drip struct {
	data []byte
	stop <-chan struct{}
}

func (d *drip) Read(b []byte) (int, error) {
	if len(d.data) == 0 {
		return 0, io.EOF
	}
	select {
	case <-d.stop:
		return 0, errors.New("stopped")
	case <-time.After(100 * time.Millisecond):
	}
	b[0] = d.data[0]
	d.data = d.data[1:]
	return 1, nil
}

// jsonError checks that an error answer is {"error":"…"} (and optionally an index)
// with a JSON Content-Type.
func jsonError(a answer) error {
	if ct := a.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return fmt.Errorf("Content-Type %q, want application/json; body %q", ct, a.body)
	}
	var e struct {
		Error *string `json:"error"`
		Index *int    `json:"index"`
	}
	dec := json.NewDecoder(strings.NewReader(a.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return fmt.Errorf("body %q is not {\"error\":…}: %v", a.body, err)
	}
	if e.Error == nil || *e.Error == "" {
		return fmt.Errorf("body %q has no \"error\"", a.body)
	}
	return nil
}

// gzipBomb is n zero bytes, gzip-compressed (about n/1000 bytes).
func gzipBomb(n int) string {
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
	zero := make([]byte, 64<<10)
	for ; n > 0; n -= len(zero) {
		zw.Write(zero[:min(n, len(zero))])
	}
	zw.Close()
	return b.String()
}
