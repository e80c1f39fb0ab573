package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/clickstream/pipeline/internal/server/servertest"
	"github.com/clickstream/pipeline/internal/testlog"
)

// TestLifecycle starts and stops a processor, with its profiler on and its claim,
// reap and retention loops running often, 20 times in this process, each time
// applying an event, and checks that each run stopped and waited for every goroutine
// it started and left go-redis's process-wide logger alone.
func TestLifecycle(t *testing.T) {
	rs := redistest.Start(t)
	p := newPipeline(t, rs)
	vars := map[string]string{"REDIS_URL": rs.URL(), "REDIS_NAMESPACE": p.ns, "CONSUMER_NAME": "c1",
		"DEBUG_ADDR": "127.0.0.1:0", "READ_BLOCK": "100ms", "CLAIM_MIN_IDLE": "20ms",
		"CONSUMER_EXPIRY": "1s", "STREAM_RETENTION": "1s"}
	run := func(ctx context.Context, stderr io.Writer, ln net.Listener) error {
		return runWith(ctx, func(k string) string { return vars[k] }, stderr, ln)
	}
	applied := int64(0)
	servertest.CheckLifecycle(t, 20, run, func(t testing.TB, base string, c *http.Client) {
		if _, err := p.tryXadd([]events.Event{{Type: events.Click, UserID: "u1", ProductID: "p1"}}); err != nil {
			t.Fatal(err)
		}
		applied++
		deadline := time.Now().Add(30 * time.Second)
		for {
			n, _ := p.rdb.HGet(context.Background(), p.gen.User("u1"), events.FieldClicks).Int64()
			if n == applied {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("u1 has %d clicks after 30 s, want %d", n, applied)
			}
			time.Sleep(5 * time.Millisecond)
		}
		resp, err := c.Get(base + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /healthz = %d, want 200", resp.StatusCode)
		}
	})
}

// TestHTTPFailure closes a processor's listener under it, which makes its HTTP server
// fail: run must return that error by itself, having stopped and waited for the read,
// apply, claim, reap and retention loops, also while Redis is frozen (their calls in
// flight then take REDIS_TIMEOUT to give up) and while it still waits for Redis at
// start.
func TestHTTPFailure(t *testing.T) {
	env := map[string]string{"CONSUMER_NAME": "c1", "READ_BLOCK": "100ms", "REDIS_TIMEOUT": "1s",
		"CLAIM_MIN_IDLE": "20ms", "CONSUMER_EXPIRY": "1s", "STREAM_RETENTION": "1s"}
	t.Run("consuming", func(t *testing.T) {
		rs := redistest.Start(t)
		p := newPipeline(t, rs)
		env["REDIS_URL"], env["REDIS_NAMESPACE"] = rs.URL(), p.ns
		before := servertest.TakeGoroutines()
		ln, done, logs := startFailing(t, env)
		evs := []events.Event{{Type: events.Click, UserID: "u1", ProductID: "p1"}}
		p.xadd(t, evs)
		p.waitDrained(t)
		rs.Stop()
		defer rs.Cont()
		// Once a read has failed, the claim and reap loops are in calls that last as long.
		deadline := time.Now().Add(60 * time.Second)
		for !strings.Contains(logs.String(), "failed") {
			if time.Now().After(deadline) {
				t.Fatal("no read failed 60 s after Redis was frozen")
			}
			time.Sleep(5 * time.Millisecond)
		}
		ln.Close()
		checkFailed(t, done)
		before.CheckReturned(t)
		rs.Cont()
		before.CheckSettled(t)
	})
	t.Run("waiting for redis", func(t *testing.T) {
		env["REDIS_URL"], env["REDIS_NAMESPACE"] = "unix://"+t.TempDir()+"/no.sock", "ns"
		before := servertest.TakeGoroutines()
		ln, done, _ := startFailing(t, env)
		ln.Close()
		checkFailed(t, done)
		before.CheckReturned(t)
		before.CheckSettled(t)
	})
}

// startFailing starts a processor whose context is never cancelled, on a listener the
// test closes.
func startFailing(t *testing.T, env map[string]string) (net.Listener, chan error, *testlog.Buffer) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := &testlog.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("processor log:\n%s", logs.String())
		}
	})
	done := make(chan error, 1)
	go func() { done <- runWith(context.Background(), func(k string) string { return env[k] }, logs, ln) }()
	// Wait until it serves, so that closing the listener fails its server rather than
	// Serve's first Accept.
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	resp, err := c.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return ln, done, logs
}

// checkFailed waits for run to return, and fails t unless it returned the HTTP
// server's error.
func checkFailed(t *testing.T, done chan error) {
	t.Helper()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("run returned %v after its listener was closed, want its Accept error", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("run has not returned 60 s after its HTTP server failed")
	}
}
