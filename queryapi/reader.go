package main

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/aggregate"
	"github.com/clickstream/pipeline/internal/partitions"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// totalsReader reads counter hashes for concurrent requests with shared round trips:
// each of its loops takes every request that is waiting and sends their HMGETs as one
// pipeline. Under load this turns many small Redis round trips (each a pair of system
// calls on both sides) into a few large ones; with one request at a time it costs one
// round trip, as a direct call would.
//
// The pipeline also reads the generation pointer of every partition it reads, so that
// every answer in it comes from the generation that was current (see
// partitions.Reader). A user's totals are in the user's partition; a product's are
// partial sums in every partition, added up here.
type totalsReader struct {
	parts   *partitions.Reader
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

type readResult struct {
	t   aggregate.Totals
	err error
}

// maxReadBatch bounds one pipeline.
const maxReadBatch = 256

func newTotalsReader(parts *partitions.Reader, timeout time.Duration, failures prometheus.Counter) *totalsReader {
	return &totalsReader{parts: parts, timeout: timeout, queue: make(chan *readReq, 1024), errors: failures}
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
		cmds, err := r.read(batch)
		for i, req := range batch {
			// A failed round trip fails every request; a failed command only its own.
			var t aggregate.Totals
			reqErr := err
			for p := 0; reqErr == nil && p < len(cmds[i].hm); p++ {
				if cmds[i].hm[p] == nil {
					continue
				}
				if reqErr = cmds[i].hm[p].Err(); reqErr != nil {
					break
				}
				pt := aggregate.ParseTotals(cmds[i].hm[p].Val())
				if req.kind == productEntity {
					// A product's clicks live in the ranking only (see events.GenKeys.Product).
					score, serr := cmds[i].score[p].Result()
					if serr != nil && !errors.Is(serr, redis.Nil) {
						reqErr = serr
						break
					}
					pt.Clicks = int64(score)
				}
				t.Clicks += pt.Clicks
				t.PageViews += pt.PageViews
				t.DwellMs += pt.DwellMs
				t.DwellCount += pt.DwellCount
			}
			if reqErr != nil {
				req.done <- readResult{err: reqErr}
				continue
			}
			req.done <- readResult{t: t}
		}
	}
}

// reqCmds are one request's commands, per partition: the hash's HMGET, and for a
// product the ZSCORE of its clicks; nil for a partition the request does not read.
type reqCmds struct {
	hm    []*redis.SliceCmd
	score []*redis.FloatCmd
}

// read sends the batch's HMGETs (and, for products, the ZSCOREs of their clicks) with
// the generation pointers of the partitions they read, in one round trip per node, and
// does it again if a pointer had moved since the last read. A user is read in its
// partition, a product in every one.
func (r *totalsReader) read(batch []*readReq) ([]reqCmds, error) {
	l := r.parts.Layout()
	n := l.Count()
	cmds := make([]reqCmds, len(batch))
	for i, req := range batch {
		cmds[i].hm = make([]*redis.SliceCmd, n)
		if req.kind == productEntity {
			cmds[i].score = make([]*redis.FloatCmd, n)
		}
	}
	ps := needed(l, batch)
	cctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	err := r.parts.Read(cctx, ps, func(pipe redis.Pipeliner, k events.Keys, gen events.GenKeys) {
		p := k.Partition()
		for i, req := range batch {
			switch {
			case req.kind == productEntity:
				cmds[i].hm[p] = pipe.HMGet(cctx, gen.Product(req.id), aggregate.Fields...)
				cmds[i].score[p] = pipe.ZScore(cctx, gen.TopProducts(), req.id)
			case n == 1 || l.PartitionOf(req.id) == p:
				cmds[i].hm[p] = pipe.HMGet(cctx, gen.User(req.id), aggregate.Fields...)
			}
		}
	})
	if err != nil {
		r.errors.Inc()
	}
	return cmds, err
}

// needed lists the partitions the batch's requests read: every one if there is a
// product among them, otherwise its users'.
func needed(l events.Layout, batch []*readReq) []int {
	in := make([]bool, l.Count())
	for _, req := range batch {
		if req.kind == productEntity {
			for p := range in {
				in[p] = true
			}
			break
		}
		in[l.PartitionOf(req.id)] = true
	}
	var ps []int
	for p, ok := range in {
		if ok {
			ps = append(ps, p)
		}
	}
	return ps
}
