package main

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// totalsReader reads counter hashes for concurrent requests with shared round trips:
// each of its loops takes every request that is waiting and sends their HMGETs as one
// pipeline. Under load this turns many small Redis round trips (each a pair of system
// calls on both sides) into a few large ones; with one request at a time it costs one
// round trip, as a direct call would.
//
// The pipeline is a MULTI/EXEC that also reads the generation pointer, so that every
// answer in it comes from the generation that was current (see generations).
type totalsReader struct {
	rdb     *redis.Client
	gens    *generations
	timeout time.Duration
	queue   chan *readReq
	errors  prometheus.Counter // failed round trips
}

// entity is what a totals request is about.
type entity uint8

const (
	userEntity entity = iota
	productEntity
)

type readReq struct {
	kind entity
	id   string
	done chan readResult
}

// key is the request's hash in generation gen.
func (r *readReq) key(gen events.GenKeys) string {
	if r.kind == productEntity {
		return gen.Product(r.id)
	}
	return gen.User(r.id)
}

type readResult struct {
	t   Totals
	err error
}

// maxReadBatch bounds one pipeline.
const maxReadBatch = 256

func newTotalsReader(ctx context.Context, rdb *redis.Client, gens *generations, timeout time.Duration, loops int, failures prometheus.Counter) *totalsReader {
	r := &totalsReader{rdb: rdb, gens: gens, timeout: timeout, queue: make(chan *readReq, 1024), errors: failures}
	for i := 0; i < loops; i++ {
		go r.loop(ctx)
	}
	return r
}

var errReaderStopped = errors.New("reader stopped")

// Totals returns the counters of one user or product in the current generation (zeros
// for one never seen).
func (r *totalsReader) Totals(ctx context.Context, kind entity, id string) (Totals, error) {
	req := &readReq{kind: kind, id: id, done: make(chan readResult, 1)}
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
		var err error
		cmds, err = r.read(batch, cmds)
		for i, req := range batch {
			// A failed round trip fails every request; a failed command only its own.
			reqErr := err
			if reqErr == nil {
				reqErr = cmds[i].Err()
			}
			if reqErr != nil {
				req.done <- readResult{err: reqErr}
				continue
			}
			req.done <- readResult{t: parseTotals(cmds[i].Val())}
		}
	}
}

// read sends the batch's HMGETs, with the generation pointer, in one MULTI/EXEC, and
// does it again if the pointer had moved since the last read.
func (r *totalsReader) read(batch []*readReq, cmds []*redis.SliceCmd) ([]*redis.SliceCmd, error) {
	gen := r.gens.load()
	for redo := 0; ; redo++ {
		cctx, cancel := context.WithTimeout(context.Background(), r.timeout)
		pipe := r.rdb.TxPipeline()
		ptr := pipe.Get(cctx, r.gens.keys.Generation())
		cmds = cmds[:0]
		for _, req := range batch {
			cmds = append(cmds, pipe.HMGet(cctx, req.key(gen), events.FieldClicks, events.FieldPageViews, events.FieldDwellMs, events.FieldDwellCount))
		}
		_, err := pipe.Exec(cctx)
		cancel()
		if err != nil && !errors.Is(err, redis.Nil) { // Nil: the pointer is unset
			r.errors.Inc()
			return cmds, err
		}
		var moved bool
		if gen, moved, err = r.gens.check(gen, ptr.Val()); err != nil || !moved {
			return cmds, err
		}
		if redo == maxRedo {
			return cmds, errPointerMoving
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
