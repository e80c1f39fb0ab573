package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/cluster"
	"github.com/clickstream/pipeline/internal/config"
	"github.com/clickstream/pipeline/internal/metrics"
	"github.com/clickstream/pipeline/internal/partitions"
	"github.com/clickstream/pipeline/internal/server"
)

// Config is the processor's configuration, read from the environment.
type Config struct {
	Addr             string        // PROCESSOR_ADDR: health and metrics endpoints
	Namespace        string        // REDIS_NAMESPACE
	Partitions       int           // STREAM_PARTITIONS
	Consumer         string        // CONSUMER_NAME: unique within the group
	Batch            int           // BATCH_SIZE: entries per read and per apply
	ApplyConcurrency int           // APPLY_CONCURRENCY: batches applied at once
	Block            time.Duration // READ_BLOCK: how long one read waits for new entries
	RedisTimeout     time.Duration // REDIS_TIMEOUT: bound on one Redis call
	ClaimMinIdle     time.Duration // CLAIM_MIN_IDLE: pending this long = its consumer is gone
	ClaimInterval    time.Duration // how often to look for such entries (CLAIM_MIN_IDLE/2, ≤ 10s)
	ConsumerExpiry   time.Duration // CONSUMER_EXPIRY: idle consumers holding nothing are removed
	ReapInterval     time.Duration
	Retention        time.Duration       // STREAM_RETENTION: trim entries older than this; 0 keeps everything
	LockTTL          time.Duration       // REBUILD_LOCK_TTL: a dead rebuild's lock expires after this
	AllowEviction    bool                // ALLOW_EVICTION: run on a Redis that may evict keys
	StatsRetention   events.Retention    // STATS_RETENTION_*: how long time buckets are kept
	HTTP             config.HTTPTimeouts // HTTP_*_TIMEOUT: health and metrics endpoints
}

func readConfig(r *config.Reader) Config {
	cfg := Config{
		Addr:             r.Addr("PROCESSOR_ADDR", ":8082"),
		Namespace:        r.Namespace(),
		Partitions:       r.Partitions(),
		Consumer:         r.String("CONSUMER_NAME", defaultConsumerName()),
		Batch:            r.Int("BATCH_SIZE", 3000, 1, 100_000),
		ApplyConcurrency: r.Int("APPLY_CONCURRENCY", 2, 1, 16),
		Block:            r.Duration("READ_BLOCK", time.Second, time.Millisecond),
		RedisTimeout:     r.Duration("REDIS_TIMEOUT", 5*time.Second, 10*time.Millisecond),
		ClaimMinIdle:     r.Duration("CLAIM_MIN_IDLE", 30*time.Second, 10*time.Millisecond),
		ConsumerExpiry:   r.Duration("CONSUMER_EXPIRY", time.Hour, time.Second),
		HTTP:             r.HTTPTimeouts(),
		Retention:        r.Duration("STREAM_RETENTION", 0, 0),
		LockTTL:          r.Duration("REBUILD_LOCK_TTL", 5*time.Second, 500*time.Millisecond),
		AllowEviction:    r.Bool("ALLOW_EVICTION", false),
		StatsRetention:   r.StatsRetention(),
	}
	cfg.ClaimInterval = min(max(cfg.ClaimMinIdle/2, 10*time.Millisecond), 10*time.Second)
	cfg.ReapInterval = min(max(cfg.ConsumerExpiry/4, time.Second), time.Minute)
	return cfg
}

func defaultConsumerName() string {
	host, err := os.Hostname()
	if err != nil || !events.ValidID(host) {
		host = "processor"
	}
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

// usage is printed for an unknown command.
const usage = `usage:
  processor                     run as a member of the current generation's consumer group
  processor rebuild [--cancel]  rebuild every count from the stream as a new generation
  processor recount [--from T] [--to T] [--user ID] [--product ID] [--interval minute|hour|day]
                                count a window of the stream (T: RFC 3339 time or stream id),
                                with --interval also per time bucket`

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 1 {
		switch args[1] {
		case "rebuild":
			return runRebuild(ctx, args[2:], getenv, stdout, stderr)
		case "recount":
			return runRecount(ctx, args[2:], getenv, stdout, stderr)
		case "run":
		default:
			return fmt.Errorf("unknown command %q\n%s", args[1], usage)
		}
	}
	return runWith(ctx, getenv, stderr, nil)
}

