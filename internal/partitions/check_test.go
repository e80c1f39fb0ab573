package partitions

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// A namespace keeps the partition count its events were written with: one partition
// writes nothing and runs on today's keys; the first process with more records its
// count; a process with another count is refused, with a message that names both counts
// and what to do.
func TestCheck(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	ns := redistest.Namespace(t)

	if err := Check(ctx, rdb, events.NewLayout(ns, 1)); err != nil {
		t.Fatalf("one partition on an empty namespace: %v", err)
	}
	if n := rdb.DBSize(ctx).Val(); n != 0 {
		t.Fatalf("one partition wrote %d keys, want none", n)
	}
	if err := Check(ctx, rdb, events.NewLayout(ns, 6)); err != nil {
		t.Fatalf("six partitions on an empty namespace: %v", err)
	}
	if v := rdb.Get(ctx, events.NewLayout(ns, 6).CountKey()).Val(); v != "6" {
		t.Fatalf("recorded count %q, want 6", v)
	}
	if err := Check(ctx, rdb, events.NewLayout(ns, 6)); err != nil {
		t.Fatalf("six partitions again: %v", err)
	}
	for _, n := range []int{1, 3} {
		err := Check(ctx, rdb, events.NewLayout(ns, n))
		if !errors.Is(err, ErrMismatch) {
			t.Fatalf("%d partitions where 6 are recorded: %v, want ErrMismatch", n, err)
		}
		for _, want := range []string{"STREAM_PARTITIONS=6 ({" + ns + "}:partitions)", "Start it with STREAM_PARTITIONS=6", "Scaling out"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%d partitions: %q does not say %q", n, err, want)
			}
		}
	}

	// A namespace used with one partition: its single stream holds events.
	old := redistest.Namespace(t) + "-old"
	rdb.XAdd(ctx, &redis.XAddArgs{Stream: events.NewKeys(old).Stream(), Values: []string{"u", "u1"}})
	if err := Check(ctx, rdb, events.NewLayout(old, 1)); err != nil {
		t.Errorf("one partition on a namespace written with one: %v", err)
	}
	err := Check(ctx, rdb, events.NewLayout(old, 6))
	if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "STREAM_PARTITIONS=1 ({"+old+"}:events)") {
		t.Errorf("six partitions on a namespace written with one: %v, want ErrMismatch naming its stream", err)
	}
	if n := rdb.Exists(ctx, events.NewLayout(old, 6).CountKey()).Val(); n != 0 {
		t.Error("the refused process recorded its count")
	}

	rdb.Set(ctx, events.NewLayout("bad-"+ns, 2).CountKey(), "x", 0)
	if err := Check(ctx, rdb, events.NewLayout("bad-"+ns, 2)); err == nil || errors.Is(err, ErrMismatch) {
		t.Errorf("a count key holding x: %v, want an error that is not ErrMismatch", err)
	}
}
