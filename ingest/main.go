// Command ingest accepts user-behaviour events over HTTP and appends them to the Redis
// stream. It answers 202 as soon as Redis holds the events; aggregation happens later,
// in the processors.
package main

import "github.com/clickstream/pipeline/internal/server"

func main() { server.Main("ingest", run) }
