package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/config"
	"github.com/clickstream/pipeline/internal/server"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// GET /v1/live is a Server-Sent Events stream of LiveSnapshots. One poller per process
// reads Redis once per LIVE_INTERVAL, while at least one stream is open, and every
// stream gets the same encoded frame: a thousand open dashboards cost one Redis read a
// second, not a thousand.

// liveConfig is the live stream's part of queryapi's configuration.
type liveConfig struct {
	Interval   time.Duration // LIVE_INTERVAL: how often the poller reads Redis
	MaxClients int           // LIVE_MAX_CLIENTS: open streams at most; more get 503
}

func readLiveConfig(r *config.Reader) liveConfig {
	return liveConfig{
		Interval:   r.Duration("LIVE_INTERVAL", time.Second, 100*time.Millisecond),
		MaxClients: r.Int("LIVE_MAX_CLIENTS", 1000, 1, 1_000_000),
	}
}

const (
	// liveHeartbeat is how long a stream may stay silent before it gets a comment line,
	// so that proxies and the browser see a live connection while Redis cannot answer.
	liveHeartbeat = 15 * time.Second
	// liveWriteTimeout bounds one frame's write. A stream has no overall write deadline
	// (it is exempt from HTTP_WRITE_TIMEOUT), but a client that has stopped reading
	// fills the kernel's buffer (hundreds of frames) and then blocks the write: after
	// this long it is dropped, so it holds neither a slot nor the shutdown.
	liveWriteTimeout = 5 * time.Second
	// liveRetryMillis is the reconnection delay the stream asks EventSource to use.
	liveRetryMillis = 2000
	// liveActiveWindow is the window of the snapshot's active users, as /v1/stats/active's default.
	liveActiveWindow = 5 * time.Minute
	// liveRateWindow is the span over which events/s is averaged.
	liveRateWindow = 5 * time.Second
)

// LiveSnapshot is one frame of /v1/live: everything the dashboard shows that changes
// by the second, read in two round trips.
type LiveSnapshot struct {
	Time int64 `json:"time"` // when it was read, Unix ms; also the frame's SSE id
	// Ranges holds the summary of each named range (1h, 24h, 7d, 30d) as
	// /v1/stats/summary?range= answers it at Time, so every dashboard, whatever its
	// range, updates its tiles from the same frame.
	Ranges map[string]Summary `json:"ranges"`
	// Current holds the buckets in progress (minute, hour, day), so that a chart can
	// update its newest point.
	Current             map[string]Summary `json:"current"`
	ActiveUsers         int64              `json:"active_users"` // users seen within ActiveWindowSeconds
	ActiveWindowSeconds int64              `json:"active_window_seconds"`
	// EventsPerSecond is how many entries were added to the stream per second over the
	// last few seconds: what ingest accepts now (duplicates are not added). null until
	// the poller has two readings.
	EventsPerSecond *float64    `json:"events_per_second"`
	Pipeline        Pipeline    `json:"pipeline"`
	Rebuild         LiveRebuild `json:"rebuild"`
}

// LiveRebuild is the part of /v1/rebuild a dashboard shows.
type LiveRebuild struct {
	InProgress bool   `json:"in_progress"` // building, switching or removing the old keys, with its process alive
	State      string `json:"state"`       // as /v1/rebuild's; idle when none ever ran
	Generation int64  `json:"generation"`  // the generation it builds
	Applied    int64  `json:"applied"`     // entries replayed so far
}

