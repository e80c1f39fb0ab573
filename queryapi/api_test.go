package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/clickstream/pipeline/internal/server/servertest"
	"github.com/clickstream/pipeline/internal/testlog"
	"github.com/redis/go-redis/v9"
)

// api is one queryapi running in-process against a test's redis-server, in the test's
// own namespace.
type api struct {
	t    *testing.T
	base string
	ns   string
	keys events.Keys
	gen  events.GenKeys
	rdb  *redis.Client
}

// startAPI runs queryapi on 127.0.0.1:0 until the test ends. env adds variables to
// REDIS_URL and REDIS_NAMESPACE.
func startAPI(t *testing.T, s *redistest.Server, env ...string) *api {
	t.Helper()
	ns := redistest.Namespace(t)
	vars := map[string]string{"REDIS_URL": s.URL(), "REDIS_NAMESPACE": ns}
	for i := 0; i+1 < len(env); i += 2 {
		vars[env[i]] = env[i+1]
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	logs := &testlog.Buffer{}
	done := make(chan error, 1)
	go func() {
		err := runWith(ctx, func(k string) string { return vars[k] }, logs, ln)
		ln.Close() // if runWith failed before serving, requests fail instead of hanging
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("queryapi returned %v", err)
		}
		if t.Failed() {
			t.Logf("queryapi log:\n%s", logs.String())
		}
	})
	keys := events.NewKeys(ns)
	return &api{t: t, base: "http://" + ln.Addr().String(), ns: ns, keys: keys, gen: keys.Gen(1), rdb: s.Client()}
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

type response struct {
	status int
	header http.Header
	body   string
}

