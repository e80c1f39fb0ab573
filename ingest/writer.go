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
	layout    events.Layout
	replicas  int    // WRITE_REPLICAS: replicas that must confirm a write before its 202
	waitMs    int64  // how long WAIT may wait for them
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

// NewWriter returns a Writer whose flushers Run runs. replicas is WRITE_REPLICAS: with
// it above 0, a write is answered only once that many replicas of its master confirm it
// (WAIT), within three quarters of timeout.
func NewWriter(rdb redis.UniversalClient, layout events.Layout, replicas int, window, timeout time.Duration, flushers, maxEvents int, m *ingestMetrics, logger *slog.Logger) *Writer {
	w := &Writer{
		rdb:       rdb,
		layout:    layout,
		replicas:  replicas,
		waitMs:    max(timeout.Milliseconds()*3/4, 1),
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
		w.flush(batch)
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

// Ping checks that Redis answers, for the start-up log.
func (w *Writer) Ping(ctx context.Context) error {
	return w.rdb.Ping(ctx).Err()
}
