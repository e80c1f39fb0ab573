package main

import (
	"context"
	"io"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/aggregate"
	"github.com/clickstream/pipeline/internal/generations"
	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/clickstream/pipeline/internal/testlog"
	"github.com/redis/go-redis/v9"
)

// With a short STREAM_RETENTION, the processor folds old entries into the checkpoint and
// trims them: the stream shrinks, in entries and in memory. A rebuild afterwards (from
// the checkpoint plus what is left of the stream, while retention keeps trimming) equals
// the live totals key for key, and both equal the events written.
func TestRetentionTrimsAndRebuildStaysExact(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	p := newPipeline(t, rs)
	ctx := context.Background()
	env := map[string]string{"BATCH_SIZE": "200", "STREAM_RETENTION": "1s"}
	p.startProcessor(t, "proc", env)

	old := randomEvents(21, 5000, 40, 15)
	oldIDs := p.xadd(t, old)
	p.waitDrained(t)
	before, err := p.rdb.MemoryUsage(ctx, p.keys.Stream(), 0).Result()
	if err != nil {
		t.Fatal(err)
	}
	// Every entry is acked; once it is older than the retention it is folded and trimmed.
	waitFor(t, "the stream to be trimmed", func() bool {
		n, err := p.rdb.XLen(ctx, p.keys.Stream()).Result()
		return err == nil && n == 0
	})
	after, err := p.rdb.MemoryUsage(ctx, p.keys.Stream(), 0).Result()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stream memory: %d B holding %d entries (%.1f B per entry), %d B once they were trimmed",
		before, len(old), float64(before)/float64(len(old)), after)
	if after >= before/10 {
		t.Errorf("stream memory %d B after trimming %d entries, want well under a tenth of %d B", after, len(old), before)
	}
	info, err := p.rdb.HGetAll(ctx, p.keys.CheckpointInfo()).Result()
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{events.CheckpointFieldPosition: oldIDs[len(oldIDs)-1], events.CheckpointFieldEntries: strconv.Itoa(len(old))}; !reflect.DeepEqual(info, want) {
		t.Errorf("checkpoint %v, want %v", info, want)
	}

	recent := randomEvents(22, 3000, 40, 15)
	p.xadd(t, recent)
	p.waitDrained(t)
	live := snapshot(t, p.rdb, p.gen)

	// Rebuild in-process, while the processor keeps folding and trimming.
	out := &testlog.Buffer{}
	vars := map[string]string{"REDIS_URL": rs.URL(), "REDIS_NAMESPACE": p.ns, "BATCH_SIZE": "200"}
	if err := run(ctx, []string{"processor", "rebuild"}, func(k string) string { return vars[k] }, out, out); err != nil {
		t.Fatalf("rebuild: %v\n%s", err, out)
	}
	if !strings.Contains(out.String(), "copied the checkpoint") {
		t.Errorf("rebuild did not start from the checkpoint:\n%s", out)
	}
	gen2 := p.keys.Gen(2)
	if got := snapshot(t, p.rdb, gen2); !reflect.DeepEqual(got, live) {
		t.Errorf("rebuilt generation differs from the live one:\nrebuilt %v\nlive    %v\n%s", got, live, out)
	}
	p2 := *p
	p2.gen = gen2
	all := append(append([]events.Event(nil), old...), recent...)
	p2.assertTotals(t, all)

	// The processor followed the switch: new events are counted in generation 2.
	more := randomEvents(23, 1000, 40, 15)
	p.xadd(t, more)
	p2.waitDrained(t)
	p2.assertTotals(t, append(all, more...))
	if n := len(snapshot(t, p.rdb, p.gen)); n != 0 {
		t.Errorf("generation 1 still has %d keys after the switch", n)
	}
}

