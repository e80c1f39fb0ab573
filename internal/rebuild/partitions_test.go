package rebuild

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/clickstream/pipeline/internal/testlog"
)

// RunAll rebuilds every partition, each into its own next generation, exact, and says
// so per partition and for all; a second RunAll while the first holds the lock is
// refused. A partition left unfinished (its rebuild failed) is the only one a later
// RunAll resumes.
func TestRunAllPartitions(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	l := events.NewLayout(redistest.Namespace(t), 3)
	want := make([]map[string]map[string]string, 3)
	for p, k := range l.Partitions() {
		want[p] = live(t, rdb, k)
	}
	out := &testlog.Buffer{}
	if err := RunAll(ctx, rdb, l, testConfig, out, discard()); err != nil {
		t.Fatalf("RunAll: %v\n%s", err, out)
	}
	for p, k := range l.Partitions() {
		var mine []string
		for line := range strings.Lines(out.String()) {
			if p, ok := strings.CutPrefix(line, fmt.Sprintf("partition %d: ", p)); ok {
				mine = append(mine, p)
			}
		}
		assertRebuilt(t, rdb, k, want[p], strings.Join(mine, ""))
	}
	if !strings.Contains(out.String(), "rebuild: 3 partitions: ") || !strings.Contains(out.String(), "rebuild: done: all 3 partitions rebuilt and switched") {
		t.Errorf("output:\n%s", out)
	}
	if n := rdb.Exists(ctx, RunAllLock(l)).Val(); n != 0 {
		t.Error("the lock over all partitions outlived the rebuild")
	}

	// Partition 1's next rebuild failed before it had seeded anything.
	k := l.Partition(1)
	rdb.HSet(ctx, k.RebuildState(), events.RebuildFieldState, events.RebuildStateFailed,
		events.RebuildFieldTarget, 3, events.RebuildFieldFrom, 2, events.RebuildFieldSeeded, 0)
	out = &testlog.Buffer{}
	if err := RunAll(ctx, rdb, l, testConfig, out, discard()); err != nil {
		t.Fatalf("RunAll resuming: %v\n%s", err, out)
	}
	if !strings.Contains(out.String(), "resuming the unfinished rebuild of partitions 1 of 3") {
		t.Errorf("output:\n%s", out)
	}
	for p, want := range []string{"2", "3", "2"} {
		if got := rdb.Get(ctx, l.Partition(p).Generation()).Val(); got != want {
			t.Errorf("partition %d: generation %s, want %s", p, got, want)
		}
	}

	rdb.Set(ctx, RunAllLock(l), "host:7:other", 0)
	if err := RunAll(ctx, rdb, l, testConfig, &testlog.Buffer{}, discard()); err == nil || !strings.Contains(err.Error(), "host:7:other") {
		t.Errorf("RunAll while another holds the lock: %v, want a refusal naming the holder", err)
	}
}

// On a cluster of three masters, a rebuild of six partitions rebuilds each on the
// master that holds it, exact, and removes every old generation (the keyspace scan
// reaches every master).
func TestRunAllOnCluster(t *testing.T) {
	t.Parallel()
	rdb := redistest.StartCluster(t, 3).Client()
	ctx := context.Background()
	l := events.NewLayout(redistest.Namespace(t), 6)
	want := make([]map[string]map[string]string, 6)
	for p, k := range l.Partitions() {
		want[p] = live(t, rdb, k)
	}
	out := &testlog.Buffer{}
	if err := RunAll(ctx, rdb, l, testConfig, out, discard()); err != nil {
		t.Fatalf("RunAll: %v\n%s", err, out)
	}
	for p, k := range l.Partitions() {
		assertRebuilt(t, rdb, k, want[p], strings.ReplaceAll(out.String(), fmt.Sprintf("partition %d: ", p), ""))
	}
}

// CancelAll discards every partition's unfinished rebuild and leaves the others alone.
func TestCancelAllPartitions(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	l := events.NewLayout(redistest.Namespace(t), 3)
	for p, k := range l.Partitions() {
		live(t, rdb, k)
		if p == 1 {
			continue
		}
		rdb.XGroupCreate(ctx, k.Stream(), k.Gen(2).Group(), "0")
		rdb.HSet(ctx, k.Gen(2).User("u1"), events.FieldClicks, 1)
		rdb.HSet(ctx, k.RebuildState(), events.RebuildFieldState, events.RebuildStateBuilding,
			events.RebuildFieldTarget, 2, events.RebuildFieldFrom, 1, events.RebuildFieldSeeded, 1)
	}
	out := &testlog.Buffer{}
	if err := CancelAll(ctx, rdb, l, testConfig, out, discard()); err != nil {
		t.Fatalf("CancelAll: %v\n%s", err, out)
	}
	for p, k := range l.Partitions() {
		groups, _ := rdb.XInfoGroups(ctx, k.Stream()).Result()
		if len(groups) != 1 || groups[0].Name != k.Gen(1).Group() {
			t.Errorf("partition %d: groups %+v, want only generation 1's", p, groups)
		}
		if left := scanKeys(t, rdb, k.Gen(2).Pattern()); len(left) != 0 {
			t.Errorf("partition %d: generation 2's keys left: %v", p, left)
		}
	}
	for _, want := range []string{"partition 0: rebuild: cancelled: generation 2 deleted", "partition 1: rebuild: nothing to cancel (idle)",
		"partition 2: rebuild: cancelled: generation 2 deleted"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