// liveSnapshot reads one snapshot at now: the statistics with the generation pointers
// (one MULTI/EXEC on a single Redis, see atGeneration), and the streams, their groups
// and the rebuilds in one pipeline; with several partitions, summed over them.
func (h *handler) liveSnapshot(ctx context.Context, now time.Time) (*LiveSnapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	nowMs := now.UnixMilli()
	end := events.Minute.Start(nowMs) + events.Minute.Millis() // as parseSpan's named ranges
	live := h.liveGlobal(nowMs)
	type tiled struct {
		name string
		tl   events.Tiling
		read *summaryRead
	}
	var ranges, current []*tiled
	n := h.layout.Count()
	for name, d := range namedRanges {
		tl := events.Tile(end-d.Milliseconds(), end, live)
		ranges = append(ranges, &tiled{name: name, tl: tl, read: newSummaryRead(tl, n)})
	}
	for _, res := range events.Resolutions {
		tl := oneBucket(events.Bucket{Res: res, Start: res.Start(nowMs)})
		current = append(current, &tiled{name: res.String(), tl: tl, read: newSummaryRead(tl, n)})
	}
	since := strconv.FormatInt(now.Add(-liveActiveWindow).UnixMilli(), 10)
	active := make([]*redis.IntCmd, n)
	err := h.atGeneration(ctx, func(pipe redis.Pipeliner, k events.Keys, gen events.GenKeys) {
		for _, t := range append(ranges, current...) {
			t.read.queue(ctx, pipe, k, gen)
		}
		active[k.Partition()] = pipe.ZCount(ctx, gen.Active(), since, "+inf")
	})
	if err != nil {
		return nil, err
	}
	snap := &LiveSnapshot{Time: nowMs, Ranges: map[string]Summary{}, Current: map[string]Summary{},
		ActiveWindowSeconds: int64(liveActiveWindow / time.Second)}
	for _, a := range active { // the partitions' users are disjoint
		snap.ActiveUsers += a.Val()
	}
	for _, set := range []struct {
		ts  []*tiled
		dst map[string]Summary
	}{{ranges, snap.Ranges}, {current, snap.Current}} {
		for _, t := range set.ts {
			if set.dst[t.name], err = t.read.result(); err != nil {
				return nil, err
			}
		}
	}

	pipe := h.rdb.Pipeline()
	readPipeline := h.queuePipeline(ctx, pipe)
	parts := h.layout.Partitions()
	states := make([]*redis.SliceCmd, len(parts))
	locks := make([]*redis.IntCmd, len(parts))
	for i, k := range parts {
		states[i] = pipe.HMGet(ctx, k.RebuildState(), events.RebuildFieldState, events.RebuildFieldTarget, events.RebuildFieldApplied)
		locks[i] = pipe.Exists(ctx, k.RebuildLock())
	}
	if snap.Pipeline, err = readPipeline(pipe.Exec(ctx)); err != nil {
		return nil, err
	}
	// With several partitions, each rebuilds on its own: the state is the least advanced
	// (as /v1/rebuild's over all partitions), the generation the highest any builds,
	// applied the sum, and in progress while any partition is.
	var rb LiveRebuild
	for i := range parts {
		prb, err := liveRebuild(states[i], locks[i], snap.Pipeline.Generation)
		if err != nil {
			return nil, err
		}
		if i == 0 || rebuildRank[prb.State] < rebuildRank[rb.State] {
			rb.State = prb.State
		}
		rb.Generation = max(rb.Generation, prb.Generation)
		rb.Applied += prb.Applied
		rb.InProgress = rb.InProgress || prb.InProgress
	}
	snap.Rebuild = rb
	return snap, nil
}

// liveRebuild reads one partition's rebuild from its state hash and lock; gen is the
// generation of a partition no rebuild ever ran in.
func liveRebuild(state *redis.SliceCmd, lock *redis.IntCmd, gen int64) (LiveRebuild, error) {
	for _, cmd := range []redis.Cmder{state, lock} {
		if err := cmd.Err(); err != nil {
			return LiveRebuild{}, err
		}
	}
	rb := LiveRebuild{State: "idle", Generation: gen}
	if s, _ := state.Val()[0].(string); s != "" {
		rb.State = s
		rb.Generation = intField(state.Val()[1])
		rb.Applied = intField(state.Val()[2])
	}
	switch rb.State {
	case events.RebuildStateBuilding, events.RebuildStateSwitching, events.RebuildStateCleanup:
		// Without its lock the rebuild's process is gone: /v1/rebuild says how to go on.
		rb.InProgress = lock.Val() == 1
	}
	return rb, nil
}

// oneBucket is the tiling of exactly bucket b.
func oneBucket(b events.Bucket) events.Tiling {
	return events.Tiling{Buckets: []events.Bucket{b}, From: b.Start, To: b.End(), Finest: b.Res}
}

// liveHub is the one poller and the open streams it feeds.
type liveHub struct {
	cfg    liveConfig
	read   func(ctx context.Context, now time.Time) (*LiveSnapshot, error)
	logger *slog.Logger

	mu      sync.Mutex
	clients map[*liveClient]struct{}
	last    liveFrame // the newest snapshot's frame; zero before the first
	closed  bool      // the hub has stopped: no new streams

	wake chan struct{} // a first stream opened while the poller was idle
	done chan struct{} // closed when the hub stops: every stream ends

	// The poller's own state.
	rates       []rateSample
	unavailable bool // the last poll failed (logged once per outage)

	clientsGauge prometheus.Gauge
	pollingGauge prometheus.Gauge
	polls        *prometheus.CounterVec
	skipped      prometheus.Counter
}

