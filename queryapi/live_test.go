package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/metrics/metricstest"
	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/clickstream/pipeline/internal/testlog"
)

// liveStream is one open GET /v1/live, read frame by frame.
type liveStream struct {
	t      *testing.T
	resp   *http.Response
	r      *bufio.Reader
	cancel context.CancelFunc
}

// liveFrameRead is one SSE event as a client sees it.
type liveFrameRead struct {
	id, event, data string
	retry           string
	comments        []string
}

// streamClient has no overall timeout: a stream is meant to stay open. Each test bounds
// its streams with a context instead.
var streamClient = &http.Client{Transport: &http.Transport{MaxConnsPerHost: 0, DisableKeepAlives: true}}

// openLive opens /v1/live with the given headers (name, value pairs) and returns the
// stream, or the answer when it is not a 200.
func (a *api) openLive(headers ...string) (*liveStream, response) {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+"/v1/live", nil)
	if err != nil {
		a.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := streamClient.Do(req)
	if err != nil {
		cancel()
		a.t.Fatalf("GET /v1/live: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		defer cancel()
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return nil, response{status: resp.StatusCode, header: resp.Header, body: strings.TrimSuffix(string(b), "\n")}
	}
	s := &liveStream{t: a.t, resp: resp, r: bufio.NewReader(resp.Body), cancel: cancel}
	a.t.Cleanup(s.close)
	return s, response{status: resp.StatusCode, header: resp.Header}
}

func (s *liveStream) close() {
	s.cancel()
	s.resp.Body.Close()
}

// next reads the next event (up to its blank line); comments and retry lines are
// returned with the event they precede.
func (s *liveStream) next() (liveFrameRead, error) {
	var f liveFrameRead
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return f, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if f.data != "" || f.event != "" {
				return f, nil
			}
		case strings.HasPrefix(line, ":"):
			f.comments = append(f.comments, line)
		case strings.HasPrefix(line, "id: "):
			f.id = line[len("id: "):]
		case strings.HasPrefix(line, "event: "):
			f.event = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			f.data = line[len("data: "):]
		case strings.HasPrefix(line, "retry: "):
			f.retry = line[len("retry: "):]
		default:
			return f, errors.New("unexpected line " + strconv.Quote(line))
		}
	}
}

// snapshot reads frames until a snapshot (a frame with an id) and decodes it.
func (s *liveStream) snapshot() (liveFrameRead, LiveSnapshot) {
	s.t.Helper()
	for {
		f, err := s.next()
		if err != nil {
			s.t.Fatalf("reading /v1/live: %v", err)
		}
		if f.id == "" {
			continue
		}
		var snap LiveSnapshot
		if err := json.Unmarshal([]byte(f.data), &snap); err != nil {
			s.t.Fatalf("snapshot %s: %v in %s", f.id, err, f.data)
		}
		if f.id != strconv.FormatInt(snap.Time, 10) {
			s.t.Fatalf("frame id %s, snapshot time %d: want the same", f.id, snap.Time)
		}
		return f, snap
	}
}

