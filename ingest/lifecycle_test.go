package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/clickstream/pipeline/internal/server/servertest"
)

// TestLifecycle starts and stops ingest, with its profiler on and its backpressure
// checks every 10 ms, 20 times in this process, each time posting an event, and
// checks that each run stopped and waited for every goroutine it started and left
// go-redis's process-wide logger alone.
func TestLifecycle(t *testing.T) {
	s := redistest.Start(t)
	ns := redistest.Namespace(t)
	vars := map[string]string{"REDIS_URL": s.URL(), "REDIS_NAMESPACE": ns, "DEBUG_ADDR": "127.0.0.1:0",
		"BACKPRESSURE_INTERVAL": "10ms"}
	run := func(ctx context.Context, stderr io.Writer, ln net.Listener) error {
		return runWith(ctx, func(k string) string { return vars[k] }, stderr, ln)
	}
	servertest.CheckLifecycle(t, 20, run, func(t testing.TB, base string, c *http.Client) {
		resp, err := c.Post(base+"/v1/events", "application/json", strings.NewReader(`{"user_id":"u1","product_id":"p1"}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("POST /v1/events = %d %s, want 202", resp.StatusCode, body)
		}
	})
	if n := s.Client().XLen(context.Background(), events.NewKeys(ns).Stream()).Val(); n != 20 {
		t.Errorf("stream length %d after 20 accepted posts, want 20", n)
	}
}
