// Command queryapi serves the aggregates over HTTP: per-user and per-product totals,
// the top products by clicks, and the state of the pipeline. It only reads, and no
// request scans the keyspace.
package main

import "github.com/clickstream/pipeline/internal/server"

func main() { server.Main("queryapi", run) }
