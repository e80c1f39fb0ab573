package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clickstream/pipeline/internal/redistest"
)

// A client that drips its request a byte a second is cut off by HTTP_READ_TIMEOUT: the
// server answers 4xx or closes the connection instead of holding it (and a handler)
// open, nothing is written, and the service goes on answering other clients.
func TestSlowClientIsCutOff(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	svc := startIngest(t, rs, map[string]string{"HTTP_READ_TIMEOUT": "500ms"})
	const body = `{"user_id":"u1","product_id":"p1"}`
	head := "POST /v1/events HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n"

	cases := []struct {
		name        string
		sent, drips string // sent at once, then dripped
	}{
		// The headers arrive at once, the handler starts reading the body and is
		// stopped by the read deadline.
		{"body", head, body},
		// The headers themselves drip: HTTP_READ_TIMEOUT caps the header phase too.
		{"headers", head[:20], head[20:] + body},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, err := drip(t, strings.TrimPrefix(svc.base, "http://"), tc.sent, tc.drips)
			switch {
			case err != nil:
				t.Fatal(err)
			case status == 0:
				t.Logf("server closed the connection without an answer")
			case status >= 400 && status < 500:
				t.Logf("server answered %d", status)
			default:
				t.Fatalf("server answered %d, want 4xx or a closed connection", status)
			}
		})
	}
	if n := svc.streamLen(t); n != 0 {
		t.Fatalf("stream length %d after cut-off requests, want 0", n)
	}
	accepted(t, svc.post(t, "/v1/events", "application/json", body, false))
	if n := svc.streamLen(t); n != 1 {
		t.Fatalf("stream length %d, want 1", n)
	}
}

// drip sends sent, then drips one byte a second, and returns the status the server
// answers (0 when it closes the connection without one). An error means the server
// still held the connection, silent, at the client's deadline of a few seconds.
func drip(t *testing.T, addr, sent, drips string) (int, error) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(3 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, sent); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := range len(drips) {
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
			if _, err := io.WriteString(conn, drips[i:i+1]); err != nil {
				return // the server has closed the connection
			}
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return 0, errors.New("the server held a dripping client's connection open, silent, for 3 s")
		}
		// EOF or a reset: the server closed the connection.
		return 0, nil
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
