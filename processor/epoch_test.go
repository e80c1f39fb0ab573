package main

import (
	"context"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/aggregate"
	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// A batch read before a claim must not take the unchecked path: the claim may have
// moved its entries to a consumer that counts them.
func TestClaimAfterReadForcesTheCheckedPath(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	ctx := context.Background()
	p := newPipeline(t, rs)
	evs := randomEvents(11, 400, 12, 7)
	p.createGroup(t)
	p.xadd(t, evs)

	msgs, epoch, err := readBatch(ctx, p.rdb, p.gen, &redis.XReadGroupArgs{
		Group: p.gen.Group(), Consumer: "A", Streams: []string{p.keys.Stream(), ">"}, Count: 1000, Block: -1,
	})
	if err != nil || len(msgs) != len(evs) {
		t.Fatalf("readBatch: %d entries, %v", len(msgs), err)
	}
	claimed, next, err := claimPending(ctx, p.rdb, p.gen, p.keys.Stream(), "B", 0, "0-0", 1000)
	if err != nil || len(claimed) != len(evs) || next != "0-0" {
		t.Fatalf("claimPending: %d entries, next %q, %v", len(claimed), next, err)
	}
	a := aggregate.NewApplier(p.rdb, p.keys, p.gen, "A", events.DefaultRetention)
	b := aggregate.NewApplier(p.rdb, p.keys, p.gen, "B", events.DefaultRetention)
	applied, skipped, err := a.ApplyAt(ctx, aggregate.Decode(msgs), epoch)
	if err != nil || applied != 0 || skipped != int64(len(evs)) {
		t.Fatalf("A applied %d, skipped %d, %v; want 0, %d (B owns the entries now)", applied, skipped, err, len(evs))
	}
	applied, skipped, err = b.Apply(ctx, aggregate.Decode(claimed))
	if err != nil || applied != int64(len(evs)) || skipped != 0 {
		t.Fatalf("B applied %d, skipped %d, %v; want %d, 0", applied, skipped, err, len(evs))
	}
	p.assertTotals(t, evs)
}

// The unchecked path counts a batch read since the last claim, exactly once.
func TestUnchangedEpochAppliesOnce(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	ctx := context.Background()
	p := newPipeline(t, rs)
	evs := randomEvents(12, 300, 9, 5)
	p.createGroup(t)
	p.xadd(t, evs)
	// An earlier claim: the epoch exists and is not zero.
	if _, _, err := claimPending(ctx, p.rdb, p.gen, p.keys.Stream(), "B", time.Hour, "0-0", 10); err != nil {
		t.Fatal(err)
	}
	msgs, epoch, err := readBatch(ctx, p.rdb, p.gen, &redis.XReadGroupArgs{
		Group: p.gen.Group(), Consumer: "A", Streams: []string{p.keys.Stream(), ">"}, Count: 1000, Block: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	a := aggregate.NewApplier(p.rdb, p.keys, p.gen, "A", events.DefaultRetention)
	applied, skipped, err := a.ApplyAt(ctx, aggregate.Decode(msgs), epoch)
	if err != nil || applied != int64(len(evs)) || skipped != 0 {
		t.Fatalf("applied %d, skipped %d, %v; want %d, 0", applied, skipped, err, len(evs))
	}
	// A retry adds nothing, on the checked path (as the consumer's retries go) and even
	// with the same epoch.
	if applied, skipped, err = a.Apply(ctx, aggregate.Decode(msgs)); err != nil || applied != 0 || skipped != int64(len(evs)) {
		t.Fatalf("retry applied %d, skipped %d, %v; want 0, %d", applied, skipped, err, len(evs))
	}
	if applied, skipped, err = a.ApplyAt(ctx, aggregate.Decode(msgs), epoch); err != nil || applied != 0 || skipped != int64(len(evs)) {
		t.Fatalf("retry with the epoch applied %d, skipped %d, %v; want 0, %d", applied, skipped, err, len(evs))
	}
	p.assertTotals(t, evs)
	if n := p.pendingFor(t, ""); n != 0 {
		t.Errorf("%d entries pending, want 0", n)
	}
}

// A processor restarted under the same CONSUMER_NAME first counts what its earlier
// run left pending (in several reads), then goes on to new entries.
func TestRestartUnderSameNameCountsItsPendingEntries(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	p := newPipeline(t, rs)
	first := randomEvents(13, 250, 10, 6)
	p.createGroup(t)
	p.xadd(t, first)
	if got := len(p.readGroup(t, "fixed", 1000)); got != len(first) {
		t.Fatalf("read %d entries as the earlier run, want %d", got, len(first))
	}
	stop := p.startProcessor(t, "fixed", map[string]string{"BATCH_SIZE": "100", "CLAIM_MIN_IDLE": "1h"})
	second := randomEvents(14, 120, 10, 6)
	p.xadd(t, second)
	p.waitDrained(t)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	p.assertTotals(t, append(first, second...))
}