// liveFrame is one encoded SSE event, shared by every stream.
type liveFrame struct {
	id   int64 // the snapshot's id; 0 for a frame without one
	data []byte
	at   time.Time // when it was read
}

// liveClient is one open stream. frames holds at most the newest frame not yet
// written: a slow client skips snapshots (each one supersedes the last) rather than
// making the poller, or the other streams, wait for it.
type liveClient struct {
	frames chan liveFrame
}

type rateSample struct {
	at    time.Time
	added int64
}

func newLiveHub(cfg liveConfig, read func(context.Context, time.Time) (*LiveSnapshot, error), logger *slog.Logger, reg prometheus.Registerer) *liveHub {
	h := &liveHub{
		cfg: cfg, read: read, logger: logger,
		clients: map[*liveClient]struct{}{},
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		clientsGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "live_streams", Help: "Open /v1/live streams."}),
		pollingGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "live_poller_running", Help: "1 while the live poller reads Redis (at least one stream is open), else 0."}),
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "live_polls_total", Help: "Snapshots the live poller read, by result (ok or error)."}, []string{"result"}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "live_frames_skipped_total", Help: "Snapshots a slow stream skipped because it had not yet taken the one before."}),
	}
	h.polls.WithLabelValues("ok")
	h.polls.WithLabelValues("error")
	reg.MustRegister(h.clientsGauge, h.pollingGauge, h.polls, h.skipped)
	return h
}

// run is the poller: idle until a stream opens, then one read every interval until
// the last stream closes. When ctx ends it ends every open stream and returns.
func (h *liveHub) run(ctx context.Context) {
	defer func() {
		h.mu.Lock()
		h.closed = true
		h.mu.Unlock()
		close(h.done)
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.wake:
		}
		h.poll(ctx)
	}
}

// poll reads a snapshot at once and then every interval, and returns when no stream is
// open (checked before each read) or ctx ends.
func (h *liveHub) poll(ctx context.Context) {
	h.pollingGauge.Set(1)
	defer h.pollingGauge.Set(0)
	h.logger.Debug("live poller started")
	defer h.logger.Debug("live poller stopped")
	t := time.NewTicker(h.cfg.Interval)
	defer t.Stop()
	h.rates = h.rates[:0] // a rate across an idle gap would be an average over it
	for {
		if h.count() == 0 {
			return
		}
		h.pollOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (h *liveHub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

// unavailableFrame tells the streams that this interval has no snapshot, in the shape
// of the API's 503 body.
var unavailableFrame = []byte("event: unavailable\ndata: {\"error\":\"storage unavailable, retry later\"}\n\n")

func (h *liveHub) pollOnce(ctx context.Context) {
	now := time.Now()
	snap, err := h.read(ctx, now)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		h.polls.WithLabelValues("error").Inc()
		if !h.unavailable {
			h.logger.Warn("live snapshot unavailable", "err", err)
			h.unavailable = true
		}
		h.broadcast(liveFrame{data: unavailableFrame, at: now})
		return
	}
	h.polls.WithLabelValues("ok").Inc()
	if h.unavailable {
		h.logger.Info("live snapshots available again")
		h.unavailable = false
	}
	snap.EventsPerSecond = h.rate(now, snap.Pipeline)
	// The id must grow even if the clock steps back, so that a reconnecting client's
	// Last-Event-ID never matches a newer frame.
	h.mu.Lock()
	snap.Time = max(snap.Time, h.last.id+1)
	h.mu.Unlock()
	body, err := json.Marshal(snap)
	if err != nil {
		h.logger.Error("encode live snapshot", "err", err)
		return
	}
	id := strconv.FormatInt(snap.Time, 10)
	data := make([]byte, 0, len(body)+len(id)+16)
	data = append(data, "id: "...)
	data = append(data, id...)
	data = append(data, "\ndata: "...)
	data = append(data, body...)
	data = append(data, "\n\n"...)
	h.broadcast(liveFrame{id: snap.Time, data: data, at: now})
}

// rate is the entries added to the stream per second over the last liveRateWindow,
// or nil before there are two readings.
func (h *liveHub) rate(now time.Time, p Pipeline) *float64 {
	added := p.entriesAdded
	if added == 0 {
		added = p.Length // Redis before 7.0 does not report entries-added
	}
	h.rates = append(h.rates, rateSample{now, added})
	for len(h.rates) > 2 && now.Sub(h.rates[1].at) >= liveRateWindow {
		h.rates = h.rates[1:]
	}
	first := h.rates[0]
	dt := now.Sub(first.at).Seconds()
	if len(h.rates) < 2 || dt <= 0 {
		return nil
	}
	r := max(float64(added-first.added), 0) / dt
	return &r
}

// broadcast hands f to every stream; a frame with an id becomes the one new streams
// start with.
func (h *liveHub) broadcast(f liveFrame) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if f.id != 0 {
		h.last = f
	}
	for c := range h.clients {
		select {
		case c.frames <- f:
			continue
		default:
		}
		// Full: replace the frame the client has not taken yet. Only the poller sends,
		// so after the receive there is room, unless the client took it meanwhile.
		select {
		case <-c.frames:
			h.skipped.Inc()
		default:
		}
		select {
		case c.frames <- f:
		default:
		}
	}
}

var errLiveStopped = &server.Status{Code: http.StatusServiceUnavailable, Msg: "shutting down; retry later"}

// subscribe opens a stream, or refuses with 503 when LIVE_MAX_CLIENTS are open.
func (h *liveHub) subscribe() (*liveClient, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errLiveStopped
	}
	if len(h.clients) >= h.cfg.MaxClients {
		return nil, &server.Status{Code: http.StatusServiceUnavailable,
			Msg: "too many live streams (LIVE_MAX_CLIENTS " + strconv.Itoa(h.cfg.MaxClients) + "); retry later"}
	}
	c := &liveClient{frames: make(chan liveFrame, 1)}
	h.clients[c] = struct{}{}
	h.clientsGauge.Set(float64(len(h.clients)))
	if len(h.clients) == 1 {
		select {
		case h.wake <- struct{}{}:
		default:
		}
	}
	return c, nil
}

