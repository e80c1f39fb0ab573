// Command bench measures the pipeline side by side with the designs it replaces, in one
// run on one machine, and writes the table to BENCHMARKS.md. It starts its own
// redis-server and builds the project's binaries; nothing is downloaded.
//
//	go run ./scripts/bench            # full run, about three minutes
//	go run ./scripts/bench -quick     # smaller counts and shorter windows, for a smoke test
//	go run ./scripts/bench -only processor  # the processor's drain and rebuild alone, about a minute
//	go run ./scripts/bench -only ingest     # NDJSON and Segment /v1/batch side by side, under a minute
//	go run ./scripts/bench -only dashboard  # the live dashboard's freshness and cost alone, about two minutes
//	go run ./scripts/bench -only scale      # ingest and drain on one Redis and on a 3-master cluster
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type options struct {
	out        string
	events     int
	window     time.Duration
	conns      int
	peerWindow time.Duration
	freshRate  int
	quick      bool
	only       string

	dashRate    int           // offered load during the dashboard's freshness
	dashStreams int           // open /v1/live streams for its cost
	dashWindow  time.Duration // each of its measurement windows

	scaleEvents int // events of each scale-out measurement
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var o options
	serveKind := fs.String("serve", "", "internal: run a reference server (null or naive)")
	addr := fs.String("addr", "", "internal: address for -serve")
	redisURL := fs.String("redis", "", "internal: Redis URL for -serve naive")
	fs.StringVar(&o.out, "out", "BENCHMARKS.md", "file to write the results to (empty: don't write)")
	fs.IntVar(&o.events, "events", 1_000_000, "events preloaded for the processor drain and memory measurements")
	fs.DurationVar(&o.window, "window", 5*time.Second, "measurement window of each HTTP load")
	fs.IntVar(&o.conns, "conns", 64, "concurrent connections of the HTTP loads")
	fs.DurationVar(&o.peerWindow, "peer-window", 10*time.Second, "measurement window of the watermill peer")
	fs.IntVar(&o.freshRate, "fresh-rate", 50_000, "offered load (events/s) during the freshness measurement")
	fs.BoolVar(&o.quick, "quick", false, "smaller counts and windows (smoke test; figures not comparable)")
	fs.IntVar(&o.dashRate, "dash-rate", 10_000, "offered load (events/s) during the dashboard freshness measurement")
	fs.IntVar(&o.dashStreams, "dash-streams", 1000, "open /v1/live streams for the dashboard cost measurement")
	fs.DurationVar(&o.dashWindow, "dash-window", 30*time.Second, "each of the dashboard's measurement windows")
	fs.IntVar(&o.scaleEvents, "scale-events", 300_000, "events of each scale-out measurement")
	fs.StringVar(&o.only, "only", "", "run only these measurements (prints the table, writes no file): "+
		"processor (drain, worst case, rebuild), ingest (batch NDJSON and Segment /v1/batch side by side), "+
		"dashboard (live freshness, CPU of open streams) or scale (ingest and drain on one Redis and on a 3-master cluster)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch o.only {
	case "":
	case "processor", "ingest", "dashboard", "scale":
		o.out = ""
	default:
		return fmt.Errorf("-only %q: want processor, ingest, dashboard or scale", o.only)
	}
	if *serveKind != "" {
		return serve(*serveKind, *addr, *redisURL)
	}
	if o.quick {
		o.events, o.window, o.peerWindow, o.dashWindow, o.scaleEvents = 100_000, time.Second, 2*time.Second, 5*time.Second, 50_000
	}
	b, err := newBench(ctx, o, stdout)
	if err != nil {
		return err
	}
	defer b.close()
	switch o.only {
	case "processor":
		return b.processorOnly(ctx)
	case "ingest":
		return b.ingestOnly(ctx)
	case "dashboard":
		return b.dashboardOnly(ctx)
	case "scale":
		b.logf("%d cores, redis %s; scale-out measurements only", cores(), b.version)
		if err := b.scaleOut(ctx); err != nil {
			return err
		}
		return b.report()
	}
	return b.all()
}
