package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/cluster"
	"github.com/clickstream/pipeline/internal/config"
	"github.com/clickstream/pipeline/internal/partitions"
	"github.com/clickstream/pipeline/internal/rebuild"
	"github.com/clickstream/pipeline/internal/recount"
	"github.com/clickstream/pipeline/internal/server"
	"github.com/redis/go-redis/v9"
)

// runRebuild is `processor rebuild [--cancel]` (see internal/rebuild).
func runRebuild(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("processor rebuild", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cancelFlag := fs.Bool("cancel", false, "cancel the unfinished rebuild and delete the generation it was building")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("rebuild: unexpected argument %q", fs.Arg(0))
	}
	r := config.NewReader(getenv)
	logger := r.Logger(stderr)
	cfg := readConfig(r)
	ropt := r.Redis()
	if err := r.Err(); err != nil {
		return err
	}
	ropt.ReadTimeout = cfg.RedisTimeout
	ropt.WriteTimeout = cfg.RedisTimeout
	ropt.DialTimeout = cfg.RedisTimeout
	rdb := cluster.NewClient(ropt)
	defer rdb.Close()
	layout := events.NewLayout(cfg.Namespace, cfg.Partitions)
	if err := checkPartitions(ctx, rdb, layout, cfg.RedisTimeout); err != nil {
		return err
	}
	if layout.Count() == 1 {
		logger = logger.With("stream", layout.Partition(0).Stream())
	}
	rcfg := rebuild.Config{Batch: cfg.Batch, RedisTimeout: cfg.RedisTimeout, LockTTL: cfg.LockTTL, StatsRetention: cfg.StatsRetention}
	if *cancelFlag {
		return rebuild.CancelAll(ctx, rdb, layout, rcfg, stdout, logger)
	}
	// A rebuild writes a whole generation of counts: not into a Redis that may evict them.
	if err := server.NewEviction(rdb, cfg.AllowEviction, logger).AtStart(ctx); err != nil {
		return err
	}
	return rebuild.RunAll(ctx, rdb, layout, rcfg, stdout, logger)
}

// checkPartitions makes sure the admin commands use the partition count the events
// were written with (see partitions.Check). They need Redis anyway: it must answer.
func checkPartitions(ctx context.Context, rdb redis.UniversalClient, l events.Layout, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return partitions.Check(ctx, rdb, l)
}

// runRecount is `processor recount` (see internal/recount).
func runRecount(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("processor recount", flag.ContinueOnError)
	fs.SetOutput(stderr)
	from := fs.String("from", "", "start of the window, inclusive: an RFC 3339 time or a stream id (default: the oldest entry)")
	to := fs.String("to", "", "end of the window, exclusive: an RFC 3339 time or a stream id (default: the newest entry, included)")
	user := fs.String("user", "", "also show this user's totals")
	product := fs.String("product", "", "also show this product's totals")
	interval := fs.String("interval", "", "also print totals per minute, hour or day bucket of event time (of the --user's or --product's events when given), as the statistics API reports them")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("recount: unexpected argument %q", fs.Arg(0))
	}
	q := recount.Query{User: *user, Product: *product}
	if *from != "" {
		id, err := recount.ParseBound(*from)
		if err != nil {
			return fmt.Errorf("recount: --from: %w", err)
		}
		q.From = id
	}
	if *to != "" {
		id, err := recount.ParseBound(*to)
		if err != nil {
			return fmt.Errorf("recount: --to: %w", err)
		}
		q.To = id
	}
	for _, f := range []struct{ name, v string }{{"--user", *user}, {"--product", *product}} {
		if f.v != "" && !events.ValidID(f.v) {
			return fmt.Errorf("recount: %s: %s", f.name, events.IDRule)
		}
	}
	if *interval != "" {
		res, ok := events.ParseResolution(*interval)
		if !ok {
			return fmt.Errorf("recount: --interval: must be minute, hour or day")
		}
		q.Interval = &res
	}

	r := config.NewReader(getenv)
	cfg := readConfig(r)
	ropt := r.Redis()
	if err := r.Err(); err != nil {
		return err
	}
	ropt.ReadTimeout = cfg.RedisTimeout
	rdb := cluster.NewClient(ropt)
	defer rdb.Close()
	layout := events.NewLayout(cfg.Namespace, cfg.Partitions)
	if err := checkPartitions(ctx, rdb, layout, cfg.RedisTimeout); err != nil {
		return err
	}
	return recount.RunLayout(ctx, rdb, layout, q, cfg.RedisTimeout, stdout)
}