// runWith is run with an optional ready-made listener, for tests.
//
// Every goroutine it starts is started with sync.WaitGroup.Go and waited for before it
// returns. When ctx is cancelled, or the HTTP server fails, it stops them in this
// order: the reads (a batch in flight is applied and acked) and the claim, reap and
// retention loops; the HTTP server (requests in flight are answered); the profiler;
// then it closes the Redis client.
func runWith(ctx context.Context, getenv func(string) string, stderr io.Writer, ln net.Listener) (err error) {
	r := config.NewReader(getenv)
	logger := r.Logger(stderr)
	cfg := readConfig(r)
	ropt := r.Redis()
	debugAddr := r.String("DEBUG_ADDR", "")
	if err := r.Err(); err != nil {
		return err
	}
	if !events.ValidID(cfg.Consumer) {
		return fmt.Errorf("invalid configuration: CONSUMER_NAME=%q: %s", getenv("CONSUMER_NAME"), events.IDRule)
	}
	config.BoundRedis(ropt, cfg.RedisTimeout)
	logger = logger.With("consumer", cfg.Consumer)
	rdb := cluster.NewClient(ropt)
	defer rdb.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	debugCtx, stopDebug := context.WithCancel(context.Background())
	defer stopDebug()
	wg.Go(func() { server.ServeDebug(debugCtx, debugAddr, logger) })
	layout := events.NewLayout(cfg.Namespace, cfg.Partitions)
	logger.Info("processor starting", "addr", cfg.Addr, "redis", config.MaskURL(r.String("REDIS_URL", config.DefaultRedisURL)),
		"stream", layout.Partition(0).Stream(), "partitions", layout.Count(), "batch", cfg.Batch, "apply_concurrency", cfg.ApplyConcurrency,
		"claim_min_idle", cfg.ClaimMinIdle, "consumer_expiry", cfg.ConsumerExpiry, "stream_retention", cfg.Retention,
		"allow_eviction", cfg.AllowEviction, "stats_retention", cfg.StatsRetention)
	eviction := server.NewEviction(rdb, cfg.AllowEviction, logger)
	if err := eviction.AtStart(ctx); err != nil {
		return err
	}
	if err := partitions.CheckAtStart(ctx, rdb, layout, cfg.RedisTimeout, logger); err != nil {
		return err
	}

	if ln == nil {
		var err error
		if ln, err = server.Listen("PROCESSOR_ADDR", cfg.Addr); err != nil {
			return err
		}
	}
	// The health and metrics endpoints outlive the reads, so that a scrape during the
	// shutdown still answers.
	httpCtx, stopHTTP := context.WithCancel(context.Background())
	e := server.New(logger, eviction.Ready)
	// Redis errors: reads (with the generation pointer read before each), applies (with
	// their dead-letter publishes), claims, reaps of idle consumers, and the stream
	// gauges read on a scrape.
	reg := metrics.NewRegistry()
	redisErrors := metrics.RedisErrors(reg, "read", "apply", "claim", "reap", "stats")
	reg.MustRegister(metrics.NewLayoutStats(rdb, layout, cfg.RedisTimeout, redisErrors.WithLabelValues("stats")))
	metrics.Instrument(e, reg, logger)
	var httpErr error
	httpDone := make(chan struct{})
	wg.Go(func() {
		defer close(httpDone)
		httpErr = server.Serve(httpCtx, e, ln, logger, 5*time.Second, cfg.HTTP)
	})
	defer func() {
		stopHTTP()
		<-httpDone
		err = errors.Join(err, httpErr)
	}()

	// Wait for Redis and the current generation's group of every partition; a processor
	// started before Redis just waits.
	work, err := joinPartitions(ctx, httpDone, rdb, layout, cfg, reg, redisErrors, logger)
	if err != nil {
		return err
	}
	if work == nil {
		if ctx.Err() == nil {
			logger.Error("http server failed; stopping", "err", httpErr)
		}
		return nil
	}

	// The loops' context is not ctx: a signal stops them in order, below.
	loops, stopLoops := context.WithCancel(context.Background())
	defer stopLoops()
	var lwg sync.WaitGroup
	var runErr error
	lwg.Go(func() { runErr = runPartitions(loops, work) })
	select {
	case <-ctx.Done():
		logger.Info("stopping: no new reads; finishing the batch in flight")
	case <-httpDone:
		logger.Error("http server failed; stopping: no new reads; finishing the batch in flight", "err", httpErr)
	}
	stopLoops()
	lwg.Wait()
	applied, skipped, deadLets, dropped := counts(work)
	logger.Info("processor stopped", "applied", applied, "skipped_redelivered", skipped,
		"dead_lettered", deadLets, "dropped_after_switch", dropped)
	return runErr
}
