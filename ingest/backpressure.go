package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/cluster"
	"github.com/clickstream/pipeline/internal/generations"
	"github.com/clickstream/pipeline/internal/lag"
	"github.com/clickstream/pipeline/internal/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// backpressure decides whether ingest should refuse events for now: when the processors
// have fallen too far behind, Redis is close to its maxmemory, or Redis's
// maxmemory-policy may evict keys (see server.Eviction). Accepting more then
// only makes the backlog longer or brings Redis to refusing writes (or, with an
// eviction policy, to dropping keys), so clients are told to retry later instead.
//
// The state is refreshed by one goroutine every interval and read by requests from an
// atomic: a request costs no Redis call for it.
type backpressure struct {
	rdb      redis.UniversalClient
	layout   events.Layout
	eviction *server.Eviction // judges Redis's maxmemory-policy
	stream   string           // for the log: the stream, or how many partitions there are
	maxLag   int64            // MAX_LAG; 0 turns the lag check off
	maxMem   float64          // MAX_REDIS_MEMORY, a fraction of maxmemory
	timeout  time.Duration
	errors   prometheus.Counter // failed checks
	logger   *slog.Logger
	reason   atomic.Pointer[string] // nil while ingest accepts events
	checkErr string                 // the last check's error, so a lasting one is logged once
	unknown  map[string]bool        // groups whose lag Redis cannot tell, each logged once
}

// notChecked is why events are refused until a check has read Redis's state. With
// Redis unreachable when ingest starts, its maxmemory-policy is unknown, and accepting
// the first writes when Redis comes back, before the next check, could store events on
// a Redis that evicts keys.
const notChecked = "Redis's state (maxmemory-policy, lag, memory) has not been read since ingest started; retry later"

func newBackpressure(rdb redis.UniversalClient, layout events.Layout, eviction *server.Eviction, maxLag int64, maxMem float64, timeout time.Duration, checkErrors prometheus.Counter, logger *slog.Logger) *backpressure {
	stream := layout.Partition(0).Stream()
	if layout.Count() > 1 {
		stream = fmt.Sprintf("%d partitions", layout.Count())
	}
	b := &backpressure{rdb: rdb, layout: layout, eviction: eviction, stream: stream, maxLag: maxLag, maxMem: maxMem, timeout: timeout, errors: checkErrors, logger: logger,
		unknown: map[string]bool{}}
	reason := notChecked
	b.reason.Store(&reason)
	return b
}

// Reason is why ingest refuses events now, or "" when it accepts them.
func (b *backpressure) Reason() string {
	if r := b.reason.Load(); r != nil {
		return *r
	}
	return ""
}

// run refreshes the state every interval until ctx is cancelled.
func (b *backpressure) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			b.refresh(ctx)
		}
	}
}

// refresh checks Redis once. When the check fails (Redis unreachable, say), the last
// state stays (before the first check that succeeds, notChecked): writes fail on their
// own then, and answer 503 anyway.
func (b *backpressure) refresh(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	reason, err := b.check(ctx)
	if err != nil {
		b.errors.Inc()
		if msg := err.Error(); msg != b.checkErr {
			b.logger.Warn("backpressure check failed; keeping the last state", "stream", b.stream, "err", err)
			b.checkErr = msg
		}
		return
	}
	b.checkErr = ""
	old := b.Reason()
	switch {
	case reason != "" && old == "":
		b.logger.Warn("backpressure on: refusing events with 503", "stream", b.stream, "reason", reason)
	case reason == "" && old == notChecked:
		b.logger.Info("Redis's state read: accepting events", "stream", b.stream)
	case reason == "" && old != "":
		b.logger.Info("backpressure off: accepting events again", "stream", b.stream)
	}
	if reason == "" {
		b.reason.Store(nil)
	} else {
		b.reason.Store(&reason)
	}
}