func (h *liveHub) unsubscribe(c *liveClient) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.clients, c)
	h.clientsGauge.Set(float64(len(h.clients)))
}

// latest returns the newest snapshot frame if it is no older than one interval (an
// older one is from before the poller went idle; a fresh one is on its way).
func (h *liveHub) latest() (liveFrame, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f := h.last
	return f, f.id != 0 && time.Since(f.at) <= h.cfg.Interval
}

// serve is GET /v1/live. A stream starts with the newest snapshot, unless the client
// says (Last-Event-ID, sent by a reconnecting EventSource) that it has it already, and
// then gets every snapshot the poller reads. It ends when the client goes, when a
// write fails, or when queryapi stops.
func (h *liveHub) serve(c echo.Context) error {
	w := c.Response()
	if c.Request().Method == http.MethodHead {
		w.Header().Set(echo.HeaderContentType, "text/event-stream")
		w.WriteHeader(http.StatusOK)
		return nil
	}
	cl, err := h.subscribe()
	if err != nil {
		return err
	}
	defer h.unsubscribe(cl)
	// The stream is one long answer, which HTTP_WRITE_TIMEOUT (a deadline from the
	// end of the request's headers) would cut: each write gets its own deadline
	// instead. HTTP_READ_TIMEOUT does not apply once the request has been read.
	rc := http.NewResponseController(w)
	hdr := w.Header()
	hdr.Set(echo.HeaderContentType, "text/event-stream")
	hdr.Set(echo.HeaderCacheControl, "no-cache")
	hdr.Set("X-Accel-Buffering", "no") // nginx: pass each event on at once
	write := func(b []byte) error {
		if err := rc.SetWriteDeadline(time.Now().Add(liveWriteTimeout)); err != nil {
			return err
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		return rc.Flush()
	}
	w.WriteHeader(http.StatusOK)
	start := []byte("retry: " + strconv.Itoa(liveRetryMillis) + "\n\n")
	if f, ok := h.latest(); ok && strconv.FormatInt(f.id, 10) != c.Request().Header.Get("Last-Event-ID") {
		start = append(start, f.data...)
	}
	if err := write(start); err != nil {
		return nil // the client is gone; nothing to answer
	}
	heartbeat := time.NewTimer(liveHeartbeat)
	defer heartbeat.Stop()
	for {
		var b []byte
		select {
		case f := <-cl.frames:
			b = f.data
		case <-heartbeat.C:
			b = []byte(": ping\n\n")
		case <-c.Request().Context().Done():
			return nil
		case <-h.done:
			return nil
		}
		if err := write(b); err != nil {
			if !errors.Is(err, context.Canceled) {
				h.logger.Debug("live stream write failed", "err", err)
			}
			return nil
		}
		heartbeat.Reset(liveHeartbeat)
	}
}

// start runs the poller until ctx ends; the function it returns stops it, ends every
// open stream and waits until the poller has returned. run calls it before it returns.
func (h *liveHub) start(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}
