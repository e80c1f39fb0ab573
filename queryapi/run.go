package main

import (
	"context"
	"io"
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

// Config is queryapi's configuration, read from the environment.
type Config struct {
	Addr          string              // QUERY_ADDR
	Namespace     string              // REDIS_NAMESPACE
	Partitions    int                 // STREAM_PARTITIONS
	RedisTimeout  time.Duration       // REDIS_TIMEOUT
	Keys          []string            // QUERY_KEYS: read keys; none leaves the API open
	AllowEviction bool                // ALLOW_EVICTION: run on a Redis that may evict keys
	Retention     events.Retention    // STATS_RETENTION_*: as the processor's
	HTTP          config.HTTPTimeouts // HTTP_*_TIMEOUT
	Live          liveConfig          // LIVE_*
}

func readConfig(r *config.Reader) Config {
	return Config{
		Addr:          r.Addr("QUERY_ADDR", ":8081"),
		Namespace:     r.Namespace(),
		Partitions:    r.Partitions(),
		RedisTimeout:  r.Duration("REDIS_TIMEOUT", time.Second, 10*time.Millisecond),
		Keys:          r.Keys("QUERY_KEYS"),
		AllowEviction: r.Bool("ALLOW_EVICTION", false),
		Retention:     r.StatsRetention(),
		HTTP:          r.HTTPTimeouts(),
		Live:          readLiveConfig(r),
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return runWith(ctx, getenv, stderr, nil)
}

// runWith is run with an optional ready-made listener, for tests.
//
// Every goroutine it starts is started with sync.WaitGroup.Go and waited for before it
// returns. When ctx is cancelled it stops, in this order: the HTTP server (requests in
// flight are answered), the reader's loops, the profiler; then it closes the Redis
// client.
func runWith(ctx context.Context, getenv func(string) string, stderr io.Writer, ln net.Listener) error {
	r := config.NewReader(getenv)
	logger := r.Logger(stderr)
	cfg := readConfig(r)
	ropt := r.Redis()
	debugAddr := r.String("DEBUG_ADDR", "")
	if err := r.Err(); err != nil {
		return err
	}
	config.BoundRedis(ropt, cfg.RedisTimeout)
	logger.Info("queryapi starting", "addr", cfg.Addr, "redis", config.MaskURL(r.String("REDIS_URL", config.DefaultRedisURL)), "namespace", cfg.Namespace,
		"partitions", cfg.Partitions, "keys", len(cfg.Keys), "allow_eviction", cfg.AllowEviction, "stats_retention", cfg.Retention,
		"live_interval", cfg.Live.Interval, "live_max_clients", cfg.Live.MaxClients)
	if len(cfg.Keys) == 0 {
		logger.Warn("QUERY_KEYS is not set: the query API is open to anyone")
	}
	rdb := cluster.NewClient(ropt)
	defer rdb.Close()
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
	if ln == nil {
		var err error
		if ln, err = server.Listen("QUERY_ADDR", cfg.Addr); err != nil {
			return err
		}
	}
	parts := partitions.NewReader(rdb, layout)
	reg := metrics.NewRegistry()
	redisErrors := metrics.RedisErrors(reg, "read", "stats")
	reg.MustRegister(metrics.NewLayoutStats(rdb, layout, cfg.RedisTimeout, redisErrors.WithLabelValues("stats")))
	readErrors := redisErrors.WithLabelValues("read")
	// The reader outlives the HTTP server: requests in flight at shutdown are answered.
	readerCtx, stopReader := context.WithCancel(context.Background())
	defer stopReader()
	reader := newTotalsReader(parts, cfg.RedisTimeout, readErrors)
	wg.Go(func() { reader.Run(readerCtx, 4) })
	h := &handler{rdb: rdb, layout: layout, parts: parts, timeout: cfg.RedisTimeout, redisErrors: readErrors,
		retention: cfg.Retention, now: time.Now, reader: reader, shared: newCoalescer()}

	h.web = mustDashboard()
	h.live = newLiveHub(cfg.Live, h.liveSnapshot, logger, reg)
	stopLive := h.live.start(ctx)
	defer stopLive()
	e := server.New(logger, eviction.Ready)
	metrics.Instrument(e, reg, logger)
	routes(e, h, server.RequireKey("queryapi", cfg.Keys))
	err := server.Serve(ctx, e, ln, logger, 10*time.Second, cfg.HTTP)
	stopReader()
	stopDebug()
	wg.Wait()
	logger.Info("queryapi stopped")
	return err
}
