package main

import (
	"context"
	_ "embed"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/redis/go-redis/v9"
)

// dedupScript writes an event that has an event_id at most once per dedup window.
//
//go:embed dedup.lua
var dedupSource string

var dedupScript = redis.NewScript(dedupSource)

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
	var cmds []redis.Cmder
	var fields []any
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
		cmds, fields = w.flush(batch, cmds, fields)
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

// flush writes a batch of requests in one MULTI/EXEC transaction: an event without an
// event_id is a plain XADD, one with an event_id goes through dedupScript. The
// transaction makes the flush all-or-nothing (also in the AOF, so a Redis crash cannot
// keep half of a request), and costs one round trip however many requests it carries.
// Plain XADDs are used where no dedup is needed because they cost Redis about half
// of what an XADD from a script does.
func (w *Writer) flush(batch []*writeReq, cmds []redis.Cmder, fields []any) ([]redis.Cmder, []any) {
	// The flush is not tied to any one request's context: once sent, the transaction
	// runs to completion in Redis whatever the clients do, and its reply settles every
	// request.
	ctx, cancel := context.WithTimeout(context.Background(), w.timeout)
	defer cancel()
	stream := w.keys.Stream()
	pipe := w.rdb.TxPipeline()
	loaded := false
	cmds = cmds[:0]
	for _, r := range batch {
		for i := range r.events {
			ev := &r.events[i]
			fields = ev.AppendFields(fields[:0])
			if ev.EventID == "" {
				cmds = append(cmds, pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: fields}))
				continue
			}
			if !loaded {
				// Loaded inside the transaction, so EVALSHA cannot meet an empty script
				// cache (after a Redis restart) half-way through a flush.
				pipe.ScriptLoad(ctx, dedupSource)
				loaded = true
			}
			args := append([]any{w.window}, fields...)
			cmds = append(cmds, dedupScript.EvalSha(ctx, pipe, []string{w.keys.Marker(ev.EventID), stream}, args...))
		}
	}
	_, err := pipe.Exec(ctx)
	if err != nil {
		w.logger.Warn("write to stream failed", "stream", stream, "requests", len(batch), "err", err)
		for _, r := range batch {
			r.done <- writeResult{err: err}
		}
		return cmds, fields
	}
	off := 0
	for _, r := range batch {
		dups := 0
		for i := range r.events {
			if c, ok := cmds[off+i].(*redis.Cmd); ok {
				if n, _ := c.Int(); n == 0 {
					dups++
				}
			}
		}
		off += len(r.events)
		r.done <- writeResult{duplicates: dups}
	}
	return cmds, fields
}

func countEvents(batch []*writeReq) int {
	n := 0
	for _, r := range batch {
		n += len(r.events)
	}
	return n
}

// Ping checks that Redis answers, for the start-up log.
func (w *Writer) Ping(ctx context.Context) error {
	return w.rdb.Ping(ctx).Err()
}
