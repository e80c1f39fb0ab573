package main

import (
	"context"
	"sync"
)

// coalescer lets concurrent identical statistics reads share one: the first request for
// a key runs the read, requests for the same key that arrive while it runs wait for its
// answer. Nothing is kept once the read returns, so an answer is never older than the
// read that was in flight when it was asked for. A dashboard's ranges (the last hour,
// 24 hours, 7 and 30 days) are the same for everyone who has it open, and a 30-day
// summary costs Redis a union of dozens of HyperLogLogs: with many viewers, one read
// instead of one each is most of Redis's work saved.
type coalescer struct {
	mu    sync.Mutex
	calls map[string]*sharedRead
}

type sharedRead struct {
	done    chan struct{}
	val     any
	err     error
	waiters int // requests that joined it, under the coalescer's lock
}

func newCoalescer() *coalescer { return &coalescer{calls: map[string]*sharedRead{}} }

// coalesce returns read's answer for key, running read only when no read of key is in
// flight. The read runs without the first caller's cancellation (its client going away
// must not fail the others; read bounds itself with REDIS_TIMEOUT), and each caller
// stops waiting when its own ctx ends.
func coalesce[T any](c *coalescer, ctx context.Context, key string, read func(context.Context) (T, error)) (T, error) {
	c.mu.Lock()
	r, running := c.calls[key]
	if !running {
		r = &sharedRead{done: make(chan struct{})}
		c.calls[key] = r
	} else {
		r.waiters++
	}
	c.mu.Unlock()
	if !running {
		r.val, r.err = read(context.WithoutCancel(ctx))
		c.mu.Lock()
		delete(c.calls, key)
		c.mu.Unlock()
		close(r.done)
	}
	select {
	case <-r.done:
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
	if r.err != nil {
		var zero T
		return zero, r.err
	}
	return r.val.(T), nil
}
