package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/clickstream/pipeline/internal/testlog"
)

// The processor does not start on a Redis whose maxmemory-policy may evict keys: it
// creates no group and reads nothing; neither does `processor rebuild`. With ALLOW_EVICTION=true it runs, and warns in
// its log and in /readyz; a policy changed to an evicting one while it runs without
// ALLOW_EVICTION makes it not ready, with the reason.
func TestEvictionPolicy(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t, redistest.Args("--maxmemory-policy", "allkeys-lfu"))
	p := newPipeline(t, rs)
	p.xadd(t, randomEvents(14, 10, 5, 5))
	env := map[string]string{"REDIS_URL": rs.URL(), "REDIS_NAMESPACE": p.ns, "CONSUMER_NAME": "proc-e", "PROCESSOR_ADDR": "127.0.0.1:0"}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := runWith(ctx, func(k string) string { return env[k] }, &testlog.Buffer{}, nil)
	const refusal = "Redis maxmemory-policy is allkeys-lfu, not noeviction: under memory pressure Redis deletes keys without a sign, any of them: a user's counts, the checkpoint or the stream itself. Set maxmemory-policy noeviction in Redis (CONFIG SET maxmemory-policy noeviction, and in its config), or ALLOW_EVICTION=true to run anyway"
	if err == nil || err.Error() != refusal {
		t.Fatalf("run with maxmemory-policy allkeys-lfu returned %v, want %q", err, refusal)
	}
	// `processor rebuild` writes a whole generation: it refuses too.
	if err := run(ctx, []string{"processor", "rebuild"}, func(k string) string { return env[k] }, io.Discard, io.Discard); err == nil || err.Error() != refusal {
		t.Errorf("processor rebuild with maxmemory-policy allkeys-lfu returned %v, want %q", err, refusal)
	}
	if groups, err := p.rdb.XInfoGroups(ctx, p.keys.Stream()).Result(); err != nil || len(groups) != 0 {
		t.Errorf("consumer groups after the refused starts: %v, %v; want none", groups, err)
	}

	allowed := map[string]string{"ALLOW_EVICTION": "true", "READ_BLOCK": "100ms"}
	for k, v := range env {
		allowed[k] = v
	}
	readyz, logs, stop := serveProcessor(t, allowed)
	const warning = "Redis maxmemory-policy is allkeys-lfu, not noeviction, and ALLOW_EVICTION=true: running anyway, but under memory pressure"
	if status, body := readyz(); status != http.StatusOK || body["status"] != "ready" || !strings.HasPrefix(body["warning"], warning) {
		t.Errorf("GET /readyz with ALLOW_EVICTION=true: %d %v, want 200 ready with a warning %q…", status, body, warning)
	}
	if !strings.Contains(logs.String(), `level=WARN msg="`+warning) {
		t.Errorf("no warning %q in the log:\n%s", warning, logs)
	}
	p.waitDrained(t) // it runs
	stop()

	if err := p.rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	readyz, logs, _ = serveProcessor(t, env)
	if status, body := readyz(); status != http.StatusOK || len(body) != 1 || body["status"] != "ready" {
		t.Errorf("GET /readyz with noeviction: %d %v, want 200 ready and nothing else", status, body)
	}
	if err := p.rdb.ConfigSet(ctx, "maxmemory-policy", "volatile-random").Err(); err != nil {
		t.Fatal(err)
	}
	const reason = "Redis maxmemory-policy is volatile-random, not noeviction: under memory pressure Redis deletes keys without a sign, and the dedup markers go first (the only keys with a TTL), so client retries are counted twice. Set maxmemory-policy noeviction in Redis (CONFIG SET maxmemory-policy noeviction, and in its config), or ALLOW_EVICTION=true to run anyway"
	if status, body := readyz(); status != http.StatusServiceUnavailable || body["status"] != "not ready" || body["reason"] != reason {
		t.Errorf("GET /readyz after CONFIG SET maxmemory-policy volatile-random: %d %v, want 503 not ready with the reason %q", status, body, reason)
	}
	if !strings.Contains(logs.String(), "not ready: "+reason[:40]) {
		t.Errorf("the log does not say why the processor is not ready:\n%s", logs)
	}
}

// serveProcessor runs the processor with env until stop is called or the test ends,
// and returns a reader of its /readyz and its log. runWith must return nil at stop.
func serveProcessor(t *testing.T, env map[string]string) (readyz func() (int, map[string]string), logs *testlog.Buffer, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs = &testlog.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		err := runWith(ctx, func(k string) string { return env[k] }, logs, ln)
		ln.Close() // if runWith failed before serving, requests fail instead of hanging
		done <- err
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("runWith returned %v after its context was cancelled, want nil", err)
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("processor log:\n%s", logs)
		}
	})
	client := &http.Client{Timeout: 30 * time.Second}
	return func() (int, map[string]string) {
		t.Helper()
		resp, err := client.Get("http://" + ln.Addr().String() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]string
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body
	}, logs, stop
}
