package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/redis/go-redis/v9"
)

// dedupScript writes the events of a request, each that has an event_id at most once
// per dedup window.
//
//go:embed dedup.lua
var dedupSource string

var dedupScript = redis.NewScript(dedupSource)

// Writer appends events to the stream. Concurrent requests share Redis round trips:
// each of Writer's flushers takes every request that is waiting, writes all their
// events with one script call, and answers each request only after Redis has replied.
type Writer struct {
	rdb       redis.UniversalClient
	keys      events.Keys
	window    string // dedup window in seconds, as the script's argument
	timeout   time.Duration
	maxEvents int
	queue     chan *writeReq
	m         *ingestMetrics
	logger    *slog.Logger
	flushers  int // started by Run
}

type writeReq struct {
	events []events.Event
	state  atomic.Int32
	done   chan writeResult
}

// A request's states. The requester and the flusher each move it on with a
// compare-and-swap, so exactly one of them decides what becomes of it: a request given up
// while queued is never written, and the outcome of one given up while Redis has it is
// accounted for by the flusher, so that the metrics say what Redis did.
const (
	reqQueued   int32 = iota // waiting for a flusher
	reqSent                  // taken by a flusher: Redis may apply it whatever happens next
	reqAnswered              // its result is on done
	reqDropped               // given up while queued: never sent, never written
	reqOrphaned              // given up while Redis had it: the flusher accounts for its outcome
)

// take moves a queued request into a flush; false means its requester has given up.
func (r *writeReq) take() bool { return r.state.CompareAndSwap(reqQueued, reqSent) }

type writeResult struct {
	duplicates int
	err        error
}

// NewWriter starts flushers goroutines that run until ctx is cancelled.
func NewWriter(rdb redis.UniversalClient, keys events.Keys, window, timeout time.Duration, flushers, maxEvents int, m *ingestMetrics, logger *slog.Logger) *Writer {
	w := &Writer{
		rdb:       rdb,
		keys:      keys,
		window:    strconv.FormatInt(int64(window/time.Second), 10),
		timeout:   timeout,
		maxEvents: maxEvents,
		queue:     make(chan *writeReq, 4096),
		m:         m,
		logger:    logger,
		flushers:  flushers,
	}
	return w
}

// Run runs the flushers until ctx is cancelled, and returns once each has finished the
// write in flight and answered the requests still queued.
func (w *Writer) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for range w.flushers {
		wg.Go(func() { w.flusher(ctx) })
	}
	wg.Wait()
}

// errWriterStopped is returned to requests that arrive after shutdown began.
var errWriterStopped = errors.New("writer stopped")

// Write appends evs to the stream and returns how many were skipped as duplicates.
// A nil error means Redis holds every event that was not a duplicate. An error means
// the client must retry (events with event_id are then written once): either nothing
// was written (Redis refused, or ctx ended before the request was sent), or it is not
// known, because Redis did not reply in time; in that case the write may still complete,
// whole, and the flusher counts its outcome when Redis replies.
//
// ctx bounds the wait and nothing else: it should not end when the client goes away,
// or the outcome would go unrecorded. gone (the request context's Done) closing only
// notes in the debug log that the client left; the write and the wait go on.
func (w *Writer) Write(ctx context.Context, gone <-chan struct{}, evs []events.Event) (int, error) {
	req := &writeReq{events: evs, done: make(chan writeResult, 1)}
	select {
	case w.queue <- req:
	case <-ctx.Done():
		return 0, fmt.Errorf("write queue full, nothing written: %w", ctx.Err())
	}
wait:
	for {
		select {
		case res := <-req.done:
			return res.duplicates, res.err
		case <-gone:
			w.logger.Debug("client closed its connection (or its sending half) while its events were being written; waiting for the outcome", "events", len(evs))
			gone = nil
		case <-ctx.Done():
			break wait
		}
	}
	if req.state.CompareAndSwap(reqQueued, reqDropped) {
		return 0, fmt.Errorf("not sent to Redis in time (flushers busy), nothing written: %w", ctx.Err())
	}
	if req.state.CompareAndSwap(reqSent, reqOrphaned) {
		return 0, fmt.Errorf("no reply from Redis in time; the write may still complete: %w", ctx.Err())
	}
	res := <-req.done // answered meanwhile
	return res.duplicates, res.err
}

func (w *Writer) flusher(ctx context.Context) {
	var batch []*writeReq
	var cmds []*redis.Cmd
	for {
		var first *writeReq
		select {
		case first = <-w.queue:
		case <-ctx.Done():
			w.drainStopped()
			return
		}
		if !first.take() {
			continue
		}
		batch = append(batch[:0], first)
		n := len(first.events)
	gather:
		for n < w.maxEvents {
			select {
			case r := <-w.queue:
				if r.take() {
					batch = append(batch, r)
					n += len(r.events)
				}
			default:
				break gather
			}
		}
		w.m.flushEvents.Observe(float64(n))
		cmds = w.flush(batch, cmds)
	}
}

// drainStopped fails requests still queued at shutdown; the HTTP server has stopped
// taking requests by then, so this only catches stragglers.
func (w *Writer) drainStopped() {
	for {
		select {
		case r := <-w.queue:
			if r.state.CompareAndSwap(reqQueued, reqAnswered) {
				r.done <- writeResult{err: errWriterStopped}
			}
		default:
			return
		}
	}
}