// An entry that a consumer group has not acked is never trimmed, nor is anything after
// it: a processor died holding a batch, and retention stops at that batch until the
// processor comes back and applies it. The totals stay exact throughout.
func TestRetentionKeepsUnackedEntries(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	p := newPipeline(t, rs)
	ctx := context.Background()
	a := randomEvents(31, 300, 20, 8)
	b := randomEvents(32, 100, 20, 8)
	c := randomEvents(33, 600, 20, 8)

	p.createGroup(t)
	p.xadd(t, a)
	if _, _, err := aggregate.NewApplier(p.rdb, p.keys, p.gen, "early", events.DefaultRetention).Apply(ctx, aggregate.Decode(p.readGroup(t, "early", 1000))); err != nil {
		t.Fatal(err)
	}
	bIDs := p.xadd(t, b)
	if got := p.readGroup(t, "down", 1000); len(got) != len(b) { // it dies holding b
		t.Fatalf("consumer down read %d entries, want %d", len(got), len(b))
	}
	p.xadd(t, c)
	env := map[string]string{"BATCH_SIZE": "100", "CLAIM_MIN_IDLE": "1h"}
	p.startProcessor(t, "live", env)
	waitFor(t, "live to apply c", func() bool {
		gs, err := p.rdb.XInfoGroups(ctx, p.keys.Stream()).Result()
		return err == nil && len(gs) == 1 && gs[0].Lag == 0 && gs[0].Pending == int64(len(b))
	})

	// A retention pass that finds every entry old enough folds a, and stops at b.
	ret := &Retention{rdb: p.rdb, keys: p.keys, holder: "test", logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		cfg: Config{Batch: 100, RedisTimeout: 5 * time.Second, Retention: time.Minute, StatsRetention: events.DefaultRetention}}
	retLock := generations.NewLock(p.rdb, p.keys.RetentionLock(), "test", 10*time.Second)
	folded, trimmed, err := ret.pass(ctx, retLock, time.Now().Add(time.Hour))
	if err != nil || folded != int64(len(a)) || trimmed != int64(len(a)) {
		t.Fatalf("retention pass folded %d and trimmed %d entries (%v), want %d and %d", folded, trimmed, err, len(a), len(a))
	}
	rest, err := p.rdb.XRange(ctx, p.keys.Stream(), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(rest) != len(b)+len(c) || rest[0].ID != bIDs[0] {
		t.Fatalf("after the pass the stream holds %d entries from %s, want %d from %s (the unacked ones and all after them)",
			len(rest), rest[0].ID, len(b)+len(c), bIDs[0])
	}
	if folded, _, err := ret.pass(ctx, retLock, time.Now().Add(time.Hour)); err != nil || folded != 0 {
		t.Errorf("a second pass folded %d entries (%v), want 0 while b is unacked", folded, err)
	}

	// The processor comes back under its name, re-reads its pending entries and applies
	// them; then everything can go.
	p.startProcessor(t, "down", env)
	p.waitDrained(t)
	all := append(append(append([]events.Event(nil), a...), b...), c...)
	p.assertTotals(t, all)
	folded, _, err = ret.pass(ctx, retLock, time.Now().Add(time.Hour))
	if n, _ := p.rdb.XLen(ctx, p.keys.Stream()).Result(); err != nil || folded != int64(len(b)+len(c)) || n != 0 {
		t.Errorf("last pass folded %d entries (%v) and left %d, want %d and 0", folded, err, n, len(b)+len(c))
	}

	// The rebuild, from the checkpoint alone, equals the live totals.
	live := snapshot(t, p.rdb, p.gen)
	out := &testlog.Buffer{}
	vars := map[string]string{"REDIS_URL": rs.URL(), "REDIS_NAMESPACE": p.ns}
	if err := run(ctx, []string{"processor", "rebuild"}, func(k string) string { return vars[k] }, out, out); err != nil {
		t.Fatalf("rebuild: %v\n%s", err, out)
	}
	if got := snapshot(t, p.rdb, p.keys.Gen(2)); !reflect.DeepEqual(got, live) {
		t.Errorf("rebuilt generation differs from the live one:\nrebuilt %v\nlive    %v\n%s", got, live, out)
	}
}

// waitFor polls cond, a bounded number of times, until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 2400 { // 2400 × 25ms: generous under -race on a busy machine
		if cond() {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("gave up waiting for %s", what)
}

// snapshot returns every aggregate of a generation (or of the checkpoint), by key
// relative to its prefix: each key's contents as a map (a hash's fields, a sorted
// set's members and scores). It reads every key the prefix matches, whatever its
// type, so that a new kind of aggregate is compared too, or fails the test until
// snapshot can read it.
func snapshot(t *testing.T, rdb *redis.Client, gen events.GenKeys) map[string]map[string]string {
	t.Helper()
	ctx := context.Background()
	prefix := strings.TrimSuffix(gen.Pattern(), "*")
	out := map[string]map[string]string{}
	iter := rdb.Scan(ctx, 0, gen.Pattern(), 1000).Iterator()
	for iter.Next(ctx) {
		key := iter.Val()
		if key == gen.ClaimEpoch() {
			continue // bookkeeping of claims, not a count
		}
		typ, err := rdb.Type(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		rel := strings.TrimPrefix(key, prefix)
		switch typ {
		case "zset":
			zs, err := rdb.ZRangeWithScores(ctx, key, 0, -1).Result()
			if err != nil {
				t.Fatal(err)
			}
			out[rel] = map[string]string{}
			for _, z := range zs {
				out[rel][z.Member.(string)] = strconv.FormatFloat(z.Score, 'f', -1, 64)
			}
		case "hash":
			h, err := rdb.HGetAll(ctx, key).Result()
			if err != nil {
				t.Fatal(err)
			}
			out[rel] = h
		case "string": // a HyperLogLog of users: its count (exact for the small sets of tests)
			n, err := rdb.PFCount(ctx, key).Result()
			if err != nil {
				t.Fatalf("snapshot: %s: %v", key, err)
			}
			out[rel] = map[string]string{"pfcount": strconv.FormatInt(n, 10)}
		default:
			t.Fatalf("snapshot: %s is a %s; teach snapshot to read it", key, typ)
		}
		// A time bucket expires at its own end plus its retention, wherever it was written.
		if at, err := rdb.PExpireTime(ctx, key).Result(); err != nil {
			t.Fatal(err)
		} else if at > 0 {
			out[rel]["(expires)"] = strconv.FormatInt(int64(at/time.Millisecond), 10)
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
