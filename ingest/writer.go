package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/redis/go-redis/v9"
)

// ingestScript appends a flush's events to the stream in one atomic call. For an event
// with an event_id it first sets the dedup marker with NX and writes the entry only if
// the marker was new, so a retried or concurrent copy of an event is written once.
//
//go:embed ingest.lua
var ingestSource string

var ingestScript = redis.NewScript(ingestSource)

// Writer appends events to the stream. Concurrent requests share Redis round trips:
// each of Writer's flushers takes every request that is waiting, writes all their
// events with one script call, and answers each request only after Redis has replied.
type Writer struct {
	rdb       *redis.Client
	keys      events.Keys
	window    string // dedup window in seconds, as the script's argument
	timeout   time.Duration
	maxEvents int
	queue     chan *writeReq
	logger    *slog.Logger
}

type writeReq struct {
	events []events.Event
	done   chan writeResult
}

type writeResult struct {
	duplicates int
	err        error
}

// NewWriter starts flushers goroutines that run until ctx is cancelled.
func NewWriter(ctx context.Context, rdb *redis.Client, keys events.Keys, window, timeout time.Duration, flushers, maxEvents int, logger *slog.Logger) *Writer {
	w := &Writer{
		rdb:       rdb,
		keys:      keys,
		window:    strconv.FormatInt(int64(window/time.Second), 10),
		timeout:   timeout,
		maxEvents: maxEvents,
		queue:     make(chan *writeReq, 4096),
		logger:    logger,
	}
	for i := 0; i < flushers; i++ {
		go w.flusher(ctx)
	}
	return w
}

// errWriterStopped is returned to requests that arrive after shutdown began.
var errWriterStopped = errors.New("writer stopped")

// Write appends evs to the stream and returns how many were skipped as duplicates.
// A nil error means Redis holds every event that was not a duplicate. An error means
// nothing is known: the client must retry (events with event_id are then written once).
func (w *Writer) Write(ctx context.Context, evs []events.Event) (int, error) {
	req := &writeReq{events: evs, done: make(chan writeResult, 1)}
	select {
	case w.queue <- req:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	select {
	case res := <-req.done:
		return res.duplicates, res.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (w *Writer) flusher(ctx context.Context) {
	var batch []*writeReq
	var keys []string
	var args []any
	for {
		var first *writeReq
		select {
		case first = <-w.queue:
		case <-ctx.Done():
			w.drainStopped()
			return
		}
		batch = append(batch[:0], first)
		n := len(first.events)
	gather:
		for n < w.maxEvents {
			select {
			case r := <-w.queue:
				batch = append(batch, r)
				n += len(r.events)
			default:
				break gather
			}
		}
		keys, args = w.flush(batch, keys[:0], args[:0])
	}
}

// drainStopped fails requests still queued at shutdown; the HTTP server has stopped
// taking requests by then, so this only catches stragglers.
func (w *Writer) drainStopped() {
	for {
		select {
		case r := <-w.queue:
			r.done <- writeResult{err: errWriterStopped}
		default:
			return
		}
	}
}

func (w *Writer) flush(batch []*writeReq, keys []string, args []any) ([]string, []any) {
	keys = append(keys, w.keys.Stream())
	args = append(args, w.window)
	var fields []any
	for _, r := range batch {
		for i := range r.events {
			ev := &r.events[i]
			marker := 0
			if ev.EventID != "" {
				keys = append(keys, w.keys.Marker(ev.EventID))
				marker = len(keys)
			}
			fields = ev.AppendFields(fields[:0])
			args = append(args, marker, len(fields))
			args = append(args, fields...)
		}
	}
	// The flush is not tied to any one request's context: once sent, the script runs to
	// completion in Redis whatever the clients do, and its reply settles every request.
	ctx, cancel := context.WithTimeout(context.Background(), w.timeout)
	defer cancel()
	written, err := ingestScript.Run(ctx, w.rdb, keys, args...).Text()
	if err == nil && len(written) != countEvents(batch) {
		err = fmt.Errorf("ingest script returned %d results for %d events", len(written), countEvents(batch))
	}
	if err != nil {
		w.logger.Warn("write to stream failed", "stream", w.keys.Stream(), "requests", len(batch), "err", err)
		for _, r := range batch {
			r.done <- writeResult{err: err}
		}
		return keys, args
	}
	off := 0
	for _, r := range batch {
		dups := 0
		for i := range r.events {
			if written[off+i] == '0' {
				dups++
			}
		}
		off += len(r.events)
		r.done <- writeResult{duplicates: dups}
	}
	return keys, args
}

func countEvents(batch []*writeReq) int {
	n := 0
	for _, r := range batch {
		n += len(r.events)
	}
	return n
}

// Load loads the script into Redis's script cache, so the first flush does not pay for
// it; a Redis restart empties the cache and Run then falls back to EVAL once.
func (w *Writer) Load(ctx context.Context) error {
	return ingestScript.Load(ctx, w.rdb).Err()
}
