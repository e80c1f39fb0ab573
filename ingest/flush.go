package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/cluster"
	"github.com/redis/go-redis/v9"
)

// part is the events of one request that go to one partition: they are written
// atomically, as one call of the dedup script (with event_ids), one command (one event)
// or one MULTI/EXEC (several). With one partition, a request is one part.
type part struct {
	req    int // index in the batch
	keys   events.Keys
	events []events.Event
	cmd    *redis.Cmd // the command, or the EXEC
}

// nodeWrite is what one flush sends to one Redis node: the parts of the partitions that
// node holds, in one pipeline, which is one connection (so that WAIT, last, covers the
// writes before it).
type nodeWrite struct {
	node  redis.Cmdable
	parts []*part
	wait  *redis.Cmd // WAIT, with WRITE_REPLICAS
	err   error      // the round trip's
}

// errNotReplicated is a write that its master holds, but fewer replicas than
// WRITE_REPLICAS confirmed in time.
type errNotReplicated struct{ got, want int64 }

func (e errNotReplicated) Error() string {
	return fmt.Sprintf("written, but confirmed by %d of the %d replicas WRITE_REPLICAS asks for in time; retry (events with event_id are stored once)", e.got, e.want)
}

// flush writes a batch of requests in one round trip per Redis node, to every node at
// once. Each part (a request's events of one partition) is atomic: a part with an
// event_id among its events is one call of dedupScript, which writes all of them; one
// without is a single XADD, or several wrapped in MULTI/EXEC (also in the AOF, so a
// Redis crash cannot keep half of one). With one partition a request is one part,
// written whole or not at all; with several, a request whose users fall in several
// partitions is written per partition, and one partition's failure leaves the others
// written (the client retries the request: events with event_id are then stored once).
//
// Plain XADDs are used where no dedup is needed because an XADD from a script costs
// Redis about twice as much, and bare commands are used for single events because
// queuing them in a transaction costs Redis more than the XADD itself.
func (w *Writer) flush(batch []*writeReq) {
	// The flush is not tied to any one request's context: once sent, it runs to
	// completion in Redis whatever the clients do, and its reply settles every request.
	ctx, cancel := context.WithTimeout(context.Background(), w.timeout)
	defer cancel()
	results := make([]writeResult, len(batch))
	written := make([]int, len(batch)) // events of failed requests that are in the stream all the same
	nodes, err := w.nodes(ctx, w.split(batch))
	if err != nil {
		for i := range results {
			results[i].err = err
		}
	}
	if len(nodes) == 1 {
		w.send(ctx, nodes[0])
	} else {
		var wg sync.WaitGroup
		for _, n := range nodes {
			wg.Add(1)
			go func() { defer wg.Done(); w.send(ctx, n) }()
		}
		wg.Wait()
	}
	var flushErr error
	for _, n := range nodes {
		if n.err != nil && flushErr == nil {
			flushErr = n.err
		}
		waitErr := n.waited(w.replicas)
		for _, p := range n.parts {
			res := p.result()
			if res.err == nil && p.cmd.Val() == nil {
				// No reply at all: the round trip failed before this command ran. go-redis
				// leaves a Redis error met while setting up the connection (WRONGPASS, a bad
				// DB index) off the commands, so their own Err is nil; nothing was written.
				res.err = n.err
				if res.err == nil {
					res.err = errors.New("no reply from Redis")
				}
			}
			r := &results[p.req]
			if res.err == nil {
				r.duplicates += res.duplicates
				written[p.req] += len(p.events) - res.duplicates
				if waitErr == nil {
					continue
				}
				res.err = waitErr
			}
			if r.err == nil || errors.As(r.err, new(errNotReplicated)) {
				r.err = res.err
			}
		}
	}
	if flushErr != nil {
		w.m.writeErrors.Inc() // before any answer: a client that got its 503 finds it counted
	}
	var late, lateEvents int
	for i, r := range batch {
		res := results[i]
		if res.err != nil && written[i]+res.duplicates > 0 {
			w.unacknowledged(res, written[i], len(r.events))
		}
		if r.state.CompareAndSwap(reqSent, reqAnswered) {
			r.done <- res
			continue
		}
		// Orphaned: the client was answered 503 while Redis had the write. Count what Redis
		// did, so that ingest_events_total matches the stream.
		if res.err != nil {
			w.m.lateUnconf.Inc()
			continue
		}
		w.m.lateWritten.Inc()
		w.m.accepted.Add(float64(len(r.events) - res.duplicates))
		if res.duplicates > 0 {
			w.m.duplicates.Add(float64(res.duplicates))
		}
		late++
		lateEvents += len(r.events)
	}
	if flushErr != nil {
		w.logger.Warn("write to stream failed", w.streamAttr(), "requests", len(batch), "err", flushErr)
	}
	if late > 0 {
		// Their clients were told to retry: events without event_id will be stored twice.
		w.logger.Warn("requests answered 503 (Redis had not replied in time) were written after all",
			w.streamAttr(), "requests", late, "events", lateEvents)
	}
}

