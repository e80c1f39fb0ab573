package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/aggregate"
	"github.com/clickstream/pipeline/internal/lag"
	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/clickstream/pipeline/internal/testlog"
	"github.com/redis/go-redis/v9"
)

// runProcessorAt runs the whole processor in-process against the Redis (or cluster) at
// url, as consumer name of namespace ns, and returns its metrics address and stop.
func runProcessorAt(t *testing.T, url, ns, name string, env map[string]string) (addr string, stop func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{"REDIS_URL": url, "REDIS_NAMESPACE": ns, "CONSUMER_NAME": name, "READ_BLOCK": "100ms"}
	for k, v := range env {
		vars[k] = v
	}
	logs := &testlog.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runWith(ctx, func(k string) string { return vars[k] }, logs, ln) }()
	var once sync.Once
	var result error
	stop = func() error {
		once.Do(func() { cancel(); result = <-done })
		return result
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("processor %s: runWith returned %v after its context was cancelled, want nil", name, err)
		}
		if t.Failed() {
			t.Logf("processor %s log:\n%s", name, logs.String())
		}
	})
	return ln.Addr().String(), stop
}

// byPartition splits evs by their user's partition.
func byPartition(l events.Layout, evs []events.Event) [][]events.Event {
	out := make([][]events.Event, l.Count())
	for _, ev := range evs {
		p := l.PartitionOf(ev.UserID)
		out[p] = append(out[p], ev)
	}
	return out
}

// xaddTo appends evs to partition k's stream, as ingest writes them.
func xaddTo(t *testing.T, rdb redis.UniversalClient, k events.Keys, evs []events.Event) {
	t.Helper()
	pipe := rdb.Pipeline()
	for i := range evs {
		pipe.XAdd(context.Background(), &redis.XAddArgs{Stream: k.Stream(), Values: evs[i].AppendFields(nil)})
	}
	if _, err := pipe.Exec(context.Background()); err != nil {
		t.Fatalf("XADD to %s: %v", k.Stream(), err)
	}
}

// waitPartitionsDrained waits until every partition's group has been delivered every
// entry and holds none pending.
func waitPartitionsDrained(t *testing.T, rdb redis.UniversalClient, l events.Layout) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for _, k := range l.Partitions() {
		for {
			s, groups, err := lag.Read(context.Background(), rdb, k.Stream())
			drained := false
			for _, g := range groups {
				if g.Name == k.Gen(1).Group() {
					drained = g.Pending == 0 && lag.Of(s, g) == 0
				}
			}
			if err == nil && drained {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("partition %d never drained: %+v %v", k.Partition(), groups, err)
			}
			time.Sleep(25 * time.Millisecond)
		}
	}
}

// With STREAM_PARTITIONS=4, every processor serves every partition: each is a member
// of every partition's group, the partitions' entries are counted exactly into their
// own partition's aggregates, a poison entry goes to its own partition's dead-letter
// stream, and the counters carry a partition label.
func TestEveryProcessorServesEveryPartition(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	ns := redistest.Namespace(t)
	l := events.NewLayout(ns, 4)
	env := map[string]string{"STREAM_PARTITIONS": "4"}
	addr, _ := runProcessorAt(t, rs.URL(), ns, "proc-a", env)
	runProcessorAt(t, rs.URL(), ns, "proc-b", env)
	rdb := rs.Client()
	evs := randomEvents(7, 4000, 40, 20)
	parts := byPartition(l, evs)
	waitGroups(t, rdb, l)
	for p, k := range l.Partitions() {
		xaddTo(t, rdb, k, parts[p])
	}
	if _, err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: l.Partition(2).Stream(), Values: []string{"u", "x", "k", "?"}}).Result(); err != nil {
		t.Fatal(err)
	}
	waitPartitionsDrained(t, rdb, l)
	for p, k := range l.Partitions() {
		pl := &pipeline{rs: rs, rdb: rdb, ns: ns, keys: k, gen: k.Gen(1)}
		pl.assertTotals(t, parts[p])
		consumers, err := rdb.XInfoConsumers(context.Background(), k.Stream(), k.Gen(1).Group()).Result()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, c := range consumers {
			names = append(names, c.Name)
		}
		if len(names) != 2 {
			t.Errorf("partition %d: consumers %v, want proc-a and proc-b", p, names)
		}
		dl := rdb.XLen(context.Background(), k.DeadLetter()).Val()
		if want := map[bool]int64{true: 1}[p == 2]; dl != want {
			t.Errorf("partition %d: %d dead letters, want %d", p, dl, want)
		}
	}
	body := scrape(t, addr)
	for _, want := range []string{`processor_events_applied_total{partition="2"}`, `stream_length{partition="3"}`,
		`consumer_group_lag{group="aggregator-g1",partition="0"} 0`} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// waitGroups waits until the processors have created every partition's group, so that
