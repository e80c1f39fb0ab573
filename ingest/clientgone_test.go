package main

import (
	"fmt"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/metrics/metricstest"
	"github.com/clickstream/pipeline/internal/redistest"
)

// waitLog waits up to 10 s for the service's log to contain want; a line containing
// fail instead ends the wait with the test failed.
func (s *ingestUnderTest) waitLog(t *testing.T, want, fail string, count int) {
	t.Helper()
	for range 500 {
		l := s.logs.String()
		if fail != "" && strings.Contains(l, fail) {
			t.Fatalf("log says %q, waiting for %q", fail, want)
		}
		if strings.Count(l, want) >= count {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("log never said %q %d times", want, count)
}

// Two clients send their events and close their connections while Redis holds the
// write (Redis is frozen with SIGSTOP meanwhile): one closes it outright, the other
// only its sending half, as some clients do after a request. The events are written
// once Redis runs again, and ingest says so: both requests are counted as written with
// their client gone, their events as accepted, nothing as unavailable, and the client
// that still listens gets its 202. (Before, both requests were answered 503 and counted
// unavailable, logged as "context canceled", while Redis wrote their events.)
func TestClientGoneWhileWriting(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	// A long REDIS_TIMEOUT: the write waits for the frozen Redis instead of timing out.
	svc := startIngest(t, rs, map[string]string{"REDIS_TIMEOUT": "30s", "LOG_LEVEL": "debug"})
	accepted(t, svc.post(t, "/v1/events", "application/json", `{"user_id":"u0","product_id":"p0"}`, false))

	rs.Stop()
	t.Cleanup(rs.Cont) // before the server is killed, should the test fail while frozen
	closed, halfClosed := svc.dial(t), svc.dial(t)
	bodies := []string{
		`{"user_id":"u1","product_id":"p1","event_id":"gone-1"}` + "\n" + `{"user_id":"u1","product_id":"p2"}` + "\n",
		`{"user_id":"u2","product_id":"p1","type":"page_view"}`,
	}
	closed.send("POST /v1/events HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/x-ndjson\r\n" +
		fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(bodies[0]), bodies[0]))
	halfClosed.send(postHead(len(bodies[1])) + bodies[1])
	// Every event has gone out to Redis: 1 before, 3 now.
	svc.waitMetric(t, "ingest_flush_events_sum", eq(4))
	closed.conn.Close()
	if err := halfClosed.conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	svc.waitLog(t, "client closed its connection (or its sending half) while its events were being written", "msg=unavailable", 2)

	rs.Cont()
	if got := accepted(t, halfClosed.mustAnswer("the half-closed client")); got != (Accepted{Accepted: 1}) {
		t.Errorf("half-closed client: %+v, want 1 accepted", got)
	}
	svc.waitMetric(t, `ingest_client_gone_requests_total{result="written"}`, eq(2))
	want := []events.Event{
		{UserID: "u0", ProductID: "p0"},
		{UserID: "u1", ProductID: "p1", EventID: "gone-1"},
		{UserID: "u1", ProductID: "p2"},
		{UserID: "u2", ProductID: "p1", Type: events.PageView},
	}
	got := svc.streamEvents(t)
	byUser := func(evs []events.Event) map[string][]events.Event {
		m := map[string][]events.Event{}
		for _, e := range evs {
			m[e.UserID] = append(m[e.UserID], e)
		}
		return m
	}
	if !reflect.DeepEqual(byUser(got), byUser(want)) { // the two requests in either order
		t.Errorf("stream holds %+v, want %+v", got, want)
	}
	metricstest.Scrape(t, svc.base+"/metrics").Check(t, map[string]float64{
		`ingest_events_total{result="accepted"}`:                             4,
		`ingest_client_gone_requests_total{result="written"}`:                2,
		`ingest_client_gone_requests_total{result="unconfirmed"}`:            0,
		`ingest_rejected_requests_total{reason="unavailable"}`:               0,
		`http_requests_total{method="POST",route="/v1/events",status="202"}`: 3,
	})
	if l := svc.logs.String(); strings.Count(l, "before its answer; its events were written") != 2 || strings.Contains(l, "context canceled") {
		t.Errorf("log does not say twice that a client left before its answer and its events were written, or says \"context canceled\":\n%s", l)
	}
}

// With one flusher stuck on a frozen Redis, requests queue behind it. One whose wait
// (REDIS_TIMEOUT + ¼ s) ends while it is still queued is answered 503 and never written:
// the 503 tells the truth. One whose wait ends while Redis has its write is answered 503
// too; when Redis replies, the write is counted as a late write, its events as accepted,
// and the log says so. (Before, the queued request was written after its 503.)
func TestRequestGivenUpWhileQueuedIsNotWritten(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	svc := startIngest(t, rs, map[string]string{"WRITE_FLUSHERS": "1", "FLUSH_MAX_EVENTS": "1", "REDIS_TIMEOUT": "3s"})
	accepted(t, svc.post(t, "/v1/events", "application/json", `{"user_id":"u0","product_id":"p0"}`, false))
	c := svc.newClient(30 * time.Second)

	rs.Stop()
	t.Cleanup(rs.Cont)
	answers := make(chan answer, 3)
	post := func(user string) {
		go func() {
			a, err := svc.tryPost(c, "/v1/events", "application/json", `{"user_id":"`+user+`","product_id":"p1"}`, false)
			if err != nil {
				a = answer{status: -1, body: []byte(err.Error())}
			}
			answers <- a
		}()
	}
	// A goes out to the frozen Redis and its flush times out after 3 s. B and C queue
	// behind it; the flusher takes one of them next (its wait ends while Redis has it),
	// and the other one's wait ends while it is still queued.
	post("uA")
	svc.waitMetric(t, "ingest_flush_events_count", eq(2))
	post("uB")
	post("uC")
	for range 3 {
		checkUnavailable(t, "request while Redis is frozen", <-answers)
	}

	rs.Cont()
	// The flusher writes the queue in order: once this is written, the late write has
	// been answered, and any write of the request given up while queued has happened.
	accepted(t, svc.post(t, "/v1/events", "application/json", `{"user_id":"u9","product_id":"p9"}`, false))
	users := map[string]int{}
	for _, e := range svc.streamEvents(t) {
		users[e.UserID]++
	}
	// A's write reached Redis before its timeout, so Redis ran it when it woke up: the
	// 503 said it might, and the README says so.
	if users["u0"] != 1 || users["uA"] != 1 || users["u9"] != 1 || users["uB"]+users["uC"] != 1 || len(users) != 4 {
		t.Errorf("stream holds events of users %v, want u0, uA, u9 and one of uB and uC: the request given up while queued must not be written", users)
	}
	metricstest.Scrape(t, svc.base+"/metrics").Check(t, map[string]float64{
		`ingest_events_total{result="accepted"}`:               3, // u0, the late write, u9
		`ingest_late_writes_total{result="written"}`:           1,
		`ingest_late_writes_total{result="unconfirmed"}`:       0,
		`ingest_rejected_requests_total{reason="unavailable"}`: 3,
	})
	t.Logf("ingest log:\n%s", svc.logs.String())
	if l := svc.logs.String(); !strings.Contains(l, "were written after all") || !strings.Contains(l, "nothing written") {
		t.Errorf("log does not say that one request was written after its 503 and another not at all:\n%s", l)
	}
}
