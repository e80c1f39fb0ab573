package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/clickstream/pipeline/events"
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
	keys     events.Keys
	eviction *server.Eviction // judges Redis's maxmemory-policy
	stream   string
	maxLag   int64   // MAX_LAG; 0 turns the lag check off
	maxMem   float64 // MAX_REDIS_MEMORY, a fraction of maxmemory
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

func newBackpressure(rdb redis.UniversalClient, keys events.Keys, eviction *server.Eviction, maxLag int64, maxMem float64, timeout time.Duration, checkErrors prometheus.Counter, logger *slog.Logger) *backpressure {
	b := &backpressure{rdb: rdb, keys: keys, eviction: eviction, stream: keys.Stream(), maxLag: maxLag, maxMem: maxMem, timeout: timeout, errors: checkErrors, logger: logger,
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
// pointer, XINFO STREAM, XINFO GROUPS and INFO memory (which also holds the
// maxmemory-policy) in one pipeline.
func (b *backpressure) check(ctx context.Context) (string, error) {
	pipe := b.rdb.Pipeline()
	var info *lag.Cmds
	var gen *redis.StringCmd
	if b.maxLag > 0 {
		gen = pipe.Get(ctx, b.keys.Generation())
		info = lag.Queue(ctx, pipe, b.stream)
	}
	mem := pipe.Info(ctx, "memory")
	// Each command's error is looked at below. But a Redis error met while setting up
	// the connection (WRONGPASS, say) is only returned here, leaving the commands
	// without error and without reply: INFO, which always answers, tells that apart.
	_, err := pipe.Exec(ctx)
	if mem.Err() == nil && mem.Val() == "" {
		if err == nil {
			err = errors.New("no reply")
		}
		return "", fmt.Errorf("backpressure check: %w", err)
	}
	// A maxmemory-policy that may evict keys (set after ingest started, or seen only now
	// that Redis answers) stops writes until it is fixed, unless ALLOW_EVICTION.
	if mem.Err() == nil {
		if _, err := b.eviction.Verdict(server.PolicyFromInfo(mem.Val())); err != nil {
			return err.Error(), nil
		}
	}
	if b.maxLag > 0 {
		// Only the current generation's group counts: a rebuild's group starts far behind
		// by design, and other readers of the stream are not this pipeline's processors.
		n, err := generations.Current(gen)
		if err != nil {
			return "", fmt.Errorf("GET %s: %w", b.keys.Generation(), err)
		}
		s, groups, err := info.Result()
		if err != nil {
			return "", err
		}
		if reason := b.checkLag(ctx, s, groups, b.keys.Gen(n).Group()); reason != "" {
			return reason, nil
		}
	}
	if err := mem.Err(); err != nil {
		return "", fmt.Errorf("INFO memory: %w", err)
	}
	used, max := infoInt(mem.Val(), "used_memory"), infoInt(mem.Val(), "maxmemory")
	if max > 0 && float64(used) > b.maxMem*float64(max) {
		return fmt.Sprintf("Redis memory is at %d of %d bytes, over MAX_REDIS_MEMORY %g of maxmemory; retry later",
			used, max, b.maxMem), nil
	}
	return "", nil
}

// checkLag returns why ingest should refuse events because of the lag of the consumer
// group named current (see lag.Of), or "". A group whose lag cannot be told is not
// enforced, and logged once: guessing would refuse events for as long as the deleted
// entry behind it stays, and nothing short of walking the stream bounds it better.
// No stream or no group yet means no lag.
//
// When the group is caught up and Redis's counter of it is wrong (lost in a restart
// from the AOF), ingest repairs it here, so that the lag of the entries posted next is
// exact even while no processor runs; the processors do the same.
func (b *backpressure) checkLag(ctx context.Context, s lag.Stream, groups []lag.Group, current string) string {
	for _, g := range groups {
		if g.Name != current {
			continue
		}
		if lag.Repairable(s, g) {
			b.repair(ctx, g)
		}
		n := lag.Of(s, g)
		b.noteUnknown(g.Name, n < 0)
		if n > b.maxLag {
			return fmt.Sprintf("processing is behind by %d entries (MAX_LAG %d); retry later", n, b.maxLag)
		}
		return ""
	}
	return ""
}

// repair sets Redis's entries-read counter of g right. A failure (say, an ACL that
// denies XGROUP to ingest) is logged and changes nothing else: the lag is right
// without it while the group is caught up.
func (b *backpressure) repair(ctx context.Context, g lag.Group) {
	ok, was, now, err := lag.Repair(ctx, b.rdb, b.stream, g.Name)
	switch {
	case err != nil:
		b.logger.Warn("could not repair the consumer group's entries-read counter", "stream", b.stream, "group", g.Name, "err", err)
	case ok:
		b.logger.Info("repaired the consumer group's entries-read counter, which Redis lost in a restart from its AOF",
			"stream", b.stream, "group", g.Name, "entries_read_was", was, "entries_read", now)
	}
}

// noteUnknown logs, once, when the lag of group becomes unknown.
func (b *backpressure) noteUnknown(group string, unknown bool) {
	if unknown && !b.unknown[group] {
		b.logger.Warn("lag of consumer group unknown (an entry after its position was deleted with XDEL); MAX_LAG is not enforced for it",
			"stream", b.stream, "group", group)
	}
	b.unknown[group] = unknown
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