// entries added next are delivered to it.
func waitGroups(t *testing.T, rdb redis.UniversalClient, l events.Layout) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, k := range l.Partitions() {
		for {
			groups, err := rdb.XInfoGroups(context.Background(), k.Stream()).Result()
			if err == nil && len(groups) > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("partition %d: no group after 30 s: %v", k.Partition(), err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// On a cluster of three masters with six partitions, entries that a consumer read and
// left pending (it died) in every partition are claimed by a live processor and
// counted once, each in its partition, on the master that holds it; the processor
// stops cleanly.
func TestClaimsPerPartitionOnCluster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 3)
	ctx := context.Background()
	rdb := c.Client()
	ns := redistest.Namespace(t)
	l := events.NewLayout(ns, 6)
	evs := randomEvents(11, 3000, 200, 15)
	parts := byPartition(l, evs)
	// The dead consumer's share: every partition's group exists before the first entry,
	// and the dead one reads a batch of each and never acks it.
	for p, k := range l.Partitions() {
		if err := rdb.XGroupCreateMkStream(ctx, k.Stream(), k.Gen(1).Group(), "0").Err(); err != nil {
			t.Fatal(err)
		}
		xaddTo(t, rdb, k, parts[p])
		if err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: k.Gen(1).Group(), Consumer: "dead", Streams: []string{k.Stream(), ">"}, Count: 50}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// The processor records its partition count; the groups made above are not events.
	rdb.Set(ctx, l.CountKey(), 6, 0)
	_, stop := runProcessorAt(t, c.URL(), ns, "live", map[string]string{"STREAM_PARTITIONS": "6", "CLAIM_MIN_IDLE": "200ms"})
	waitPartitionsDrained(t, rdb, l)
	if err := stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
	for p, k := range l.Partitions() {
		want := map[string]aggregate.Totals{}
		for i := range parts[p] {
			tot := want[parts[p][i].UserID]
			tot.Add(&parts[p][i])
			want[parts[p][i].UserID] = tot
		}
		for user, w := range want {
			got := aggregate.ParseTotals(rdb.HMGet(ctx, k.Gen(1).User(user), aggregate.Fields...).Val())
			if got != w {
				t.Errorf("partition %d, user %s: %+v, want %+v", p, user, got, w)
			}
		}
		node := c.NodeFor(k.Stream())
		if n := node.Client().Exists(ctx, k.Gen(1).User(parts[p][0].UserID)).Val(); n != 1 {
			t.Errorf("partition %d: its aggregates are not on the master of its stream %s", p, node.Addr())
		}
	}
	products := map[string]int64{}
	for _, k := range l.Partitions() {
		for _, z := range rdb.ZRangeWithScores(ctx, k.Gen(1).TopProducts(), 0, -1).Val() {
			products[z.Member.(string)] += int64(z.Score)
		}
	}
	wantClicks := map[string]int64{}
	for _, ev := range evs {
		if ev.Type == events.Click {
			wantClicks[ev.ProductID]++
		}
	}
	if fmt.Sprint(products) != fmt.Sprint(wantClicks) {
		t.Errorf("clicks per product summed over the partitions %v, want %v", products, wantClicks)
	}
}

// With several partitions, retention folds and trims every partition's stream into its
// own checkpoint, and `processor rebuild` of all partitions, each from its checkpoint and
// what is left of its stream, equals the live totals key for key.
func TestRetentionAndRebuildPerPartition(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	rdb := rs.Client()
	ctx := context.Background()
	ns := redistest.Namespace(t)
	l := events.NewLayout(ns, 3)
	env := map[string]string{"STREAM_PARTITIONS": "3", "BATCH_SIZE": "200", "STREAM_RETENTION": "1s"}
	runProcessorAt(t, rs.URL(), ns, "proc", env)
	waitGroups(t, rdb, l)
	parts := byPartition(l, randomEvents(31, 3000, 30, 12))
	for p, k := range l.Partitions() {
		xaddTo(t, rdb, k, parts[p])
	}
	waitPartitionsDrained(t, rdb, l)
	for p, k := range l.Partitions() {
		waitFor(t, "partition "+strconv.Itoa(p)+"'s stream to be trimmed", func() bool {
			n, err := rdb.XLen(ctx, k.Stream()).Result()
			return err == nil && n == 0
		})
		if got := rdb.HGet(ctx, k.CheckpointInfo(), events.CheckpointFieldEntries).Val(); got != strconv.Itoa(len(parts[p])) {
			t.Errorf("partition %d: checkpoint holds %s entries, want %d", p, got, len(parts[p]))
		}
	}
	recent := byPartition(l, randomEvents(32, 600, 30, 12))
	for p, k := range l.Partitions() {
		xaddTo(t, rdb, k, recent[p])
	}
	waitPartitionsDrained(t, rdb, l)
	live := make([]map[string]map[string]string, 3)
	for p, k := range l.Partitions() {
		live[p] = snapshot(t, rdb, k.Gen(1))
	}
	out := &testlog.Buffer{}
	vars := map[string]string{"REDIS_URL": rs.URL(), "REDIS_NAMESPACE": ns, "STREAM_PARTITIONS": "3", "BATCH_SIZE": "200"}
	if err := run(ctx, []string{"processor", "rebuild"}, func(k string) string { return vars[k] }, out, out); err != nil {
		t.Fatalf("rebuild: %v\n%s", err, out)
	}
	for p, k := range l.Partitions() {
		if got := snapshot(t, rdb, k.Gen(2)); !reflect.DeepEqual(got, live[p]) {
			t.Errorf("partition %d: rebuilt generation differs from the live one:\nrebuilt %v\nlive    %v", p, got, live[p])
		}
	}
	if !strings.Contains(out.String(), "partition 2: rebuild: copied the checkpoint") {
		t.Errorf("partition 2 was not rebuilt from its checkpoint:\n%s", out)
	}
}
