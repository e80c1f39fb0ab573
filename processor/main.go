// Command processor is a member of the stream's consumer group: it reads events in
// batches and applies them to per-user and per-product counters, exactly once in
// effect. Run as many as you like, on any hosts: that is how processing scales out.
//
// The same binary holds the admin commands that replay the stream: `processor rebuild`
// builds every count again as a new generation and switches to it, `processor recount`
// counts a window of the stream without touching the aggregates (see the README,
// "Replay: rebuilding every count from the stream"). Their work is done by
// internal/rebuild and internal/recount; this package keeps the consumer (reads,
// claims, dead letters) and retention, and wires the commands.
package main

import "github.com/clickstream/pipeline/internal/server"

func main() { server.Main("processor", run) }