// flush writes a batch of requests in one round trip. Each request is atomic on its
// own: a request with an event_id among its events is one call of dedupScript, which
// writes all of them; one without is a single XADD, or several wrapped in MULTI/EXEC
// (also in the AOF, so a Redis crash cannot keep half of a request). Plain XADDs are
// used where no dedup is needed because an XADD from a script costs Redis about twice
// as much, and bare commands are used for single events because queuing them in a
// transaction costs Redis more than the XADD itself.
func (w *Writer) flush(batch []*writeReq, cmds []*redis.Cmd) []*redis.Cmd {
	// The flush is not tied to any one request's context: once sent, it runs to
	// completion in Redis whatever the clients do, and its reply settles every request.
	ctx, cancel := context.WithTimeout(context.Background(), w.timeout)
	defer cancel()
	stream := w.keys.Stream()
	pipe := w.rdb.Pipeline()
	for _, r := range batch {
		if r.hasEventIDs() {
			// Loaded ahead of the EVALSHAs in the same round trip, so they cannot meet
			// an empty script cache (after a Redis restart).
			pipe.ScriptLoad(ctx, dedupSource)
			break
		}
	}
	cmds = cmds[:0]
	for _, r := range batch {
		if r.hasEventIDs() {
			cmds = append(cmds, pipe.Do(ctx, w.dedupArgs(r.events, stream)...))
			continue
		}
		multi := len(r.events) > 1
		if multi {
			pipe.Do(ctx, "multi")
		}
		for i := range r.events {
			c := pipe.Do(ctx, r.events[i].AppendFields(append(make([]any, 0, 13), "xadd", stream, "*"))...)
			if !multi {
				cmds = append(cmds, c)
			}
		}
		if multi {
			cmds = append(cmds, pipe.Do(ctx, "exec"))
		}
	}
	_, err := pipe.Exec(ctx)
	if err != nil {
		w.m.writeErrors.Inc() // before any answer: a client that got its 503 finds it counted
	}
	var late, lateEvents int
	for i, r := range batch {
		res := r.result(cmds[i])
		if res.err == nil && cmds[i].Val() == nil {
			// No reply at all: the round trip failed before this command ran. go-redis
			// leaves a Redis error met while setting up the connection (WRONGPASS, a bad
			// DB index) off the commands, so their own Err is nil; nothing was written.
			res.err = err
			if res.err == nil {
				res.err = errors.New("no reply from Redis")
			}
		}
		if r.state.CompareAndSwap(reqSent, reqAnswered) {
			r.done <- res
			continue
		}
		// Orphaned: the client was answered 503 while Redis had the write. Count what Redis
		// did, so that ingest_events_total matches the stream.
		if res.err != nil {
			w.m.lateUnconf.Inc()
			continue
		}
		w.m.lateWritten.Inc()
		w.m.accepted.Add(float64(len(r.events) - res.duplicates))
		if res.duplicates > 0 {
			w.m.duplicates.Add(float64(res.duplicates))
		}
		late++
		lateEvents += len(r.events)
	}
	if err != nil {
		w.logger.Warn("write to stream failed", "stream", stream, "requests", len(batch), "err", err)
	}
	if late > 0 {
		// Their clients were told to retry: events without event_id will be stored twice.
		w.logger.Warn("requests answered 503 (Redis had not replied in time) were written after all",
			"stream", stream, "requests", late, "events", lateEvents)
	}
	return cmds
}

// dedupArgs is the EVALSHA of dedupScript that writes evs: the stream and the markers
// of the events that carry an event_id as keys, then the window and each event's fields.
func (w *Writer) dedupArgs(evs []events.Event, stream string) []any {
	markers := 0
	for i := range evs {
		if evs[i].EventID != "" {
			markers++
		}
	}
	args := make([]any, 0, 5+markers+len(evs)*14)
	args = append(args, "evalsha", dedupScript.Hash(), 1+markers, stream)
	for i := range evs {
		if evs[i].EventID != "" {
			args = append(args, w.keys.Marker(evs[i].EventID))
		}
	}
	args = append(args, w.window)
	for i := range evs {
		ev := &evs[i]
		n := len(args)
		args = append(args, 0, "0")
		if ev.EventID != "" {
			args[n+1] = "1"
		}
		args = ev.AppendFields(args)
		args[n] = len(args) - n - 2
	}
	return args
}

func (r *writeReq) hasEventIDs() bool {
	for i := range r.events {
		if r.events[i].EventID != "" {
			return true
		}
	}
	return false
}

// result reads a request's outcome from its command: the dedup script's count of
// duplicates, for a request with event_ids; else an XADD's entry id (one event) or its
// EXEC's (several).
func (r *writeReq) result(c *redis.Cmd) writeResult {
	if err := c.Err(); err != nil {
		return writeResult{err: err}
	}
	if r.hasEventIDs() {
		dups, ok := c.Val().(int64)
		if !ok {
			return writeResult{err: fmt.Errorf("unexpected dedup script reply %v", c.Val())}
		}
		return writeResult{duplicates: int(dups)}
	}
	replies := []any{c.Val()}
	if len(r.events) > 1 {
		var ok bool
		if replies, ok = c.Val().([]any); !ok || len(replies) != len(r.events) {
			return writeResult{err: fmt.Errorf("unexpected EXEC reply %v", c.Val())}
		}
	}
	dups := 0
	for _, v := range replies {
		switch v := v.(type) {
		case error:
			// A command failed inside the transaction; the others ran. Nothing in this
			// pipeline does that short of a bug, but the client must not get a 202.
			return writeResult{err: v}
		case int64:
			if v == 0 {
				dups++
			}
		}
	}
	return writeResult{duplicates: dups}
}

// Ping checks that Redis answers, for the start-up log.
func (w *Writer) Ping(ctx context.Context) error {
	return w.rdb.Ping(ctx).Err()
}
