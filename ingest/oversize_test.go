package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/clickstream/pipeline/internal/redistest"
)

// A client that writes its whole request before it reads the answer (Python's urllib
// does) gets the 413 for a body over MAX_BODY_BYTES, not a connection reset: ingest
// reads the rest of the body (up to maxDiscard more) before it answers. Where the body
// had a length or ended, the connection then carries the next request as well.
func TestOversizedBodyAnswered(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	const limit = 64 << 10
	svc := startIngest(t, rs, map[string]string{"MAX_BODY_BYTES": fmt.Sprint(limit), "HTTP_READ_TIMEOUT": "1m"})
	// 12 MiB: more than the kernel's socket buffers hold between the two ends while the
	// server reads nothing, so a server that stopped reading leaves the client unable to
	// finish writing (before ingest read the rest, it closed the connection: the write
	// failed with a reset, and the 413 was never read).
	body := `[` + strings.Repeat(`{"user_id":"u1","product_id":"p1"},`, 12<<20/35) + `{"user_id":"u1","product_id":"p1"}]`
	const ev = `{"user_id":"u2","product_id":"p2"}`
	next := postHead(len(ev)) + ev

	var chunked strings.Builder
	for rest := body; rest != ""; {
		n := min(len(rest), 32<<10)
		fmt.Fprintf(&chunked, "%x\r\n%s\r\n", n, rest[:n])
		rest = rest[n:]
	}
	chunked.WriteString("0\r\n\r\n")

	for _, tc := range []struct {
		name, request string
		path          string
	}{
		{"Content-Length", postHead(len(body)) + body, "/v1/events"},
		{"chunked", postHead(-1) + chunked.String(), "/v1/events"},
		{"Content-Length, Segment batch", strings.Replace(postHead(len(body)), "/v1/events", "/v1/batch", 1) + body, "/v1/batch"},
	} {
		c := svc.dial(t)
		c.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.conn.Write([]byte(tc.request)); err != nil {
			t.Errorf("%s: writing the whole request: %v (the server stopped reading)", tc.name, err)
			continue
		}
		a, err := c.answer()
		if err != nil {
			t.Errorf("%s: no answer after writing the whole request: %v", tc.name, err)
			continue
		}
		want := http.StatusRequestEntityTooLarge
		if tc.path == "/v1/batch" {
			want = http.StatusBadRequest // Segment's answer
		}
		if a.status != want {
			t.Errorf("%s: status %d, want %d; body %s", tc.name, a.status, want, a.body)
			continue
		}
		errorOf(t, a)
		c.send(next)
		accepted(t, c.mustAnswer(tc.name+": the next request on the connection"))
	}
	if n := svc.streamLen(t); n != 3 {
		t.Errorf("stream length %d, want 3: the small events only", n)
	}
}
