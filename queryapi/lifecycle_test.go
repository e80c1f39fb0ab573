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

// TestLifecycle starts and stops queryapi, with its profiler on, 20 times in this
// process, each time answering a read through the shared reader, and checks that
// each run stopped and waited for every goroutine it started and left go-redis's
// process-wide logger alone.
func TestLifecycle(t *testing.T) {
	s := redistest.Start(t)
	ns := redistest.Namespace(t)
	gen := events.NewKeys(ns).Gen(1)
	if err := s.Client().HSet(context.Background(), gen.User("u1"), events.FieldClicks, 7).Err(); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{"REDIS_URL": s.URL(), "REDIS_NAMESPACE": ns, "DEBUG_ADDR": "127.0.0.1:0"}
	run := func(ctx context.Context, stderr io.Writer, ln net.Listener) error {
		return runWith(ctx, func(k string) string { return vars[k] }, stderr, ln)
	}
	servertest.CheckLifecycle(t, 20, run, func(t testing.TB, base string, c *http.Client) {
		resp, err := c.Get(base + "/user/u1/clicks")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "7" {
			t.Fatalf("GET /user/u1/clicks = %d %q (%v), want 200 7", resp.StatusCode, body, err)
		}
	})
}
