package main

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/clickstream/pipeline/internal/testlog"
)

// evictingRe matches the message of a refused evicting policy: it names the setting,
// its value, why it matters and both ways out.
func evictingRe(policy string) *regexp.Regexp {
	return regexp.MustCompile(`^Redis maxmemory-policy is ` + policy + `, not noeviction: under memory pressure Redis deletes keys without a sign.*\. ` +
		`Set maxmemory-policy noeviction in Redis .*, or ALLOW_EVICTION=true to run anyway$`)
}

// Ingest does not start on a Redis whose maxmemory-policy may evict keys: run returns
// an error that names the setting, the policy and why, before anything listens or
// writes. Where CONFIG is not allowed (renamed away, as on managed Redis services) the
// policy comes from INFO memory.
func TestEvictingRedisRefusedAtStart(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		policy, why string
		args        []string
	}{
		{"volatile-lru", "the dedup markers go first (the only keys with a TTL), so client retries are counted twice", nil},
		{"allkeys-lru", "a user's counts, the checkpoint or the stream itself", nil},
		{"volatile-ttl", "the dedup markers go first", []string{"--rename-command", "CONFIG", ""}},
	} {
		rs := redistest.Start(t, redistest.Args(append([]string{"--maxmemory-policy", c.policy}, c.args...)...))
		ns := redistest.Namespace(t)
		vars := map[string]string{"REDIS_URL": rs.URL(), "REDIS_NAMESPACE": ns, "INGEST_ADDR": "127.0.0.1:0"}
		logs := &testlog.Buffer{}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := runWith(ctx, func(k string) string { return vars[k] }, logs, nil)
		cancel()
		if err == nil || !evictingRe(c.policy).MatchString(err.Error()) || !strings.Contains(err.Error(), c.why) {
			t.Errorf("maxmemory-policy %s (CONFIG renamed: %v): run returned %v, want an error naming the setting, %s and why (%q)",
				c.policy, c.args != nil, err, c.policy, c.why)
		}
		if strings.Contains(logs.String(), "listening") {
			t.Errorf("maxmemory-policy %s: ingest listened before refusing to start:\n%s", c.policy, logs)
		}
		if n, err := rs.Client().DBSize(context.Background()).Result(); err != nil || n != 0 {
			t.Errorf("maxmemory-policy %s: Redis holds %d keys (%v) after the refused start, want none", c.policy, n, err)
		}
	}
}

// With ALLOW_EVICTION=true ingest runs on an evicting Redis, logs a warning saying what
// that risks, and /readyz is 200 with the warning.
func TestAllowEviction(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t, redistest.Args("--maxmemory-policy", "volatile-lru"))
	svc := startIngest(t, rs, map[string]string{"ALLOW_EVICTION": "true"})
	accepted(t, svc.post(t, "/v1/events", "application/json", `{"user_id":"u1","product_id":"p1","event_id":"e1"}`, false))
	const warning = "Redis maxmemory-policy is volatile-lru, not noeviction, and ALLOW_EVICTION=true: running anyway, but under memory pressure Redis deletes keys without a sign, and the dedup markers go first"
	if logs := svc.logs.String(); !strings.Contains(logs, "level=WARN msg=\""+warning) {
		t.Errorf("no warning %q in the log:\n%s", warning, logs)
	}
	r := svc.ready(t, svc.newClient(10*time.Second))
	if r.status != http.StatusOK || r.Status != "ready" || !strings.HasPrefix(r.Warning, warning) {
		t.Errorf("GET /readyz: %d %+v, want 200 ready with the warning %q", r.status, r, warning)
	}
}