// check returns why ingest should refuse events, or "". One round trip: the generation
// pointer, XINFO STREAM and XINFO GROUPS of every partition, and INFO memory (which also
// holds the maxmemory-policy), in one pipeline; on a cluster, INFO memory of every
// master, at the same time.
func (b *backpressure) check(ctx context.Context) (string, error) {
	_, isCluster := b.rdb.(*redis.ClusterClient)
	pipe := b.rdb.Pipeline()
	parts := b.layout.Partitions()
	infos := make([]*lag.Cmds, len(parts))
	gens := make([]*redis.StringCmd, len(parts))
	if b.maxLag > 0 {
		for i, k := range parts {
			gens[i] = pipe.Get(ctx, k.Generation())
			infos[i] = lag.Queue(ctx, pipe, k.Stream())
		}
	}
	var mem *redis.StringCmd
	var mems []string
	var memErr error
	var memDone chan struct{}
	if isCluster {
		memDone = make(chan struct{})
		go func() { defer close(memDone); mems, memErr = b.memories(ctx) }()
	} else {
		mem = pipe.Info(ctx, "memory")
	}
	// Each command's error is looked at below. But a Redis error met while setting up
	// the connection (WRONGPASS, say) is only returned here, leaving the commands
	// without error and without reply: INFO, which always answers, tells that apart.
	_, err := pipe.Exec(ctx)
	if isCluster {
		<-memDone
		if memErr != nil {
			return "", fmt.Errorf("backpressure check: INFO memory: %w", memErr)
		}
		if b.maxLag > 0 && err != nil && !errors.Is(err, redis.Nil) && !generations.IsNoStream(err) {
			return "", fmt.Errorf("backpressure check: %w", err)
		}
	} else {
		if mem.Err() == nil && mem.Val() == "" {
			if err == nil {
				err = errors.New("no reply")
			}
			return "", fmt.Errorf("backpressure check: %w", err)
		}
		if mem.Err() == nil {
			mems = []string{mem.Val()}
		}
	}
	// A maxmemory-policy that may evict keys (set after ingest started, or seen only now
	// that Redis answers) stops writes until it is fixed, unless ALLOW_EVICTION.
	for _, m := range mems {
		if _, err := b.eviction.Verdict(server.PolicyFromInfo(m)); err != nil {
			return err.Error(), nil
		}
	}
	if b.maxLag > 0 {
		// Only the current generation's group counts: a rebuild's group starts far behind
		// by design, and other readers of the stream are not this pipeline's processors.
		// With several partitions, the lags of their groups add up.
		var behind int64
		for i, k := range parts {
			n, err := generations.Current(gens[i])
			if err != nil {
				return "", fmt.Errorf("GET %s: %w", k.Generation(), err)
			}
			s, groups, err := infos[i].Result()
			if err != nil {
				return "", err
			}
			behind += b.groupLag(ctx, k, s, groups, k.Gen(n).Group())
		}
		if behind > b.maxLag {
			return fmt.Sprintf("processing is behind by %d entries (MAX_LAG %d); retry later", behind, b.maxLag), nil
		}
	}
	if !isCluster {
		if err := mem.Err(); err != nil {
			return "", fmt.Errorf("INFO memory: %w", err)
		}
	}
	for _, m := range mems {
		used, max := infoInt(m, "used_memory"), infoInt(m, "maxmemory")
		if max > 0 && float64(used) > b.maxMem*float64(max) {
			return fmt.Sprintf("Redis memory is at %d of %d bytes, over MAX_REDIS_MEMORY %g of maxmemory; retry later",
				used, max, b.maxMem), nil
		}
	}
	return "", nil
}

// memories reads INFO memory of every master of a cluster.
func (b *backpressure) memories(ctx context.Context) ([]string, error) {
	var mu sync.Mutex
	var out []string
	err := cluster.ForEachMaster(ctx, b.rdb, func(ctx context.Context, node redis.Cmdable) error {
		info, err := node.Info(ctx, "memory").Result()
		if err != nil {
			return err
		}
		mu.Lock()
		out = append(out, info)
		mu.Unlock()
		return nil
	})
	return out, err
}

// groupLag returns the lag of the consumer group named current of partition k (see
// lag.Of), or 0. A group whose lag cannot be told is not enforced, and logged once:
// guessing would refuse events for as long as the deleted entry behind it stays, and
// nothing short of walking the stream bounds it better. No stream or no group yet
// means no lag.
//
// When the group is caught up and Redis's counter of it is wrong (lost in a restart
// from the AOF), ingest repairs it here, so that the lag of the entries posted next is
// exact even while no processor runs; the processors do the same.
func (b *backpressure) groupLag(ctx context.Context, k events.Keys, s lag.Stream, groups []lag.Group, current string) int64 {
	for _, g := range groups {
		if g.Name != current {
			continue
		}
		if lag.Repairable(s, g) {
			b.repair(ctx, k.Stream(), g)
		}
		n := lag.Of(s, g)
		b.noteUnknown(k.Stream(), g.Name, n < 0)
		return max(n, 0)
	}
	return 0
}

// repair sets Redis's entries-read counter of g right. A failure (say, an ACL that
// denies XGROUP to ingest) is logged and changes nothing else: the lag is right
// without it while the group is caught up.
func (b *backpressure) repair(ctx context.Context, stream string, g lag.Group) {
	ok, was, now, err := lag.Repair(ctx, b.rdb, stream, g.Name)
	switch {
	case err != nil:
		b.logger.Warn("could not repair the consumer group's entries-read counter", "stream", stream, "group", g.Name, "err", err)
	case ok:
		b.logger.Info("repaired the consumer group's entries-read counter, which Redis lost in a restart from its AOF",
			"stream", stream, "group", g.Name, "entries_read_was", was, "entries_read", now)
	}
}

// noteUnknown logs, once, when the lag of group becomes unknown.
func (b *backpressure) noteUnknown(stream, group string, unknown bool) {
	if unknown && !b.unknown[stream+" "+group] {
		b.logger.Warn("lag of consumer group unknown (an entry after its position was deleted with XDEL); MAX_LAG is not enforced for it",
			"stream", stream, "group", group)
	}
	b.unknown[stream+" "+group] = unknown
}

// infoInt returns the integer field name of an INFO reply, or 0.
func infoInt(info, name string) int64 {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}
