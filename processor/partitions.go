package main

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/generations"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// partitionWork is a processor's work on one partition of the stream: a member of the
// partition's consumer group (reading, claiming, reaping) and, with STREAM_RETENTION,
// the partition's retention. Every processor serves every partition: Redis shares a
// partition's entries among the members of its group, and a member that dies leaves
// entries that the others claim, partition by partition.
type partitionWork struct {
	c   *Consumer
	ret *Retention
}

// joinPartitions waits until the current generation of every partition has its
// consumer group (a processor started before Redis just waits) and returns the work of
// every partition, nil when ctx ended or done was closed first.
func joinPartitions(ctx context.Context, done <-chan struct{}, rdb redis.UniversalClient, layout events.Layout, cfg Config,
	reg prometheus.Registerer, redisErrors *prometheus.CounterVec, logger *slog.Logger) ([]*partitionWork, error) {
	m := newConsumerMetrics(reg, redisErrors)
	var work []*partitionWork
	for _, keys := range layout.Partitions() {
		var gen events.GenKeys
		for {
			gctx, cancel := context.WithTimeout(ctx, cfg.RedisTimeout)
			var err error
			gen, err = generations.EnsureGroup(gctx, rdb, keys)
			cancel()
			if err == nil {
				break
			}
			logger.Warn("cannot create consumer group yet; retrying", "stream", keys.Stream(), "err", err)
			select {
			case <-ctx.Done():
				return nil, nil
			case <-done:
				return nil, nil
			case <-time.After(time.Second):
			}
		}
		dead, err := NewDeadLetters(rdb, keys.Stream(), keys.DeadLetter(), logger)
		if err != nil {
			return nil, err
		}
		c := NewConsumer(rdb, keys, gen, cfg.Consumer, cfg, dead, m, logger)
		if layout.Count() == 1 {
			c.exposeCounts(reg, nil)
		} else {
			c.exposeCounts(reg, prometheus.Labels{"partition": strconv.Itoa(keys.Partition())})
		}
		w := &partitionWork{c: c}
		if cfg.Retention > 0 {
			w.ret = &Retention{rdb: rdb, keys: keys, cfg: cfg, holder: cfg.Consumer, logger: logger.With("stream", keys.Stream())}
		}
		work = append(work, w)
		logger.Info("consuming", "stream", keys.Stream(), "generation", gen.Number, "group", gen.Group())
	}
	return work, nil
}

// runPartitions runs every partition's reads and applies, claims, reaps and retention
// until ctx is cancelled, then waits until each has finished its batch in flight, and
// returns the consumers' errors.
func runPartitions(ctx context.Context, work []*partitionWork) error {
	stop := ctx.Done()
	var wg sync.WaitGroup
	errs := make([]error, len(work))
	for i, w := range work {
		wg.Go(func() { w.c.Claim(stop) })
		wg.Go(func() { w.c.Reap(stop) })
		wg.Go(func() { errs[i] = w.c.Run(stop) })
		if w.ret != nil {
			wg.Go(func() { w.ret.Run(ctx) })
		}
	}
	wg.Wait()
	return errors.Join(errs...)
}

// counts sums the consumers' counts of entries, for the log at the end.
func counts(work []*partitionWork) (applied, skipped, deadLets, dropped int64) {
	for _, w := range work {
		applied += w.c.applied.Load()
		skipped += w.c.skipped.Load()
		deadLets += w.c.deadLets.Load()
		dropped += w.c.dropped.Load()
	}
	return applied, skipped, deadLets, dropped
}
