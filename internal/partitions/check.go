// Package partitions is what the services share about a partitioned stream
// (STREAM_PARTITIONS, events.Layout): the check that a namespace is used with the
// partition count its events were written with, and reads that span every partition.
package partitions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/redis/go-redis/v9"
)

// ErrMismatch is what Check returns when the namespace holds events written with
// another partition count.
var ErrMismatch = errors.New("STREAM_PARTITIONS differs from the partition count the namespace's events were written with")

// Check makes sure l is the layout of the events stored in its namespace. The
// partition count is fixed once events are stored (a user's events must stay in one
// partition), so a process with another count must not start:
//
//   - the count key records the count of a namespace that has been used with more than
//     one partition; a process with another count is refused;
//   - a namespace without it was used with one partition, or not at all: a process with
//     one partition writes nothing here (the layout of a pipeline that was never
//     partitioned stays as it was); one with more is refused if the single stream
//     holds events, and otherwise records its count, so that every later process is
//     checked against it.
//
// The error wraps ErrMismatch and says what to do; any other error is Redis's.
func Check(ctx context.Context, rdb redis.UniversalClient, l events.Layout) error {
	stored, err := readCount(ctx, rdb, l)
	if err != nil {
		return err
	}
	if stored == 0 && l.Count() > 1 {
		single := events.NewKeys(l.Namespace()).Stream()
		n, err := rdb.Exists(ctx, single).Result()
		if err != nil {
			return fmt.Errorf("check the partition count: %w", err)
		}
		if n > 0 {
			return mismatch(l, 1, single)
		}
		if _, err := rdb.SetNX(ctx, l.CountKey(), l.Count(), 0).Result(); err != nil {
			return fmt.Errorf("record the partition count: %w", err)
		}
		if stored, err = readCount(ctx, rdb, l); err != nil { // another process may have got there first
			return err
		}
	}
	if stored == 0 {
		stored = 1
	}
	if stored != l.Count() {
		return mismatch(l, stored, l.CountKey())
	}
	return nil
}

// readCount returns the recorded count, 0 when none is.
func readCount(ctx context.Context, rdb redis.UniversalClient, l events.Layout) (int, error) {
	v, err := rdb.Get(ctx, l.CountKey()).Result()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read the partition count: %w", err)
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%s holds %q, want a partition count", l.CountKey(), v)
	}
	return n, nil
}

func mismatch(l events.Layout, stored int, evidence string) error {
	return fmt.Errorf("%w: REDIS_NAMESPACE %q holds events written with STREAM_PARTITIONS=%d (%s), and this process has STREAM_PARTITIONS=%d. "+
		"Start it with STREAM_PARTITIONS=%d: the partition count cannot change once events are stored, because a user's events, "+
		"totals and dedup markers must stay in one partition. To move to another count, see \"Scaling out\" in the README",
		ErrMismatch, l.Namespace(), stored, evidence, l.Count(), stored)
}

// CheckAtStart is Check for a service that is starting. With one partition, a Redis
// that does not answer is not an error: the service starts as it always has (it
// answers 503, or waits, until Redis is back), with a warning that the check was not
// done. With more, the service cannot know which keys to use until the count is
// checked, so it retries every second until Redis answers, or ctx ends: then it
// returns nil, and the service, stopped before it started, goes on to stop.
func CheckAtStart(ctx context.Context, rdb redis.UniversalClient, l events.Layout, timeout time.Duration, logger *slog.Logger) error {
	for {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		err := Check(cctx, rdb, l)
		cancel()
		if err == nil || errors.Is(err, ErrMismatch) {
			return err
		}
		if l.Count() == 1 {
			logger.Warn("cannot check the partition count at start: Redis does not answer", "err", err)
			return nil
		}
		logger.Warn("waiting for Redis to check the partition count", "partitions", l.Count(), "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}
