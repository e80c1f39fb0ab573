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
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// backpressure decides whether ingest should refuse events for now: when the processors
// have fallen too far behind, or Redis is close to its maxmemory. Accepting more then
// only makes the backlog longer or brings Redis to refusing writes (or, with an
// eviction policy, to dropping keys), so clients are told to retry later instead.
//
// The state is refreshed by one goroutine every interval and read by requests from an
// atomic: a request costs no Redis call for it.
type backpressure struct {
	rdb      *redis.Client
	keys     events.Keys
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

func newBackpressure(rdb *redis.Client, keys events.Keys, maxLag int64, maxMem float64, timeout time.Duration, checkErrors prometheus.Counter, logger *slog.Logger) *backpressure {
	return &backpressure{rdb: rdb, keys: keys, stream: keys.Stream(), maxLag: maxLag, maxMem: maxMem, timeout: timeout, errors: checkErrors, logger: logger,
		unknown: map[string]bool{}}
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
// state stays: writes fail on their own then, and answer 503 anyway.
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
	case reason == "" && old != "":
		b.logger.Info("backpressure off: accepting events again", "stream", b.stream)
	}
	if reason == "" {
		b.reason.Store(nil)
	} else {
		b.reason.Store(&reason)
	}
}

// check returns why ingest should refuse events, or "". One round trip: XINFO GROUPS,
// XINFO STREAM and INFO memory in one pipeline.
func (b *backpressure) check(ctx context.Context) (string, error) {
	pipe := b.rdb.Pipeline()
	var groups *redis.Cmd
	var stream *redis.XInfoStreamCmd
	var gen *redis.StringCmd
	if b.maxLag > 0 {
		gen = pipe.Get(ctx, b.keys.Generation())
		groups = pipe.Do(ctx, "XINFO", "GROUPS", b.stream)
		stream = pipe.XInfoStream(ctx, b.stream)
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
	if b.maxLag > 0 {
		// Only the current generation's group counts: a rebuild's group starts far behind
		// by design, and other readers of the stream are not this pipeline's processors.
		if err := gen.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return "", fmt.Errorf("GET %s: %w", b.keys.Generation(), err)
		}
		n, err := events.ParseGeneration(gen.Val())
		if err != nil {
			return "", err
		}
		lag, unknown, err := maxLag(groups, stream, b.keys.Gen(n).Group())
		if err != nil {
			return "", fmt.Errorf("XINFO %s: %w", b.stream, err)
		}
		b.noteUnknown(unknown)
		if lag > b.maxLag {
			return fmt.Sprintf("processing is behind by %d entries (MAX_LAG %d); retry later", lag, b.maxLag), nil
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

// noteUnknown logs each group whose lag cannot be told, once, when it becomes so.
func (b *backpressure) noteUnknown(groups []string) {
	now := make(map[string]bool, len(groups))
	for _, g := range groups {
		now[g] = true
		if !b.unknown[g] {
			b.logger.Warn("lag of consumer group unknown (an entry after its position was deleted with XDEL); MAX_LAG is not enforced for it",
				"stream", b.stream, "group", g)
		}
	}
	b.unknown = now
}

// maxLag returns the lag of the consumer group named only: the lag Redis reports,
// or, where Redis cannot tell (an entry after the group's position was deleted), the
// entries added to the stream minus the entries the group has read, which counts the
// deleted ones too and so errs on the side of caution. When entries-read is unknown as
// well (Redis 7 reports neither for a group that has not read since such a delete) the
// group is left out and returned in unknown: guessing entries-added would refuse
// events for as long as the deleted entry's tombstone stays, and nothing else bounds
// its lag short of walking the stream. No stream yet means no lag.
func maxLag(groups *redis.Cmd, stream *redis.XInfoStreamCmd, only string) (worst int64, unknown []string, err error) {
	if err := groups.Err(); err != nil {
		if isNoSuchKey(err) {
			return 0, nil, nil
		}
		return 0, nil, err
	}
	// Read raw: go-redis turns a nil entries-read into 0, which would make a group of
	// unknown position look like it never read anything.
	list, ok := groups.Val().([]any)
	if !ok {
		return 0, nil, fmt.Errorf("XINFO GROUPS: unexpected reply %T", groups.Val())
	}
	for _, g := range list {
		var name, lag, read any
		switch fields := g.(type) {
		case []any: // RESP2, which config.Reader.Redis selects
			for i := 0; i+1 < len(fields); i += 2 {
				switch fields[i] {
				case "name":
					name = fields[i+1]
				case "lag":
					lag = fields[i+1]
				case "entries-read":
					read = fields[i+1]
				}
			}
		case map[any]any: // RESP3
			name, lag, read = fields["name"], fields["lag"], fields["entries-read"]
		default:
			return 0, nil, fmt.Errorf("XINFO GROUPS: unexpected group %T", g)
		}
		if name != only {
			continue
		}
		if n, ok := lag.(int64); ok {
			worst = max(worst, n)
			continue
		}
		n, ok := read.(int64)
		if !ok {
			s, _ := name.(string)
			unknown = append(unknown, s)
			continue
		}
		if err := stream.Err(); err != nil {
			return 0, nil, err
		}
		worst = max(worst, stream.Val().EntriesAdded-n)
	}
	return worst, unknown, nil
}

func isNoSuchKey(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.Contains(re.Error(), "no such key")
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
