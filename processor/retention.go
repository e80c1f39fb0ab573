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
	"github.com/clickstream/pipeline/internal/aggregate"
	"github.com/clickstream/pipeline/internal/generations"
	"github.com/redis/go-redis/v9"
)

//go:embed fold.lua
var foldSource string

// foldScript folds a batch of old entries into the checkpoint and trims them; see
// fold.lua for why both happen in one step and when it refuses.
var foldScript = aggregate.NewScript(foldSource)

// Retention keeps the stream bounded (STREAM_RETENTION) without losing the ability
// to rebuild: every processor runs one, and the one that holds the retention lock
// folds the entries older than the retention into the checkpoint, then trims them.
// An entry that some consumer group has not acked is never trimmed, and neither is
// anything after it.
type Retention struct {
	rdb    redis.UniversalClient
	keys   events.Keys
	cfg    Config
	holder string
	logger *slog.Logger
}

// Run folds and trims every min(retention/10, 1 min) until ctx is cancelled, which
// also cancels a pass in flight.
func (r *Retention) Run(ctx context.Context) {
	every := min(max(r.cfg.Retention/10, 100*time.Millisecond), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	l := generations.NewLock(r.rdb, r.keys.RetentionLock(), r.holder, max(2*every, 10*time.Second))
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		folded, trimmed, err := r.pass(ctx, l, time.Now())
		if err != nil && !errors.Is(err, context.Canceled) {
			r.logger.Warn("retention pass failed", "err", err)
		}
		if folded > 0 {
			r.logger.Info("folded old entries into the checkpoint and trimmed them from the stream",
				"entries", folded, "trimmed", trimmed, "retention", r.cfg.Retention)
		}
	}
}

// pass takes the lock and folds and trims, in batches, every entry older than the
// retention that every group has acked. It returns at once if another processor
// holds the lock.
func (r *Retention) pass(ctx context.Context, l *generations.Lock, now time.Time) (folded, trimmed int64, err error) {
	lctx, cancel := context.WithTimeout(ctx, r.cfg.RedisTimeout)
	_, err = l.Acquire(lctx)
	cancel()
	if errors.Is(err, generations.ErrHeld) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), r.cfg.RedisTimeout)
		l.Release(rctx)
		cancel()
	}()
	cutoff := strconv.FormatInt(now.Add(-r.cfg.Retention).UnixMilli(), 10) + "-0"
	for ctx.Err() == nil {
		n, t, more, err := r.foldBatch(ctx, cutoff)
		folded += n
		trimmed += t
		if err != nil || !more {
			return folded, trimmed, err
		}
		if ok, err := l.Refresh(ctx); err != nil || !ok {
			return folded, trimmed, errors.Join(generations.ErrLost, err)
		}
	}
	return folded, trimmed, ctx.Err()
}

// foldBatch folds and trims one batch of entries before cutoff. more reports whether
// a full batch was folded, so there may be more to do.
func (r *Retention) foldBatch(ctx context.Context, cutoff string) (folded, trimmed int64, more bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RedisTimeout)
	defer cancel()
	bound, err := ackedBound(ctx, r.rdb, r.keys.Stream())
	if err != nil || bound == "" {
		return 0, 0, false, err
	}
	if events.CompareIDs(bound, cutoff) < 0 {
		cutoff = bound
	}
	pos, err := r.rdb.HGet(ctx, r.keys.CheckpointInfo(), events.CheckpointFieldPosition).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, 0, false, err
	}
	start := "-"
	if pos != "" {
		start = "(" + pos
	}
	msgs, err := r.rdb.XRangeN(ctx, r.keys.Stream(), start, "("+cutoff, int64(r.cfg.Batch)).Result()
	if err != nil || len(msgs) == 0 {
		return 0, 0, false, err
	}
	inc := aggregate.NewIncrements(r.keys.Checkpoint(), r.cfg.StatsRetention)
	inc.Reset(time.Now().UnixMilli())
	for _, e := range aggregate.Decode(msgs) {
		if e.Bad == nil {
			inc.Add(&e.Event, e.Event.Time(e.ID))
		}
	}
	last := msgs[len(msgs)-1].ID
	keys := append([]string{r.keys.Stream(), r.keys.CheckpointInfo()}, inc.Keys()...)
	argv := []any{events.CheckpointFieldPosition, events.CheckpointFieldEntries, pos, last, events.NextID(last), len(msgs)}
	argv = inc.AppendArgs(argv, 3)
	n, err := foldScript.Run(ctx, r.rdb, keys, argv...).Int64()
	if err != nil {
		return 0, 0, false, fmt.Errorf("fold %s..%s: %w", msgs[0].ID, last, err)
	}
	if n < 0 { // a group or another folder moved in between: the next pass retries
		return 0, 0, false, nil
	}
	return int64(len(msgs)), n, len(msgs) == r.cfg.Batch, nil
}

// ackedBound returns the smallest id that some consumer group has not acked: every
// entry before it has been delivered to and acked by every group. It returns "" when
// the stream has no group (nothing may be trimmed then).
func ackedBound(ctx context.Context, rdb redis.UniversalClient, stream string) (string, error) {
	groups, err := rdb.XInfoGroups(ctx, stream).Result()
	if err != nil {
		if generations.IsNoStream(err) {
			return "", nil
		}
		return "", err
	}
	pipe := rdb.Pipeline()
	pending := make([]*redis.XPendingCmd, len(groups))
	for i, g := range groups {
		pending[i] = pipe.XPending(ctx, stream, g.Name)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return "", err
	}
	bound := ""
	lower := func(id string) {
		if bound == "" || events.CompareIDs(id, bound) < 0 {
			bound = id
		}
	}
	for i, g := range groups {
		lower(events.NextID(g.LastDeliveredID))
		if p := pending[i].Val(); p.Count > 0 {
			lower(p.Lower)
		}
	}
	return bound, nil
}
