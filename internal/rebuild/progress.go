package rebuild

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/generations"
	"github.com/clickstream/pipeline/internal/lag"
	"github.com/redis/go-redis/v9"
)

// progress prints a progress line and records it in the state hash at once and then
// every second, and stops the work when `rebuild --cancel` asks it to (before the switch
// only).
func (b *Rebuilder) progress(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last, lastAt := b.replayed.Load(), time.Now()
	rate := -1.0 // unknown until a second has passed
	for {
		length, remaining, cancelReq, err := b.measure(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			b.logger.Warn("progress: reading the stream failed", "group", b.target.Group(), "err", err)
		case cancelReq && !b.switched.Load():
			b.printf("rebuild: cancel requested; stopping")
			b.cancelWork(errCancelRequested)
			return
		default:
			b.report(ctx, length, remaining, rate)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now, n := time.Now(), b.replayed.Load()
		r := float64(n-last) / now.Sub(lastAt).Seconds()
		if rate < 0 {
			rate = r
		} else {
			rate = 0.5*rate + 0.5*r // smoothed over the last few seconds
		}
		last, lastAt = n, now
	}
}

// report prints one progress line and records it in the state hash.
func (b *Rebuilder) report(ctx context.Context, length, remaining int64, rate float64) {
	state := events.RebuildStateBuilding
	if b.pausing.Load() {
		state = events.RebuildStateSwitching
	}
	if b.switched.Load() {
		state = events.RebuildStateCleanup
	}
	eta, etaSeconds := "?", int64(-1)
	if rate > 0 && remaining >= 0 {
		etaSeconds = int64(float64(remaining)/rate + 0.5)
		eta = (time.Duration(etaSeconds) * time.Second).String()
	}
	rateText := "?"
	if rate >= 0 {
		rateText = strconv.FormatFloat(rate, 'f', 0, 64)
	}
	applied := b.appliedBefore.Load() + b.replayed.Load()
	b.length.Store(length)
	current := b.from.Number
	if b.switched.Load() {
		current = b.target.Number
	}
	if !b.quiet {
		b.printf("rebuild: %s generation %d: %d applied, stream %d, %s entries/s, eta %s; current generation %d",
			state, b.target.Number, applied, length, rateText, eta, current)
	}
	if b.switched.Load() {
		return
	}
	b.setState(ctx, events.RebuildFieldApplied, applied, events.RebuildFieldLength, length,
		events.RebuildFieldRate, int64(max(rate, 0)), events.RebuildFieldETA, etaSeconds)
}

// measure returns the stream's length, how many entries the new group has yet to be
// delivered (-1 if unknown), and whether a cancel was requested.
func (b *Rebuilder) measure(ctx context.Context) (length, remaining int64, cancelReq bool, err error) {
	ctx, cancel := b.rctx(ctx)
	defer cancel()
	pipe := b.rdb.Pipeline()
	info := lag.Queue(ctx, pipe, b.keys.Stream())
	req := pipe.HGet(ctx, b.keys.RebuildState(), events.RebuildFieldCancel)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) && !generations.IsNoStream(err) {
		return 0, 0, false, err
	}
	s, groups, err := info.Result()
	if err != nil {
		return 0, 0, false, err
	}
	remaining = -1
	for _, g := range groups {
		if g.Name == b.target.Group() {
			remaining = lag.Of(s, g)
		}
	}
	return s.Length, remaining, req.Val() == "1", nil
}
