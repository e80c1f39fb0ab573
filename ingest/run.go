package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"sync"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/cluster"
	"github.com/clickstream/pipeline/internal/config"
	"github.com/clickstream/pipeline/internal/metrics"
	"github.com/clickstream/pipeline/internal/partitions"
	"github.com/clickstream/pipeline/internal/server"
)

// Config is ingest's configuration, read from the environment.
type Config struct {
	Addr         string        // INGEST_ADDR
	Namespace    string        // REDIS_NAMESPACE
	Partitions   int           // STREAM_PARTITIONS
	Replicas     int           // WRITE_REPLICAS: replicas that confirm a write (WAIT) before its 202
	RedisTimeout time.Duration // REDIS_TIMEOUT: bound on one write to Redis
	DedupWindow  time.Duration // DEDUP_WINDOW: how long an event_id is remembered
	MaxBodyBytes int64         // MAX_BODY_BYTES
	MaxEvents    int           // MAX_EVENTS_PER_REQUEST
	Flushers     int           // WRITE_FLUSHERS: concurrent writes to Redis
	FlushEvents  int           // FLUSH_MAX_EVENTS: events gathered into one write

	MaxInflightBytes int64 // MAX_INFLIGHT_BYTES: bytes of request bodies held at once
	MaxConnections   int   // MAX_CONNECTIONS: connections open at once

	Keys                 []string            // INGEST_KEYS: write keys; none leaves the API open
	MaxLag               int64               // MAX_LAG: refuse events while a group lags more; 0: never
	MaxRedisMemory       float64             // MAX_REDIS_MEMORY: refuse events above this fraction of maxmemory
	BackpressureInterval time.Duration       // BACKPRESSURE_INTERVAL: how often both are checked
	AllowEviction        bool                // ALLOW_EVICTION: run on a Redis that may evict keys
	HTTP                 config.HTTPTimeouts // HTTP_*_TIMEOUT
	Segment              SegmentConfig       // SEGMENT_*: the Segment API (segment.go)
	Browser              BrowserConfig       // CORS_ORIGINS, DEMO*: the collector in the browser (tracker.go)
}

func readConfig(r *config.Reader) Config {
	return Config{
		Addr:         r.Addr("INGEST_ADDR", ":8080"),
		Namespace:    r.Namespace(),
		Partitions:   r.Partitions(),
		Replicas:     r.Int("WRITE_REPLICAS", 0, 0, 100),
		RedisTimeout: r.Duration("REDIS_TIMEOUT", time.Second, 10*time.Millisecond),
		DedupWindow:  r.Duration("DEDUP_WINDOW", 24*time.Hour, time.Second),
		MaxBodyBytes: int64(r.Int("MAX_BODY_BYTES", 1<<20, 64, 64<<20)),
		MaxEvents:    r.Int("MAX_EVENTS_PER_REQUEST", 1000, 1, 100_000),
		Flushers:     r.Int("WRITE_FLUSHERS", 4, 1, 256),
		FlushEvents:  r.Int("FLUSH_MAX_EVENTS", 4096, 1, 100_000),

		MaxInflightBytes: int64(r.Int("MAX_INFLIGHT_BYTES", 64<<20, 64, 1<<40)),
		MaxConnections:   r.Int("MAX_CONNECTIONS", 10_000, 1, 10_000_000),

		Keys:                 r.Keys("INGEST_KEYS"),
		MaxLag:               int64(r.Int("MAX_LAG", 10_000_000, 0, math.MaxInt)),
		MaxRedisMemory:       r.Fraction("MAX_REDIS_MEMORY", 0.9),
		BackpressureInterval: r.Duration("BACKPRESSURE_INTERVAL", time.Second, 10*time.Millisecond),
		AllowEviction:        r.Bool("ALLOW_EVICTION", false),
		HTTP:                 r.HTTPTimeouts(),
		Segment:              readSegmentConfig(r),
		Browser:              readBrowserConfig(r),
	}
}

// run starts ingest and blocks until ctx is cancelled. ln, if the args name no
// listener, comes from INGEST_ADDR.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return runWith(ctx, getenv, stderr, nil)
}

