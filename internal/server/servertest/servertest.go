// Package servertest checks, for tests of the services, what every service promises
// whatever its routes: HEAD answered wherever GET is; a run that, once its context is
// cancelled, stops and waits for every goroutine it started, and leaves process-wide
// settings alone.
package servertest

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// CheckHead sends GET and then HEAD to each path on base (http://host:port) and fails
// the test unless HEAD gets GET's status and Content-Type and no body. HEAD goes over
// a raw connection, so that body bytes the server sends after the header (which
// net/http's client would hide) are seen.
func CheckHead(t testing.TB, base string, paths ...string) {
	t.Helper()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections() // a kept-alive connection would delay the server's shutdown
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	for _, path := range paths {
		resp, err := client.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()

		head, rest := rawHead(t, strings.TrimPrefix(base, "http://"), path)
		if head.StatusCode != resp.StatusCode {
			t.Errorf("HEAD %s: status %d, GET %d", path, head.StatusCode, resp.StatusCode)
		}
		if got, want := head.Header.Get("Content-Type"), resp.Header.Get("Content-Type"); got != want {
			t.Errorf("HEAD %s: Content-Type %q, GET %q", path, got, want)
		}
		if len(rest) > 0 {
			t.Errorf("HEAD %s: %d bytes of body after the header: %.80q", path, len(rest), rest)
		}
	}
}

// rawHead sends HEAD path on a connection of its own and returns the answer and every
// byte the server sent after it until it closed the connection.
func rawHead(t testing.TB, addr, path string) (*http.Response, []byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, "HEAD "+path+" HTTP/1.1\r\nHost: "+addr+"\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatalf("HEAD %s: %v", path, err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodHead})
	if err != nil {
		t.Fatalf("HEAD %s: %v", path, err)
	}
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("HEAD %s: reading to the end: %v", path, err)
	}
	return resp, rest
}
