package main

import (
	"context"
	"errors"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/redis/go-redis/v9"
)

// progress prints a progress line and records it in the state hash every second, and
// stops the work when `rebuild --cancel` asks it to (before the switch only).
func (b *rebuilder) progress(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last, lastAt := b.replayed.Load(), time.Now()
	rate := 0.0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		n := b.replayed.Load()
		r := float64(n-last) / now.Sub(lastAt).Seconds()
		if rate == 0 {
			rate = r
		} else {
			rate = 0.5*rate + 0.5*r
		}
		last, lastAt = n, now
		length, remaining, cancelReq, err := b.measure(ctx)
		if err != nil {
			b.logger.Warn("progress: reading the stream failed", "err", err)
			continue
		}
		if cancelReq && !b.switched.Load() {
			b.printf("rebuild: cancel requested; stopping")
			b.cancelWork(errCancelRequested)
			return
		}
		state := events.RebuildStateBuilding
		if b.pausing.Load() {
			state = events.RebuildStateSwitching
		}
		if b.switched.Load() {
			state = events.RebuildStateCleanup
		}
		eta := "?"
		etaSeconds := int64(-1)
		if rate > 0 && remaining >= 0 {
			etaSeconds = int64(float64(remaining)/rate + 0.5)
			eta = (time.Duration(etaSeconds) * time.Second).String()
		}
		applied := b.appliedBefore + n
		b.printf("rebuild: generation %d %s: %d applied, stream %d, %.0f entries/s, eta %s",
			b.target.Number, state, applied, length, rate, eta)
		if b.switched.Load() {
			continue
		}
		b.setState(ctx, events.RebuildFieldApplied, applied, events.RebuildFieldLength, length,
			events.RebuildFieldRate, int64(rate), events.RebuildFieldETA, etaSeconds)
	}
}

// measure returns the stream's length, how many entries the new group has yet to be
// delivered (-1 if unknown), and whether a cancel was requested.
func (b *rebuilder) measure(ctx context.Context) (length, remaining int64, cancelReq bool, err error) {
	ctx, cancel := b.rctx(ctx)
	defer cancel()
	pipe := b.rdb.Pipeline()
	xlen := pipe.XLen(ctx, b.keys.Stream())
	groups := pipe.XInfoGroups(ctx, b.keys.Stream())
	req := pipe.HGet(ctx, b.keys.RebuildState(), events.RebuildFieldCancel)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return 0, 0, false, err
	}
	remaining = -1
	for _, g := range groups.Val() {
		if g.Name == b.target.Group() && g.Lag >= 0 {
			remaining = g.Lag
		}
	}
	return xlen.Val(), remaining, req.Val() == "1", nil
}