func (a *api) get(path string) response {
	a.t.Helper()
	resp, err := httpClient.Get(a.base + path)
	if err != nil {
		a.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatalf("GET %s: reading body: %v", path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: string(body)}
}

// rawStatus sends GET path as it is, which net/http's client refuses to do for a path
// that is not a valid URL, and returns the status of the answer.
func (a *api) rawStatus(path string) int {
	a.t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(a.base, "http://"))
	if err != nil {
		a.t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		a.t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		a.t.Fatalf("GET %s: %v", path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// expect checks the status and the exact JSON body. A final newline is not part of
// the answer: echo's encoder writes one, hand-encoded answers do not.
func (a *api) expect(path string, status int, body string) response {
	a.t.Helper()
	r := a.get(path)
	if got := strings.TrimSuffix(r.body, "\n"); r.status != status || got != body {
		a.t.Errorf("GET %s = %d %s\n             want %d %s", path, r.status, got, status, body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		a.t.Errorf("GET %s Content-Type = %q, want application/json", path, ct)
	}
	return r
}

// expectUnavailable checks the 503 every query gets while Redis cannot answer.
func (a *api) expectUnavailable(path string) {
	a.t.Helper()
	r := a.expect(path, http.StatusServiceUnavailable, `{"error":"storage unavailable, retry later"}`)
	if got := r.header.Get("Retry-After"); got != "1" {
		a.t.Errorf("GET %s Retry-After = %q, want 1", path, got)
	}
}

func (a *api) do(args ...any) {
	a.t.Helper()
	if err := a.rdb.Do(context.Background(), args...).Err(); err != nil {
		a.t.Fatalf("%v: %v", args, err)
	}
}

// hset writes a counters hash the way the processor leaves it.
func (a *api) hset(key string, clicks, pageViews, dwellMs, dwellCount int64) {
	a.t.Helper()
	a.do("HSET", key, events.FieldClicks, clicks, events.FieldPageViews, pageViews,
		events.FieldDwellMs, dwellMs, events.FieldDwellCount, dwellCount)
}

// product writes a product's counters the way the processor leaves them: its clicks
// in the ranking, the rest in its hash.
func (a *api) product(id string, clicks, pageViews, dwellMs, dwellCount int64) {
	a.t.Helper()
	a.do("HSET", a.gen.Product(id), events.FieldPageViews, pageViews,
		events.FieldDwellMs, dwellMs, events.FieldDwellCount, dwellCount)
	a.do("ZADD", a.gen.TopProducts(), clicks, id)
}

const (
	userIDErr    = `{"error":"user_id: must be 1-128 characters of A-Z a-z 0-9 . _ : @ -, and not . or .."}`
	productIDErr = `{"error":"product_id: must be 1-128 characters of A-Z a-z 0-9 . _ : @ -, and not . or .."}`
	limitErr     = `{"error":"limit: must be an integer from 1 to 100"}`
)

// badIDs are path segments that are not valid ids once unescaped (once: a %25 makes a
// literal %, which no id has).
var badIDs = []string{
	strings.Repeat("a", 129),
	"a%20b",
	"%7Bcs%7D",
	"a%7D",
	"a!b",
	"a*b",
	"%C3%BC",
	"a%00",
	"a%2Fb",
	"a%2fb",
	"%2F",
	"%2E",
	"%2E%2E",
	".%2E",
	"a%2540b",
	"%25",
	"a%5Cb",
}

// TestQueryAPI runs queryapi against one redis-server; every subtest has its own
// namespace and its own queryapi, and they run in parallel.
func TestQueryAPI(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)

	t.Run("users", func(t *testing.T) {
		t.Parallel()
		a := startAPI(t, s)
		a.hset(a.gen.User("u1"), 3, 2, 4500, 2)
		a.do("HSET", a.gen.User("u2"), events.FieldClicks, 7)
		a.hset(a.gen.User("a.b_c:d@e-F9"), 1, 1, 1, 1)
		a.hset(a.gen.User(strings.Repeat("x", 128)), 9, 8, 7, 6)
		// Neither another generation nor another namespace may show through.
		a.hset(a.keys.Gen(2).User("u3"), 5, 5, 5, 5)
		a.hset(events.NewKeys(a.ns+"x").Gen(1).User("u1"), 100, 100, 100, 100)

		a.expect("/v1/users/u1", 200, `{"user_id":"u1","clicks":3,"page_views":2,"dwell_ms":4500,"dwell_count":2}`)
		a.expect("/v1/users/u2", 200, `{"user_id":"u2","clicks":7,"page_views":0,"dwell_ms":0,"dwell_count":0}`)
		a.expect("/v1/users/a.b_c:d@e-F9", 200, `{"user_id":"a.b_c:d@e-F9","clicks":1,"page_views":1,"dwell_ms":1,"dwell_count":1}`)
		a.expect("/v1/users/"+strings.Repeat("x", 128), 200, `{"user_id":"`+strings.Repeat("x", 128)+`","clicks":9,"page_views":8,"dwell_ms":7,"dwell_count":6}`)
		a.expect("/v1/users/nobody", 200, `{"user_id":"nobody","clicks":0,"page_views":0,"dwell_ms":0,"dwell_count":0}`)
		a.expect("/v1/users/u3", 200, `{"user_id":"u3","clicks":0,"page_views":0,"dwell_ms":0,"dwell_count":0}`)
		for _, id := range badIDs {
			a.expect("/v1/users/"+id, 400, userIDErr)
		}
	})

	// Ids as encodeURIComponent and Python's quote(safe='') send them: every byte outside
	// A-Z a-z 0-9 - _ . ~ percent-encoded. Such a path is unescaped once, and the same id
	// unencoded reads the same counters.
	t.Run("encoded ids", func(t *testing.T) {
		t.Parallel()
		a := startAPI(t, s)
		a.hset(a.gen.User("alice@example.com"), 4, 3, 2, 1)
		a.product("sku:1", 7, 6, 5, 4)
		const alice = `{"user_id":"alice@example.com","clicks":4,"page_views":3,"dwell_ms":2,"dwell_count":1}`
		const sku = `{"product_id":"sku:1","clicks":7,"page_views":6,"dwell_ms":5,"dwell_count":4}`
		for _, p := range []string{"alice%40example.com", "alice@example.com", "%61lice%40example%2Ecom"} {
			a.expect("/v1/users/"+p, 200, alice)
			a.expect("/user/"+p+"/clicks", 200, `4`)
		}
		for _, p := range []string{"sku%3A1", "sku%3a1", "sku:1", "%73%6B%75%3A%31"} {
			a.expect("/v1/products/"+p, 200, sku)
		}
		a.expect("/v1/users/a%2Eb%2D%5F%3A%40", 200, `{"user_id":"a.b-_:@","clicks":0,"page_views":0,"dwell_ms":0,"dwell_count":0}`)
		// A malformed escape never reaches queryapi: Go's HTTP server cannot parse the
		// request line and answers 400 itself (in plain text).
		for _, p := range []string{"/v1/users/a%", "/v1/users/%zz", "/v1/products/%4", "/user/%/clicks"} {
			if status := a.rawStatus(p); status != http.StatusBadRequest {
				t.Errorf("GET %s = %d, want 400", p, status)
			}
		}
	})

	t.Run("products", func(t *testing.T) {
		t.Parallel()
		a := startAPI(t, s)
		a.product("p1", 10, 20, 30000, 4)
		a.do("HSET", a.gen.Product("p2"), events.FieldPageViews, 1)
		a.hset(a.gen.User("p1"), 1, 1, 1, 1) // a user of the same id is another key

		a.expect("/v1/products/p1", 200, `{"product_id":"p1","clicks":10,"page_views":20,"dwell_ms":30000,"dwell_count":4}`)
		a.expect("/v1/products/p2", 200, `{"product_id":"p2","clicks":0,"page_views":1,"dwell_ms":0,"dwell_count":0}`)
		a.expect("/v1/products/never-seen", 200, `{"product_id":"never-seen","clicks":0,"page_views":0,"dwell_ms":0,"dwell_count":0}`)
		for _, id := range badIDs {
			a.expect("/v1/products/"+id, 400, productIDErr)
		}
	})

	t.Run("top", func(t *testing.T) {
		t.Parallel()
		a := startAPI(t, s)
		top := a.gen.TopProducts()
		// Twelve products; p-tie-a and p-tie-b have the same count, and Redis orders
		// equal scores by member, descending.
		scores := map[string]int64{
			"p01": 1, "p02": 2, "p03": 3, "p04": 40, "p05": 5, "p06": 6,
			"p07": 700, "p08": 8, "p09": 9, "p-big": 1_000_000_000_000, "p-tie-a": 50, "p-tie-b": 50,
		}
		for m, sc := range scores {
			a.do("ZADD", top, sc, m)
		}
		a.do("ZADD", a.keys.Gen(2).TopProducts(), 1e6, "other-gen")
		const all = `{"product_id":"p-big","clicks":1000000000000},{"product_id":"p07","clicks":700},` +
			`{"product_id":"p-tie-b","clicks":50},{"product_id":"p-tie-a","clicks":50},{"product_id":"p04","clicks":40},` +
			`{"product_id":"p09","clicks":9},{"product_id":"p08","clicks":8},{"product_id":"p06","clicks":6},` +
			`{"product_id":"p05","clicks":5},{"product_id":"p03","clicks":3}`
		a.expect("/v1/products/top", 200, `[`+all+`]`)
		a.expect("/v1/products/top?limit=", 200, `[`+all+`]`)
		a.expect("/v1/products/top?limit=10", 200, `[`+all+`]`)
		a.expect("/v1/products/top?limit=100", 200, `[`+all+`,{"product_id":"p02","clicks":2},{"product_id":"p01","clicks":1}]`)
		a.expect("/v1/products/top?limit=12", 200, `[`+all+`,{"product_id":"p02","clicks":2},{"product_id":"p01","clicks":1}]`)
		a.expect("/v1/products/top?limit=1", 200, `[{"product_id":"p-big","clicks":1000000000000}]`)
		a.expect("/v1/products/top?limit=3", 200, `[{"product_id":"p-big","clicks":1000000000000},{"product_id":"p07","clicks":700},{"product_id":"p-tie-b","clicks":50}]`)
		for _, bad := range []string{"0", "101", "abc", "-1", "1.5", "1e1", "%201", "99999999999999999999"} {
			a.expect("/v1/products/top?limit="+bad, 400, limitErr)
		}
	})

	t.Run("top empty", func(t *testing.T) {
		t.Parallel()
		a := startAPI(t, s)
		a.expect("/v1/products/top", 200, `[]`)
		a.expect("/v1/products/top?limit=5", 200, `[]`)
	})

	t.Run("user clicks", func(t *testing.T) {
		t.Parallel()
		a := startAPI(t, s)
		a.hset(a.gen.User("u1"), 42, 1, 1, 1)
		a.product("u2", 5, 0, 0, 0) // a product, not a user
		a.expect("/user/u1/clicks", 200, `42`)
		a.expect("/user/u2/clicks", 200, `0`)
		a.expect("/user/nobody/clicks", 200, `0`)
		for _, id := range badIDs {
			a.expect("/user/"+id+"/clicks", 400, userIDErr)
		}
	})

	t.Run("pipeline no stream", func(t *testing.T) {
		t.Parallel()
		a := startAPI(t, s)
		a.expect("/v1/pipeline", 200, `{"stream":"{`+a.ns+`}:events","length":0,"last_id":"","generation":1,"groups":[],`+
			`"dead_letter":{"stream":"{`+a.ns+`}:deadletter","length":0}}`)
	})

	t.Run("pipeline", func(t *testing.T) {
		t.Parallel()
		a := startAPI(t, s)
		stream := a.keys.Stream()
		for i := 1; i <= 5; i++ {
			ev := events.Event{UserID: "u" + strconv.Itoa(i), ProductID: "p1"}
			a.do(append([]any{"XADD", stream, "1-" + strconv.Itoa(i)}, ev.AppendFields(nil)...)...)
		}
		group := a.gen.Group()
		a.do("XGROUP", "CREATE", stream, group, "0")
		a.do("XREADGROUP", "GROUP", group, "c1", "COUNT", 2, "STREAMS", stream, ">") // 1-1, 1-2
		a.do("XREADGROUP", "GROUP", group, "c2", "COUNT", 1, "STREAMS", stream, ">") // 1-3
		a.do("XACK", stream, group, "1-1")
		a.do("XGROUP", "CREATE", stream, "zz-idle", "$")
		a.do("XADD", a.keys.DeadLetter(), "*", "payload", "x")
		a.do("XADD", a.keys.DeadLetter(), "*", "payload", "y")

		a.expect("/v1/pipeline", 200, `{"stream":"{`+a.ns+`}:events","length":5,"last_id":"1-5","generation":1,"groups":[`+
			`{"name":"aggregator-g1","pending":2,"lag":2,"consumers":2,"last_delivered_id":"1-3"},`+
			`{"name":"zz-idle","pending":0,"lag":0,"consumers":0,"last_delivered_id":"1-5"}],`+
			`"dead_letter":{"stream":"{`+a.ns+`}:deadletter","length":2}}`)
	})

	t.Run("pipeline empty stream", func(t *testing.T) {
		t.Parallel()
		a := startAPI(t, s)
		a.do("XGROUP", "CREATE", a.keys.Stream(), a.gen.Group(), "$", "MKSTREAM")
		a.expect("/v1/pipeline", 200, `{"stream":"{`+a.ns+`}:events","length":0,"last_id":"0-0","generation":1,"groups":[`+
			`{"name":"aggregator-g1","pending":0,"lag":0,"consumers":0,"last_delivered_id":"0-0"}],`+
			`"dead_letter":{"stream":"{`+a.ns+`}:deadletter","length":0}}`)
	})

	// Concurrent reads share Redis round trips; every answer must still be the one for
	// the id that was asked. The requests come from a pool of clients, as from a client
	// with a connection pool, and REDIS_TIMEOUT is generous: the test is about which
	// answer each request gets, not about how fast a burst is served on a loaded machine
	// (a burst that the service cannot answer within REDIS_TIMEOUT gets 503s, rightly).
	t.Run("concurrent", func(t *testing.T) {
		t.Parallel()
		a := startAPI(t, s, "REDIS_TIMEOUT", "30s")
		const users = 64
		want := map[string]string{}
		for i := 1; i <= users; i++ {
			id := "u" + strconv.Itoa(i)
			n := int64(i)
			a.hset(a.gen.User(id), n, 2*n, 3*n, 4*n)
			a.product(id, 5*n, 6*n, 7*n, 8*n)
			want["/v1/users/"+id] = `{"user_id":"` + id + `","clicks":` + strconv.Itoa(i) + `,"page_views":` + strconv.Itoa(2*i) +
				`,"dwell_ms":` + strconv.Itoa(3*i) + `,"dwell_count":` + strconv.Itoa(4*i) + `}`
			want["/v1/products/"+id] = `{"product_id":"` + id + `","clicks":` + strconv.Itoa(5*i) + `,"page_views":` + strconv.Itoa(6*i) +
				`,"dwell_ms":` + strconv.Itoa(7*i) + `,"dwell_count":` + strconv.Itoa(8*i) + `}`
			want["/user/"+id+"/clicks"] = strconv.Itoa(i)
		}
		want["/v1/users/nobody"] = `{"user_id":"nobody","clicks":0,"page_views":0,"dwell_ms":0,"dwell_count":0}`
		const clients = 32
		tr := &http.Transport{MaxIdleConnsPerHost: clients}
		defer tr.CloseIdleConnections() // before the service stops: it would wait for them
		client := &http.Client{Transport: tr, Timeout: 60 * time.Second}
		paths := make(chan string)
		var wg sync.WaitGroup
		for range clients {
			wg.Go(func() {
				for path := range paths {
					resp, err := client.Get(a.base + path)
					if err != nil {
						t.Errorf("GET %s: %v", path, err)
						continue
					}
					got, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if body := want[path]; err != nil || resp.StatusCode != 200 || strings.TrimSuffix(string(got), "\n") != body {
						t.Errorf("GET %s = %d %s (%v), want 200 %s", path, resp.StatusCode, got, err, body)
					}
				}
			})
		}
		for range 4 {
			for path := range want {
				paths <- path
			}
		}
		close(paths)
		wg.Wait()
	})

	// HEAD is answered wherever GET is, as GET would be without the body.
	t.Run("head", func(t *testing.T) {
		t.Parallel()
		a := startAPI(t, s)
		a.hset(a.gen.User("u1"), 1, 2, 3, 4)
		servertest.CheckHead(t, a.base, "/v1/users/u1", "/v1/users/alice%40example.com", "/v1/users/%7B",
			"/v1/products/p1", "/v1/products/top", "/v1/products/top?limit=0", "/user/u1/clicks",
			"/v1/pipeline", "/v1/rebuild", "/healthz", "/readyz", "/metrics", "/nope")
		req, err := http.NewRequest(http.MethodHead, a.base+"/v1/users/u1", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("HEAD /v1/users/u1 = %d %q, want 200 application/json", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	})

	t.Run("rebuild never ran", func(t *testing.T) {
		t.Parallel()
		a := startAPI(t, s)
		a.expect("/v1/rebuild", 200, `{"state":"idle","generation":1,"current_generation":1,"applied":0,"stream_length":0,`+
			`"rate":0,"eta_seconds":null,"started_at":"","updated_at":"","error":""}`)
		a.do("SET", a.keys.Generation(), 3)
		a.expect("/v1/rebuild", 200, `{"state":"idle","generation":3,"current_generation":3,"applied":0,"stream_length":0,`+
			`"rate":0,"eta_seconds":null,"started_at":"","updated_at":"","error":""}`)
	})

	t.Run("health", func(t *testing.T) {
		t.Parallel()
		a := startAPI(t, s)
		a.expect("/healthz", 200, `{"status":"ok"}`)
		a.expect("/readyz", 200, `{"status":"ready"}`)
		a.expect("/nope", 404, `{"error":"Not Found"}`)
	})
}

// TestQueryAPIRedisKilled kills Redis under a running queryapi: queries get 503 with
// Retry-After and a JSON error, liveness stays up, readiness goes down; after a restart
// everything answers again, with the data Redis kept in its AOF.
func TestQueryAPIRedisKilled(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t, redistest.AOF())
	a := startAPI(t, s, "REDIS_TIMEOUT", "500ms")
	a.hset(a.gen.User("u1"), 3, 2, 1000, 1)
	a.product("p1", 3, 2, 1000, 1)
	a.do("ZADD", a.gen.TopProducts(), 3, "p1")
	a.do("XADD", a.keys.Stream(), "1-1", "u", "u1", "p", "p1", "k", "c")

	const user = `{"user_id":"u1","clicks":3,"page_views":2,"dwell_ms":1000,"dwell_count":1}`
	const product = `{"product_id":"p1","clicks":3,"page_views":2,"dwell_ms":1000,"dwell_count":1}`
	const top = `[{"product_id":"p1","clicks":3}]`
	pipeline := `{"stream":"{` + a.ns + `}:events","length":1,"last_id":"1-1","generation":1,"groups":[],` +
		`"dead_letter":{"stream":"{` + a.ns + `}:deadletter","length":0}}`
	up := func() {
		t.Helper()
		a.expect("/readyz", 200, `{"status":"ready"}`)
		a.expect("/v1/users/u1", 200, user)
		a.expect("/v1/products/p1", 200, product)
		a.expect("/v1/products/top", 200, top)
		a.expect("/user/u1/clicks", 200, `3`)
		a.expect("/v1/pipeline", 200, pipeline)
	}
	up()

	s.Kill()
	for _, path := range []string{"/v1/users/u1", "/v1/products/p1", "/v1/products/top", "/user/u1/clicks", "/v1/pipeline"} {
		a.expectUnavailable(path)
	}
	a.expectNotReady()
	a.expect("/healthz", 200, `{"status":"ok"}`)
	// Validation does not need Redis: a bad request is still a 400.
	a.expect("/v1/users/a%20b", 400, userIDErr)
	a.expect("/v1/products/top?limit=0", 400, limitErr)

	s.Restart()
	up()
}

// TestQueryAPIRedisFrozen freezes Redis (SIGSTOP): connections stay open but nothing
// answers, so queries must give up at REDIS_TIMEOUT with a 503 rather than hang.
func TestQueryAPIRedisFrozen(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	a := startAPI(t, s, "REDIS_TIMEOUT", "500ms")
	a.hset(a.gen.User("u1"), 1, 0, 0, 0)
	const user = `{"user_id":"u1","clicks":1,"page_views":0,"dwell_ms":0,"dwell_count":0}`
	a.expect("/v1/users/u1", 200, user)

	s.Stop()
	a.expectUnavailable("/v1/users/u1")
	a.expectUnavailable("/v1/products/top")
	a.expectUnavailable("/v1/pipeline")
	a.expectNotReady()
	s.Cont()

	// Recovered: a Redis just resumed (on a loaded machine) may miss REDIS_TIMEOUT for
	// a first request or two, which then get their 503 rightly.
	a.eventually("/readyz", 200, `{"status":"ready"}`)
	a.eventually("/v1/users/u1", 200, user)
}

// eventually repeats GET path until it answers status with body, and fails the test
// if it has not after 30 s.
func (a *api) eventually(path string, status int, body string) {
	a.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := a.get(path)
		got := strings.TrimSuffix(r.body, "\n")
		if r.status == status && got == body {
			return
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("GET %s = %d %s for 30 s, want %d %s", path, r.status, got, status, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// expectNotReady checks /readyz's 503: a reason is given, whose wording comes from the
// Redis client.
func (a *api) expectNotReady() {
	a.t.Helper()
	r := a.get("/readyz")
	var body struct {
		Status string `json:"status"`
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal([]byte(r.body), &body); err != nil {
		a.t.Fatalf("GET /readyz body %q: %v", r.body, err)
	}
	if r.status != http.StatusServiceUnavailable || body.Status != "not ready" || body.Reason == "" {
		a.t.Errorf("GET /readyz = %d %q, want 503 with status \"not ready\" and a reason", r.status, r.body)
	}
	if got := r.header.Get("Retry-After"); got != "1" {
		a.t.Errorf("GET /readyz Retry-After = %q, want 1", got)
	}
}
