package main

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/aggregate"
	"github.com/clickstream/pipeline/internal/generations"
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
// answer in it comes from the generation that was current (see generations.Follower).
type totalsReader struct {
	rdb     redis.UniversalClient
	gens    *generations.Follower
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
	t   aggregate.Totals
	err error
}

// maxReadBatch bounds one pipeline.
const maxReadBatch = 256

func newTotalsReader(rdb redis.UniversalClient, gens *generations.Follower, timeout time.Duration, failures prometheus.Counter) *totalsReader {
	return &totalsReader{rdb: rdb, gens: gens, timeout: timeout, queue: make(chan *readReq, 1024), errors: failures}
}

// Run runs loops loops until ctx is cancelled, and returns once each has finished its
// round trip in flight and failed the requests still queued.
func (r *totalsReader) Run(ctx context.Context, loops int) {
	var wg sync.WaitGroup
	for range loops {
		wg.Go(func() { r.loop(ctx) })
	}
	wg.Wait()
}

var errReaderStopped = errors.New("reader stopped")

// Totals returns the counters of one user or product in the current generation (zeros
// for one never seen).
func (r *totalsReader) Totals(ctx context.Context, kind entity, id string) (aggregate.Totals, error) {
	req := &readReq{kind: kind, id: id, done: make(chan readResult, 1)}
	select {
	case r.queue <- req:
	case <-ctx.Done():
		return aggregate.Totals{}, ctx.Err()
	}
	select {
	case res := <-req.done:
		return res.t, res.err
	case <-ctx.Done():
		return aggregate.Totals{}, ctx.Err()
	}
}

func (r *totalsReader) loop(ctx context.Context) {
	batch := make([]*readReq, 0, maxReadBatch)
	cmds := make([]*redis.SliceCmd, 0, maxReadBatch)
	scores := make([]*redis.FloatCmd, 0, maxReadBatch)
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
		cmds, scores, err = r.read(batch, cmds, scores)
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
			t := aggregate.ParseTotals(cmds[i].Val())
			if req.kind == productEntity {
				// A product's clicks live in the ranking only (see events.GenKeys.Product).
				score, serr := scores[i].Result()
				if serr != nil && !errors.Is(serr, redis.Nil) {
					req.done <- readResult{err: serr}
					continue
				}
				t.Clicks = int64(score)
			}
			req.done <- readResult{t: t}
		}
	}
}

// read sends the batch's HMGETs (and, for products, the ZSCOREs of their clicks), with
// the generation pointer, in one MULTI/EXEC, and does it again if the pointer had moved
// since the last read. scores[i] is nil for a user's request.
func (r *totalsReader) read(batch []*readReq, cmds []*redis.SliceCmd, scores []*redis.FloatCmd) ([]*redis.SliceCmd, []*redis.FloatCmd, error) {
	gen := r.gens.Load()
	for redo := 0; ; redo++ {
		cctx, cancel := context.WithTimeout(context.Background(), r.timeout)
		pipe := r.rdb.TxPipeline()
		ptr := r.gens.QueuePointer(cctx, pipe)
		cmds, scores = cmds[:0], scores[:0]
		for _, req := range batch {
			cmds = append(cmds, pipe.HMGet(cctx, req.key(gen), aggregate.Fields...))
			var score *redis.FloatCmd
			if req.kind == productEntity {
				score = pipe.ZScore(cctx, gen.TopProducts(), req.id)
			}
			scores = append(scores, score)
		}
		_, err := pipe.Exec(cctx)
		cancel()
		if err != nil && !errors.Is(err, redis.Nil) { // Nil: the pointer is unset
			r.errors.Inc()
			return cmds, scores, err
		}
		var moved bool
		if gen, moved, err = r.gens.Check(gen, ptr.Val()); err != nil || !moved {
			return cmds, scores, err
		}
		if redo == generations.MaxRedo {
			return cmds, scores, generations.ErrPointerMoving
		}
	}
}