// unacknowledged accounts for a request answered 503 with some of its events in the
// stream: its master holds them but too few replicas confirmed them, or some of its
// partitions were written and another failed. They are in ingest_events_total, as
// what Redis did; the client retries, and events without event_id are then stored twice.
func (w *Writer) unacknowledged(res writeResult, written, events int) {
	reason := "partial"
	if errors.As(res.err, new(errNotReplicated)) {
		reason = "replicas"
	}
	w.m.unacked.WithLabelValues(reason).Inc()
	w.m.accepted.Add(float64(written))
	if res.duplicates > 0 {
		w.m.duplicates.Add(float64(res.duplicates))
	}
	w.logger.Warn("request answered 503 with some of its events in the stream", "reason", reason,
		"events", events, "written", written, "duplicates", res.duplicates, "err", res.err)
}

// streamAttr names the stream for the log: the partitions' count when there are several.
func (w *Writer) streamAttr() any {
	if w.layout.Count() == 1 {
		return slog.String("stream", w.layout.Partition(0).Stream())
	}
	return slog.Int("partitions", w.layout.Count())
}

// split cuts the batch's requests into parts, one per request and partition.
func (w *Writer) split(batch []*writeReq) []*part {
	parts := make([]*part, 0, len(batch))
	if w.layout.Count() == 1 {
		keys := w.layout.Partition(0)
		for i, r := range batch {
			parts = append(parts, &part{req: i, keys: keys, events: r.events})
		}
		return parts
	}
	for i, r := range batch {
		byPartition := map[int]*part{}
		for _, ev := range r.events {
			p := w.layout.PartitionOf(ev.UserID)
			if byPartition[p] == nil {
				byPartition[p] = &part{req: i, keys: w.layout.Partition(p)}
				parts = append(parts, byPartition[p])
			}
			byPartition[p].events = append(byPartition[p].events, ev)
		}
	}
	return parts
}

// nodes groups parts by the node that holds their partition: on a single Redis, one.
func (w *Writer) nodes(ctx context.Context, parts []*part) ([]*nodeWrite, error) {
	var out []*nodeWrite
	byNode := map[redis.Cmdable]*nodeWrite{}
	for _, p := range parts {
		node, err := cluster.NodeFor(ctx, w.rdb, p.keys.Stream())
		if err != nil {
			return nil, err
		}
		n := byNode[node]
		if n == nil {
			n = &nodeWrite{node: node}
			byNode[node] = n
			out = append(out, n)
		}
		n.parts = append(n.parts, p)
	}
	return out, nil
}

