package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// readyState is /readyz's answer.
type readyState struct {
	status  int
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Warning string `json:"warning"`
}

func (s *ingestUnderTest) ready(t *testing.T, c *http.Client) readyState {
	t.Helper()
	a, err := s.get(c, "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	var r readyState
	if err := json.Unmarshal(a.body, &r); err != nil {
		t.Fatalf("GET /readyz body %q: %v", a.body, err)
	}
	r.status = a.status
	if a.status == http.StatusServiceUnavailable && a.header.Get("Retry-After") != "1" {
		t.Errorf("GET /readyz 503 with Retry-After %q, want 1", a.header.Get("Retry-After"))
	}
	return r
}

// waitReady polls /readyz until ok says its answer is the one wanted, for at most
// attempts tries 20 ms apart, and returns that answer.
func (s *ingestUnderTest) waitReady(t *testing.T, c *http.Client, attempts int, what string, ok func(readyState) bool) readyState {
	t.Helper()
	var r readyState
	for range attempts {
		if r = s.ready(t, c); ok(r) {
			return r
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("/readyz never reported %s; last answer %d %+v", what, r.status, r)
	return r
}

// refused checks a backpressure 503: Retry-After and a JSON error matching want, and
// returns the error message.
func refused(t *testing.T, what string, a answer, want *regexp.Regexp) string {
	t.Helper()
	checkUnavailable(t, what, a)
	if ra := a.header.Get("Retry-After"); ra != "1" {
		t.Errorf("%s: Retry-After %q, want 1", what, ra)
	}
	msg := *errorOf(t, a).Error
	if !want.MatchString(msg) {
		t.Errorf("%s: error %q, want one matching %s", what, msg, want)
	}
	return msg
}

var behindRe = regexp.MustCompile(`^processing is behind by (\d+) entries \(MAX_LAG 5\); retry later$`)

func behindBy(n int64) string {
	return fmt.Sprintf("processing is behind by %d entries (MAX_LAG 5); retry later", n)
}

// A consumer group that falls more than MAX_LAG entries behind makes ingest refuse
// events with 503 + Retry-After and a reason, and /readyz report not ready with the
// same reason; a refused request writes nothing. Once the group catches up, ingest
// accepts again by itself.
func TestBackpressureOnLag(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	svc := startIngest(t, rs, map[string]string{"MAX_LAG": "5", "BACKPRESSURE_INTERVAL": "50ms"})
	ctx := context.Background()
	stream := svc.keys.Stream()
	if err := svc.rdb.XGroupCreateMkStream(ctx, stream, svc.keys.Gen(1).Group(), "$").Err(); err != nil {
		t.Fatal(err)
	}
	c := svc.newClient(10 * time.Second)
	const body = `{"user_id":"u1","product_id":"p1"}`

	var a answer
	posted := int64(0)
	for range 1000 {
		a = svc.post(t, "/v1/events", "application/json", body, false)
		if a.status != http.StatusAccepted {
			break
		}
		posted++
		time.Sleep(5 * time.Millisecond)
	}
	msg := refused(t, "POST while behind", a, behindRe)
	if n, _ := strconv.ParseInt(behindRe.FindStringSubmatch(msg)[1], 10, 64); n <= 5 || n > posted {
		t.Errorf("reported lag %d, want more than 5 and at most the %d entries posted", n, posted)
	}
	refused(t, "POST /click while behind", svc.post(t, "/click", "application/json", body, false), behindRe)
	if n := svc.streamLen(t); n != posted {
		t.Fatalf("stream length %d, want %d: a refused request wrote", n, posted)
	}
	// Nothing is posted now, so the next refresh reports the exact lag: every entry.
	svc.waitReady(t, c, 200, behindBy(posted), func(r readyState) bool {
		return r.status == http.StatusServiceUnavailable && r.Status == "not ready" && r.Reason == behindBy(posted)
	})
	if a, err := svc.get(c, "/healthz"); err != nil || a.status != http.StatusOK {
		t.Errorf("GET /healthz while behind: %d %v, want 200", a.status, err)
	}

	// The group catches up.
	if err := svc.rdb.XGroupSetID(ctx, stream, svc.keys.Gen(1).Group(), "$").Err(); err != nil {
		t.Fatal(err)
	}
	acceptsAgain(t, svc, c, `{"user_id":"u2","product_id":"p2","event_id":"after"}`, "catching up", posted+1)
}

// When Redis cannot tell a group's lag (an entry after the group's position was
// deleted, so XINFO GROUPS says lag nil) but knows how many entries the group has
// read, ingest falls back to entries-added minus entries-read, which counts the
// deleted entry too, capped at what the stream holds after the group's position: here
// every entry but the one the group read, which is the exact lag.
func TestBackpressureLagUnknown(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	svc := startIngest(t, rs, map[string]string{"MAX_LAG": "5", "BACKPRESSURE_INTERVAL": "50ms"})
	ctx := context.Background()
	stream := svc.keys.Stream()
	if err := svc.rdb.XGroupCreateMkStream(ctx, stream, svc.keys.Gen(1).Group(), "$").Err(); err != nil {
		t.Fatal(err)
	}
	const body = `{"user_id":"u1","product_id":"p1"}`
	for range 3 {
		accepted(t, svc.post(t, "/v1/events", "application/json", body, false))
	}
	// The group reads one entry (so Redis knows its entries-read), then the last
	// entry, after its position, is deleted.
	if err := svc.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: svc.keys.Gen(1).Group(), Consumer: "c", Streams: []string{stream, ">"}, Count: 1}).Err(); err != nil {
		t.Fatal(err)
	}
	msgs, err := svc.rdb.XRange(ctx, stream, "-", "+").Result()
	if err != nil || len(msgs) != 3 {
		t.Fatalf("XRANGE: %d entries, %v", len(msgs), err)
	}
	if err := svc.rdb.XDel(ctx, stream, msgs[2].ID).Err(); err != nil {
		t.Fatal(err)
	}
	// The precondition of the test: Redis reports no lag, but entries-read.
	if lag, read := rawGroupField(t, svc, svc.keys.Gen(1).Group(), "lag"), rawGroupField(t, svc, svc.keys.Gen(1).Group(), "entries-read"); lag != nil || read != int64(1) {
		t.Fatalf("XINFO GROUPS lag = %v, entries-read = %v after XDEL, want nil and 1", lag, read)
	}

	var a answer
	for range 1000 {
		a = svc.post(t, "/v1/events", "application/json", body, false)
		if a.status != http.StatusAccepted {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	refused(t, "POST while behind", a, behindRe)
	// entries added - entries read = the entries in the stream plus the deleted one,
	// minus 1; the cap, length - 1, is one less.
	n := svc.streamLen(t) - 1
	c := svc.newClient(10 * time.Second)
	svc.waitReady(t, c, 200, behindBy(n), func(r readyState) bool { return r.Reason == behindBy(n) })
}

// A group of which Redis reports neither lag nor entries-read (it has not read since
// an entry after its position was deleted) is left out, with a warning in the log,
// rather than counted as behind by every entry ever added: one XDEL must not stop
// ingest for as long as its tombstone stays.
func TestBackpressureLagAndPositionUnknown(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	svc := startIngest(t, rs, map[string]string{"MAX_LAG": "5", "BACKPRESSURE_INTERVAL": "50ms"})
	ctx := context.Background()
	stream := svc.keys.Stream()
	const body = `{"user_id":"u1","product_id":"p1"}`
	for range 3 {
		accepted(t, svc.post(t, "/v1/events", "application/json", body, false))
	}
	msgs, err := svc.rdb.XRange(ctx, stream, "-", "+").Result()
	if err != nil || len(msgs) != 3 {
		t.Fatalf("XRANGE: %d entries, %v", len(msgs), err)
	}
	// A group placed at the first entry by hand: Redis does not know its entries-read.
	if err := svc.rdb.XGroupCreate(ctx, stream, svc.keys.Gen(1).Group(), msgs[0].ID).Err(); err != nil {
		t.Fatal(err)
	}
	if err := svc.rdb.XDel(ctx, stream, msgs[1].ID).Err(); err != nil {
		t.Fatal(err)
	}
	if lag, read := rawGroupField(t, svc, svc.keys.Gen(1).Group(), "lag"), rawGroupField(t, svc, svc.keys.Gen(1).Group(), "entries-read"); lag != nil || read != nil {
		t.Fatalf("XINFO GROUPS lag = %v, entries-read = %v after XDEL, want nil and nil", lag, read)
	}
	const warning = "lag of consumer group unknown"
	for i := 0; !strings.Contains(svc.logs.String(), warning); i++ {
		if i == 200 {
			t.Fatalf("no %q warning in the log", warning)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for range 10 {
		accepted(t, svc.post(t, "/v1/events", "application/json", body, false))
	}
	if n := svc.streamLen(t); n != 12 {
		t.Errorf("stream length %d, want 12", n)
	}
}

func rawGroupField(t *testing.T, svc *ingestUnderTest, group, field string) any {
	t.Helper()
	v, err := svc.rdb.Do(context.Background(), "XINFO", "GROUPS", svc.keys.Stream()).Slice()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range v {
		m, ok := g.(map[any]any) // RESP3, the test client's protocol
		if !ok {
			t.Fatalf("XINFO GROUPS group %T, want a map", g)
		}
		if m["name"] == group {
			return m[field]
		}
	}
	t.Fatalf("no group %s", group)
	return nil
}

var memoryRe = regexp.MustCompile(`^Redis memory is at (\d+) of 2097152 bytes, over MAX_REDIS_MEMORY 0\.5 of maxmemory; retry later$`)

// Past MAX_REDIS_MEMORY of Redis's maxmemory ingest refuses events with 503, and
// accepts again once there is room. No 202 is ever given for an event the stream does
// not hold: the stream holds exactly the events answered 202.
func TestBackpressureOnMemory(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t, redistest.Args("--maxmemory", "2mb"))
	svc := startIngest(t, rs, map[string]string{"MAX_REDIS_MEMORY": "0.5", "BACKPRESSURE_INTERVAL": "50ms"})
	ctx := context.Background()
	c := svc.newClient(10 * time.Second)

	// 100 events of about 300 bytes per request.
	var b strings.Builder
	b.WriteByte('[')
	for i := range 100 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"user_id":"u-%03d-%s","product_id":"p-%s","type":"page_view"}`, i, strings.Repeat("x", 120), strings.Repeat("y", 120))
	}
	b.WriteByte(']')
	body := b.String()

	var a answer
	stored := int64(0)
	for range 2000 {
		a = svc.post(t, "/v1/events", "application/json", body, false)
		if a.status != http.StatusAccepted {
			break
		}
		stored += 100
	}
	checkUnavailable(t, "POST with Redis memory full", a)
	if n := svc.streamLen(t); n != stored {
		t.Fatalf("stream length %d, want the %d events answered 202", n, stored)
	}
	// The first 503 may come from Redis itself refusing the write (OOM) if the stream
	// passed maxmemory before the next check; by now the check has seen it.
	r := svc.waitReady(t, c, 200, "the memory reason", func(r readyState) bool { return memoryRe.MatchString(r.Reason) })
	if r.status != http.StatusServiceUnavailable || r.Status != "not ready" {
		t.Errorf("GET /readyz = %d %+v, want 503 not ready", r.status, r)
	}
	msg := refused(t, "POST over MAX_REDIS_MEMORY", svc.post(t, "/v1/events", "application/json", body, false), memoryRe)
	if used, _ := strconv.ParseInt(memoryRe.FindStringSubmatch(msg)[1], 10, 64); used <= 1<<20 {
		t.Errorf("reported used memory %d, want more than half of 2 MiB", used)
	}
	if n := svc.streamLen(t); n != stored {
		t.Fatalf("stream length %d, want %d: a refused request wrote", n, stored)
	}

	if err := svc.rdb.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	acceptsAgain(t, svc, c, `{"user_id":"u1","product_id":"p1","event_id":"after"}`, "room was made", stored+1)
}

// When Redis itself refuses writes for being over maxmemory (OOM) before ingest's own
// check has seen it (MAX_REDIS_MEMORY=1, and a check interval far longer than the
// test), every kind of request is a 503, never a 202, and nothing is written: no entry
// and no dedup marker.
func TestRedisOOMIs503(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	svc := startIngest(t, rs, map[string]string{"MAX_REDIS_MEMORY": "1", "BACKPRESSURE_INTERVAL": "1h"})
	ctx := context.Background()
	accepted(t, svc.post(t, "/v1/events", "application/json", `{"user_id":"u0","product_id":"p0"}`, false))

	if err := svc.rdb.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, path, body string }{
		{"one event", "/v1/events", `{"user_id":"u1","product_id":"p1"}`},
		{"one event with event_id", "/v1/events", `{"user_id":"u1","product_id":"p1","event_id":"oom-1"}`},
		{"several events", "/v1/events", `[{"user_id":"u1","product_id":"p1"},{"user_id":"u2","product_id":"p2","event_id":"oom-2"}]`},
		{"several events with event_id", "/v1/events", `[{"user_id":"u1","product_id":"p1","event_id":"oom-3"},{"user_id":"u2","product_id":"p2","event_id":"oom-4"}]`},
		{"click", "/click", `{"user_id":"u1","product_id":"p1"}`},
	} {
		a := svc.post(t, tc.path, "application/json", tc.body, false)
		checkUnavailable(t, tc.name, a)
		if got := *errorOf(t, a).Error; got != "storage unavailable, retry later" {
			t.Errorf("%s: error %q, want \"storage unavailable, retry later\"", tc.name, got)
		}
	}
	if n := svc.streamLen(t); n != 1 {
		t.Errorf("stream length %d, want 1: a refused write was stored", n)
	}
	for _, id := range []string{"oom-1", "oom-2", "oom-3", "oom-4"} {
		if n, err := svc.rdb.Exists(ctx, svc.keys.Marker(id)).Result(); err != nil || n != 0 {
			t.Errorf("dedup marker of %s exists (%d, %v): a refused write left it", id, n, err)
		}
	}

	if err := svc.rdb.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	// Not a duplicate: the refused request left no marker behind.
	got := accepted(t, svc.post(t, "/v1/events", "application/json", `{"user_id":"u1","product_id":"p1","event_id":"oom-1"}`, false))
	if got != (Accepted{Accepted: 1}) {
		t.Errorf("answer after room was made %+v, want 1 accepted", got)
	}
}

// Only the current generation's group counts: a rebuild's group, which starts at the
// beginning of the stream, or any other reader far behind, does not stop ingest.
func TestBackpressureIgnoresOtherGroups(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	svc := startIngest(t, rs, map[string]string{"MAX_LAG": "5", "BACKPRESSURE_INTERVAL": "20ms"})
	ctx := context.Background()
	stream := svc.keys.Stream()
	for _, g := range []string{svc.keys.Gen(1).Group(), svc.keys.Gen(2).Group(), "someone-else"} {
		if err := svc.rdb.XGroupCreateMkStream(ctx, stream, g, "0").Err(); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		if a := svc.post(t, "/v1/events", "application/json", `{"user_id":"u1","product_id":"p1"}`, false); a.status != http.StatusAccepted {
			t.Fatalf("POST %d: %d %s, want 202", i, a.status, a.body)
		}
		// The live group keeps up; the others never read.
		if err := svc.rdb.XGroupSetID(ctx, stream, svc.keys.Gen(1).Group(), "$").Err(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Millisecond) // let a refresh see the other groups' lag
	}
	// The pointer moves to generation 2, whose group is 20 entries behind: now it counts.
	if err := svc.rdb.Set(ctx, svc.keys.Generation(), "2", 0).Err(); err != nil {
		t.Fatal(err)
	}
	c := svc.newClient(10 * time.Second)
	svc.waitReady(t, c, 200, behindBy(20), func(r readyState) bool {
		return r.status == http.StatusServiceUnavailable && r.Reason == behindBy(20)
	})
}

// acceptsAgain checks that ingest, once the condition that refused events is gone, gets
// back by itself to accepting events and being ready, and that the stream then holds
// wantLen entries.
func acceptsAgain(t *testing.T, svc *ingestUnderTest, c *http.Client, body, after string, wantLen int64) {
	t.Helper()
	if got := retryUntilAccepted(t, svc, c, body, 200); got != (Accepted{Accepted: 1}) {
		t.Errorf("answer after %s %+v, want 1 accepted", after, got)
	}
	if r := svc.ready(t, c); r.status != http.StatusOK {
		t.Errorf("GET /readyz after %s: %d %+v, want 200", after, r.status, r)
	}
	if n := svc.streamLen(t); n != wantLen {
		t.Errorf("stream length %d, want %d", n, wantLen)
	}
}
