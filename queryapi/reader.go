package main

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/redis/go-redis/v9"
)

// totalsReader reads counter hashes for concurrent requests with shared round trips:
// each of its loops takes every request that is waiting and sends their HMGETs as one
// pipeline. Under load this turns many small Redis round trips (each a pair of system
// calls on both sides) into a few large ones; with one request at a time it costs one
// round trip, as a direct call would.
type totalsReader struct {
	rdb     *redis.Client
	timeout time.Duration
	queue   chan *readReq
}

type readReq struct {
	key  string
	done chan readResult
}

type readResult struct {
	t   Totals
	err error
}

// maxReadBatch bounds one pipeline.
const maxReadBatch = 256

func newTotalsReader(ctx context.Context, rdb *redis.Client, timeout time.Duration, loops int) *totalsReader {
	r := &totalsReader{rdb: rdb, timeout: timeout, queue: make(chan *readReq, 1024)}
	for i := 0; i < loops; i++ {
		go r.loop(ctx)
	}
	return r
}

var errReaderStopped = errors.New("reader stopped")

// Totals returns the counters stored at key (zeros for a key that does not exist).
func (r *totalsReader) Totals(ctx context.Context, key string) (Totals, error) {
	req := &readReq{key: key, done: make(chan readResult, 1)}
	select {
	case r.queue <- req:
	case <-ctx.Done():
		return Totals{}, ctx.Err()
	}
	select {
	case res := <-req.done:
		return res.t, res.err
	case <-ctx.Done():
		return Totals{}, ctx.Err()
	}
}

func (r *totalsReader) loop(ctx context.Context) {
	batch := make([]*readReq, 0, maxReadBatch)
	cmds := make([]*redis.SliceCmd, 0, maxReadBatch)
	for {
		select {
		case req := <-r.queue:
			batch = append(batch[:0], req)
		case <-ctx.Done():
			for {
				select {
				case req := <-r.queue:
					req.done <- readResult{err: errReaderStopped}
				default:
					return
				}
			}
		}
	gather:
		for len(batch) < maxReadBatch {
			select {
			case req := <-r.queue:
				batch = append(batch, req)
			default:
				break gather
			}
		}
		cctx, cancel := context.WithTimeout(context.Background(), r.timeout)
		pipe := r.rdb.Pipeline()
		cmds = cmds[:0]
		for _, req := range batch {
			cmds = append(cmds, pipe.HMGet(cctx, req.key, events.FieldClicks, events.FieldPageViews, events.FieldDwellMs, events.FieldDwellCount))
		}
		_, err := pipe.Exec(cctx)
		cancel()
		for i, req := range batch {
			if err != nil {
				req.done <- readResult{err: err}
				continue
			}
			req.done <- readResult{t: parseTotals(cmds[i].Val())}
		}
	}
}

func parseTotals(vals []any) Totals {
	var t Totals
	for i, dst := range []*int64{&t.Clicks, &t.PageViews, &t.DwellMs, &t.DwellCount} {
		if s, ok := vals[i].(string); ok {
			*dst, _ = strconv.ParseInt(s, 10, 64)
		}
	}
	return t
}