// send writes one node's parts in one pipeline, with WAIT last when WRITE_REPLICAS asks
// for replicas.
func (w *Writer) send(ctx context.Context, n *nodeWrite) {
	pipe := n.node.Pipeline()
	var fence string // a key of a partition on this node that got a dedup script
	for _, p := range n.parts {
		if hasEventIDs(p.events) {
			// Loaded ahead of the EVALSHAs in the same round trip, so they cannot meet
			// an empty script cache (after a Redis restart).
			pipe.ScriptLoad(ctx, dedupSource)
			fence = p.keys.WaitFence()
			break
		}
	}
	for _, p := range n.parts {
		if hasEventIDs(p.events) {
			p.cmd = pipe.Do(ctx, w.dedupArgs(p.events, p.keys)...)
			continue
		}
		stream := p.keys.Stream()
		multi := len(p.events) > 1
		if multi {
			pipe.Do(ctx, "multi")
		}
		for i := range p.events {
			c := pipe.Do(ctx, p.events[i].AppendFields(append(make([]any, 0, 13), "xadd", stream, "*"))...)
			if !multi {
				p.cmd = c
			}
		}
		if multi {
			p.cmd = pipe.Do(ctx, "exec")
		}
	}
	if w.replicas > 0 {
		if fence != "" {
			// WAIT waits for this connection's own writes (so its documentation says). A
			// duplicate writes nothing, yet its 202 says the first copy is stored, and that
			// copy was written on another connection, maybe not replicated yet: a write here
			// moves this connection's replication offset past it. (Redis 7.0 was seen to
			// wait for more than that, its whole offset, so no test can tell this write is
			// needed there; the documented contract is what is relied on.)
			pipe.Do(ctx, "set", fence, "1")
		}
		n.wait = pipe.Do(ctx, "wait", w.replicas, w.waitMs)
	}
	_, n.err = pipe.Exec(ctx)
}

// waited returns nil when WRITE_REPLICAS is 0 or WAIT counted enough replicas, and the
// error of the node's parts otherwise.
func (n *nodeWrite) waited(replicas int) error {
	if n.wait == nil {
		return nil
	}
	got, err := n.wait.Int64()
	if err != nil {
		return fmt.Errorf("WAIT for %d replicas: %w", replicas, err)
	}
	if got < int64(replicas) {
		return errNotReplicated{got: got, want: int64(replicas)}
	}
	return nil
}

// dedupArgs is the EVALSHA of dedupScript that writes evs, the events of one part: the
// partition's stream and the markers of the events that carry an event_id as keys (one
// hash tag, so one slot), then the window and each event's fields.
func (w *Writer) dedupArgs(evs []events.Event, keys events.Keys) []any {
	markers := 0
	for i := range evs {
		if evs[i].EventID != "" {
			markers++
		}
	}
	args := make([]any, 0, 5+markers+len(evs)*14)
	args = append(args, "evalsha", dedupScript.Hash(), 1+markers, keys.Stream())
	for i := range evs {
		if evs[i].EventID != "" {
			args = append(args, keys.Marker(evs[i].EventID))
		}
	}
	args = append(args, w.window)
	for i := range evs {
		ev := &evs[i]
		n := len(args)
		args = append(args, 0, "0")
		if ev.EventID != "" {
			args[n+1] = "1"
		}
		args = ev.AppendFields(args)
		args[n] = len(args) - n - 2
	}
	return args
}

func hasEventIDs(evs []events.Event) bool {
	for i := range evs {
		if evs[i].EventID != "" {
			return true
		}
	}
	return false
}

// result reads a part's outcome from its command: the dedup script's count of
// duplicates, for a part with event_ids; else an XADD's entry id (one event) or its
// EXEC's (several).
func (p *part) result() writeResult {
	c := p.cmd
	if err := c.Err(); err != nil {
		return writeResult{err: err}
	}
	if hasEventIDs(p.events) {
		dups, ok := c.Val().(int64)
		if !ok {
			return writeResult{err: fmt.Errorf("unexpected dedup script reply %v", c.Val())}
		}
		return writeResult{duplicates: int(dups)}
	}
	replies := []any{c.Val()}
	if len(p.events) > 1 {
		var ok bool
		if replies, ok = c.Val().([]any); !ok || len(replies) != len(p.events) {
			return writeResult{err: fmt.Errorf("unexpected EXEC reply %v", c.Val())}
		}
	}
	for _, v := range replies {
		if err, ok := v.(error); ok {
			// A command failed inside the transaction; the others ran. Nothing in this
			// pipeline does that short of a bug, but the client must not get a 202.
			return writeResult{err: err}
		}
	}
	return writeResult{}
}
