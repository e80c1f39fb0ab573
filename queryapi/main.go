// Command queryapi serves the aggregates over HTTP: per-user and per-product totals,
// the top products by clicks, and the state of the pipeline. It only reads, and no
// request scans the keyspace.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "queryapi:", err)
		os.Exit(1)
	}
}