// Two streams get the same frames, byte for byte, from the one poller; a snapshot holds
// what the API answers for each range, the buckets in progress, the active users and
// the pipeline.
func TestLiveSnapshots(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	a := startAPI(t, s, "LIVE_INTERVAL", "100ms")
	now := time.Now()
	a.apply(now,
		timed{events.Event{UserID: "u1", ProductID: "p1", Type: events.Click}, now.Add(-2 * time.Minute).UnixMilli()},
		timed{events.Event{UserID: "u2", ProductID: "p1", Type: events.PageView}, now.Add(-3 * time.Hour).UnixMilli()},
		timed{events.Event{UserID: "u2", ProductID: "p2", Type: events.Dwell, DurationMs: 700}, now.Add(-2 * 24 * time.Hour).UnixMilli()},
	)
	a.do("XADD", a.keys.Stream(), "*", "u", "u1", "p", "p1", "k", "c")

	one, r := a.openLive()
	if ct, cc := r.header.Get("Content-Type"), r.header.Get("Cache-Control"); ct != "text/event-stream" || cc != "no-cache" {
		t.Errorf("Content-Type %q, Cache-Control %q; want text/event-stream and no-cache", ct, cc)
	}
	two, _ := a.openLive()
	got := [2]map[string]string{{}, {}}
	for i, st := range []*liveStream{one, two} {
		last := int64(0)
		for range 6 {
			f, snap := st.snapshot()
			if snap.Time <= last {
				t.Errorf("stream %d: snapshot %d after %d: ids must grow", i+1, snap.Time, last)
			}
			last = snap.Time
			got[i][f.id] = f.data
		}
	}
	common := 0
	for id, data := range got[0] {
		if other, ok := got[1][id]; ok {
			common++
			if other != data {
				t.Errorf("snapshot %s differs between the streams:\n%s\n%s", id, data, other)
			}
		}
	}
	if common < 3 {
		t.Errorf("the streams shared %d of their snapshots, want at least 3: %v / %v", common, keys(got[0]), keys(got[1]))
	}

	_, snap := one.snapshot()
	for name, want := range map[string]int64{"1h": 1, "24h": 2, "7d": 3, "30d": 3} {
		var sum Summary
		a.getJSON("/v1/stats/summary?range="+name, &sum)
		if snap.Ranges[name].Events != want || sum.Events != want {
			t.Errorf("range %s: snapshot has %d events, the API %d; want %d", name, snap.Ranges[name].Events, sum.Events, want)
		}
	}
	if m := snap.Current["minute"]; m.From != events.Minute.Start(snap.Time) || m.Resolution != "minute" {
		t.Errorf("current minute %+v, want the bucket of %d", m, snap.Time)
	}
	if snap.ActiveUsers != 1 || snap.ActiveWindowSeconds != 300 {
		t.Errorf("active users %d in %d s, want 1 in 300", snap.ActiveUsers, snap.ActiveWindowSeconds)
	}
	if snap.Pipeline.Length != 1 || snap.Pipeline.Generation != 1 || snap.Rebuild.State != "idle" || snap.Rebuild.InProgress {
		t.Errorf("pipeline %+v, rebuild %+v; want 1 entry, generation 1, no rebuild", snap.Pipeline, snap.Rebuild)
	}
	// events/s: entries added per second between readings; after more entries, it is
	// above zero in some snapshot.
	for range 3 {
		a.do("XADD", a.keys.Stream(), "*", "u", "u1", "p", "p1", "k", "c")
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, snap := one.snapshot()
		if snap.EventsPerSecond != nil && *snap.EventsPerSecond > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no snapshot with events/s above 0 after 3 new entries (last %v)", snap.EventsPerSecond)
		}
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// LIVE_MAX_CLIENTS caps the open streams with a 503; a stream that closes frees its
// slot; the poller stops when the last stream has closed, and starts again for the next.
func TestLiveClients(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	a := startAPI(t, s, "LIVE_INTERVAL", "100ms", "LIVE_MAX_CLIENTS", "2")
	metricsCheck := func(what string, want map[string]float64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			m, err := metricstest.TryScrape(a.base + "/metrics")
			ok := err == nil
			for k, v := range want {
				ok = ok && m[k] == v
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: metrics %v, want %v (%v)", what, pick(m, want), want, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	metricsCheck("before any stream", map[string]float64{"live_streams": 0, "live_poller_running": 0})

	one, _ := a.openLive()
	two, _ := a.openLive()
	one.snapshot()
	two.snapshot()
	metricsCheck("two streams", map[string]float64{"live_streams": 2, "live_poller_running": 1})
	_, r := a.openLive()
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") != "1" ||
		r.body != `{"error":"too many live streams (LIVE_MAX_CLIENTS 2); retry later"}` {
		t.Errorf("third stream: %d %s (Retry-After %q); want 503 with Retry-After 1 naming LIVE_MAX_CLIENTS", r.status, r.body, r.header.Get("Retry-After"))
	}

	// A stream that goes frees its slot, once the server has seen it go.
	one.close()
	deadline := time.Now().Add(30 * time.Second)
	var three *liveStream
	for three == nil {
		if three, r = a.openLive(); three == nil {
			if r.status != http.StatusServiceUnavailable || time.Now().After(deadline) {
				t.Fatalf("a stream after one closed: %d %s, want 200 within 30 s", r.status, r.body)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	three.snapshot()

	// The last one gone, the poller stops; the next stream starts it again and gets a
	// snapshot at once.
	two.close()
	three.close()
	metricsCheck("after the last stream", map[string]float64{"live_streams": 0, "live_poller_running": 0})
	m := metricstest.Scrape(t, a.base+"/metrics")
	polls := m[`live_polls_total{result="ok"}`]
	four, _ := a.openLive()
	four.snapshot()
	if m := metricstest.Scrape(t, a.base+"/metrics"); m[`live_polls_total{result="ok"}`] <= polls {
		t.Errorf("a new stream got a snapshot without a new poll (%v, was %v)", m[`live_polls_total{result="ok"}`], polls)
	}
}

func pick(m map[string]float64, keys map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k := range keys {
		out[k] = m[k]
	}
	return out
}

// A stream is exempt from HTTP_WRITE_TIMEOUT and HTTP_READ_TIMEOUT: it keeps getting
// snapshots long after both have passed.
func TestLiveOutlivesTimeouts(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	a := startAPI(t, s, "LIVE_INTERVAL", "100ms", "HTTP_WRITE_TIMEOUT", "1s", "HTTP_READ_TIMEOUT", "1s", "HTTP_READ_HEADER_TIMEOUT", "1s")
	st, _ := a.openLive()
	_, first := st.snapshot()
	for {
		f, err := st.next()
		if err != nil {
			t.Fatalf("the stream ended (%v) %d ms after its first snapshot; HTTP_*_TIMEOUT is 1 s", err, time.Now().UnixMilli()-first.Time)
		}
		var snap LiveSnapshot
		if f.id != "" && json.Unmarshal([]byte(f.data), &snap) == nil && snap.Time >= first.Time+3000 {
			return
		}
	}
}

// A reconnecting EventSource sends the id of the last snapshot it got (Last-Event-ID);
// it is not sent that snapshot again but the next one. A new client starts with the
// newest snapshot at once, and the stream asks for a retry delay.
func TestLiveResume(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	a := startAPI(t, s, "LIVE_INTERVAL", "1s")
	st, _ := a.openLive()
	f, err := st.next()
	if err != nil {
		t.Fatal(err)
	}
	if f.retry != strconv.Itoa(liveRetryMillis) {
		t.Errorf("the stream starts with retry %q, want %d", f.retry, liveRetryMillis)
	}
	if f.id == "" {
		f, _ = st.snapshot()
	}
	// A second client now: the snapshot it starts with is the one the first got.
	other, _ := a.openLive()
	if g, _ := other.snapshot(); g.id != f.id {
		t.Logf("a new client started with %s, the first client's latest was %s (a poll came between)", g.id, f.id)
	}
	st.close()
	again, _ := a.openLive("Last-Event-ID", f.id)
	g, _ := again.snapshot()
	if g.id == f.id {
		t.Fatalf("after reconnecting with Last-Event-ID %s the first snapshot is %s again", f.id, g.id)
	}
	gid, _ := strconv.ParseInt(g.id, 10, 64)
	fid, _ := strconv.ParseInt(f.id, 10, 64)
	if gid <= fid {
		t.Errorf("after reconnecting with Last-Event-ID %s the first snapshot is %s, want a newer one", f.id, g.id)
	}
}

// Stopping queryapi (SIGTERM in main cancels run's context) ends every open stream, and
// run returns without error: no stream holds up the shutdown.
func TestLiveShutdown(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	ns := redistest.Namespace(t)
	vars := map[string]string{"REDIS_URL": s.URL(), "REDIS_NAMESPACE": ns, "LIVE_INTERVAL": "100ms"}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &testlog.Buffer{}
	done := make(chan error, 1)
	go func() { done <- runWith(ctx, func(k string) string { return vars[k] }, logs, ln) }()
	a := &api{t: t, base: "http://" + ln.Addr().String()}
	var streams []*liveStream
	for range 3 {
		st, r := a.openLive()
		if st == nil {
			t.Fatalf("GET /v1/live: %d %s", r.status, r.body)
		}
		st.snapshot()
		streams = append(streams, st)
	}
	cancel()
	for i, st := range streams {
		for {
			_, err := st.next()
			if err == nil {
				continue
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("stream %d ended with %v, want the end of the answer", i+1, err)
			}
			break
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run returned %v, want nil\n%s", err, logs.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("run did not return within 60 s of its context's end\n%s", logs.String())
	}
}