// runWith is run with an optional ready-made listener, for tests.
func runWith(ctx context.Context, getenv func(string) string, stderr io.Writer, ln net.Listener) error {
	r := config.NewReader(getenv)
	logger := r.Logger(stderr)
	cfg := readConfig(r)
	ropt := r.Redis()
	debugAddr := r.String("DEBUG_ADDR", "")
	if err := r.Err(); err != nil {
		return err
	}
	if cfg.MaxInflightBytes < cfg.MaxBodyBytes {
		return fmt.Errorf("invalid configuration: MAX_INFLIGHT_BYTES=%d: must be at least MAX_BODY_BYTES (%d), or a body of that size could never be received",
			cfg.MaxInflightBytes, cfg.MaxBodyBytes)
	}
	if err := cfg.Segment.check(cfg.MaxInflightBytes); err != nil {
		return err
	}
	// A write that timed out may still have happened; go-redis must not resend it on its
	// own, or an event without event_id would be stored twice. The client retries instead.
	ropt.MaxRetries = -1
	config.BoundRedis(ropt, cfg.RedisTimeout)
	ropt.PoolSize = cfg.Flushers + 4
	logger.Info("ingest starting", "addr", cfg.Addr, "redis", config.MaskURL(r.String("REDIS_URL", config.DefaultRedisURL)),
		"namespace", cfg.Namespace, "partitions", cfg.Partitions, "write_replicas", cfg.Replicas, "redis_timeout", cfg.RedisTimeout, "dedup_window", cfg.DedupWindow,
		"max_body_bytes", cfg.MaxBodyBytes, "max_events", cfg.MaxEvents, "flushers", cfg.Flushers,
		"max_inflight_bytes", cfg.MaxInflightBytes, "max_connections", cfg.MaxConnections,
		"keys", len(cfg.Keys), "max_lag", cfg.MaxLag, "max_redis_memory", cfg.MaxRedisMemory,
		"backpressure_interval", cfg.BackpressureInterval, "allow_eviction", cfg.AllowEviction)
	if len(cfg.Keys) == 0 {
		logger.Warn("INGEST_KEYS is not set: the ingest API is open to anyone")
	}

	rdb := cluster.NewClient(ropt)
	defer rdb.Close()
	// Every goroutine started here is waited for before the client is closed.
	var wg sync.WaitGroup
	defer wg.Wait()
	debugCtx, stopDebug := context.WithCancel(context.Background())
	defer stopDebug()
	wg.Go(func() { server.ServeDebug(debugCtx, debugAddr, logger) })
	eviction := server.NewEviction(rdb, cfg.AllowEviction, logger)
	if err := eviction.AtStart(ctx); err != nil {
		return err
	}
	layout := events.NewLayout(cfg.Namespace, cfg.Partitions)
	if err := partitions.CheckAtStart(ctx, rdb, layout, cfg.RedisTimeout, logger); err != nil {
		return err
	}
	reg := metrics.NewRegistry()
	m := newIngestMetrics(reg)

	if ln == nil {
		var err error
		if ln, err = server.Listen("INGEST_ADDR", cfg.Addr); err != nil {
			return err
		}
	}
	limited := server.NewLimitListener(ln, cfg.MaxConnections)
	inflight := &bodyLimit{max: cfg.MaxInflightBytes}
	m.watchLimits(limited, inflight)
	// The writer outlives the HTTP server: requests in flight at shutdown still get
	// their events written and their answer.
	wctx, stopWriter := context.WithCancel(context.Background())
	defer stopWriter()
	w := NewWriter(rdb, layout, cfg.Replicas, cfg.DedupWindow, cfg.RedisTimeout, cfg.Flushers, cfg.FlushEvents, m, logger)
	if err := w.Ping(ctx); err != nil {
		logger.Warn("redis not reachable at start; will answer 503 until it is", "err", err)
	}
	bp := newBackpressure(rdb, layout, eviction, cfg.MaxLag, cfg.MaxRedisMemory, cfg.RedisTimeout, m.checkErrors, logger)
	bp.refresh(ctx) // so that an ingest started behind does not accept a first burst
	wg.Go(func() { w.Run(wctx) })
	wg.Go(func() { bp.run(wctx, cfg.BackpressureInterval) })
	h := &handler{w: w, bp: bp, inflight: inflight, m: m, logger: logger, cfg: cfg, now: time.Now}
	e := server.New(logger, ready(eviction, bp))
	metrics.Instrument(e, reg, logger)
	routes(e, h, server.RequireKey("ingest", cfg.Keys))
	err := server.Serve(ctx, e, limited, logger, 10*time.Second, cfg.HTTP)
	stopWriter()
	stopDebug()
	wg.Wait()
	logger.Info("ingest stopped")
	return err
}

// ready reports ingest not ready while Redis does not answer, its maxmemory-policy may
// evict keys (unless ALLOW_EVICTION, which makes it a warning), or backpressure refuses
// events, with the reason.
func ready(eviction *server.Eviction, bp *backpressure) func(context.Context) error {
	return func(ctx context.Context) error {
		err := eviction.Ready(ctx)
		var warning server.Warning
		if err != nil && !errors.As(err, &warning) {
			return err
		}
		if reason := bp.Reason(); reason != "" {
			return errors.New(reason)
		}
		return err
	}
}