// A policy set to an evicting one while ingest runs (CONFIG SET) stops writes: 503 with
// the reason and Retry-After, nothing written, /readyz not ready with the reason. Set
// back, ingest accepts again by itself.
func TestEvictionPolicyChangedWhileRunning(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	svc := startIngest(t, rs, map[string]string{"BACKPRESSURE_INTERVAL": "20ms"})
	ctx := context.Background()
	c := svc.newClient(10 * time.Second)
	accepted(t, svc.post(t, "/v1/events", "application/json", `{"user_id":"u1","product_id":"p1"}`, false))
	if err := svc.rdb.ConfigSet(ctx, "maxmemory-policy", "allkeys-lru").Err(); err != nil {
		t.Fatal(err)
	}
	re := evictingRe("allkeys-lru")
	r := svc.waitReady(t, c, 500, "the evicting policy", func(r readyState) bool {
		return r.status == http.StatusServiceUnavailable && re.MatchString(r.Reason)
	})
	if r.Status != "not ready" {
		t.Errorf("GET /readyz: %+v, want not ready", r)
	}
	// The backpressure check sees it too (its own interval): writes stop.
	var a answer
	for range 500 {
		if a = svc.post(t, "/v1/events", "application/json", `{"user_id":"u2","product_id":"p2","event_id":"x"}`, false); a.status != http.StatusAccepted {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	n := svc.streamLen(t)
	refused(t, "POST with maxmemory-policy allkeys-lru", a, re)
	refused(t, "POST again", svc.post(t, "/v1/events", "application/json", `{"user_id":"u3","product_id":"p3"}`, false), re)
	if got := svc.streamLen(t); got != n {
		t.Errorf("stream length %d after a refused POST, want %d", got, n)
	}
	if !strings.Contains(svc.logs.String(), "maxmemory-policy is allkeys-lru") {
		t.Errorf("the log does not say why:\n%s", svc.logs)
	}
	if err := svc.rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	acceptsAgain(t, svc, c, `{"user_id":"u4","product_id":"p4","event_id":"after"}`, "noeviction again", n+1)
}

// Ingest started while Redis is down starts (and answers 503); when Redis comes up with
// an evicting policy, ingest sees it then: not ready, and writes refused with the reason.
func TestEvictingRedisSeenWhenItComesUp(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t, redistest.Args("--maxmemory-policy", "volatile-lru"))
	rs.Kill()
	svc := startIngest(t, rs, map[string]string{"BACKPRESSURE_INTERVAL": "20ms"})
	c := svc.newClient(10 * time.Second)
	if r := svc.ready(t, c); r.status != http.StatusServiceUnavailable {
		t.Fatalf("GET /readyz with Redis down: %d %+v, want 503", r.status, r)
	}
	rs.Restart()
	re := evictingRe("volatile-lru")
	svc.waitReady(t, c, 500, "the evicting policy", func(r readyState) bool {
		return r.status == http.StatusServiceUnavailable && re.MatchString(r.Reason)
	})
	var a answer
	for range 500 {
		if a = svc.post(t, "/v1/events", "application/json", `{"user_id":"u1","product_id":"p1"}`, false); re.Match(errorBodyOf(a)) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	refused(t, "POST once Redis is up with volatile-lru", a, re)
	if n := svc.streamLen(t); n != 0 {
		t.Errorf("stream length %d, want 0", n)
	}
}

// errorBodyOf returns the error message of a JSON error answer, or nil.
func errorBodyOf(a answer) []byte {
	if a.status == http.StatusAccepted {
		return nil
	}
	_, msg, _ := strings.Cut(string(a.body), `"error":"`)
	msg, _, _ = strings.Cut(msg, `"`)
	return []byte(msg)
}

// Until ingest has read Redis's state once, it writes nothing: with Redis down at start
// and no check since (the interval is an hour), a POST once Redis is back, here with an
// evicting policy, gets 503 and leaves the stream empty instead of being written before
// anyone has looked at the policy.
func TestNoWritesBeforeRedisStateIsRead(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t, redistest.Args("--maxmemory-policy", "allkeys-lru"))
	rs.Kill()
	svc := startIngest(t, rs, map[string]string{"BACKPRESSURE_INTERVAL": "1h"})
	c := svc.newClient(10 * time.Second)
	if r := svc.ready(t, c); r.status != http.StatusServiceUnavailable { // serving, with Redis down
		t.Fatalf("GET /readyz with Redis down: %d %+v, want 503", r.status, r)
	}
	rs.Restart()
	a, err := svc.tryPost(c, "/v1/events", "application/json", `{"user_id":"u1","product_id":"p1"}`, false)
	if err != nil {
		t.Fatal(err)
	}
	checkUnavailable(t, "POST before Redis's state was read", a)
	errorOf(t, a)
	if n := svc.streamLen(t); n != 0 {
		t.Errorf("stream length %d, want 0", n)
	}
}
