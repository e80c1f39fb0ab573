package aggregate

import (
	"context"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// applyStream is one test's stream with generation 1's group on it.
type applyStream struct {
	rdb  *redis.Client
	keys events.Keys
	gen  events.GenKeys
}

func newApplyStream(t *testing.T, rs *redistest.Server) *applyStream {
	t.Helper()
	s := &applyStream{rdb: rs.Client(), keys: events.NewKeys(redistest.Namespace(t))}
	s.gen = s.keys.Gen(1)
	if err := s.rdb.XGroupCreateMkStream(context.Background(), s.keys.Stream(), s.gen.Group(), "0").Err(); err != nil {
		t.Fatal(err)
	}
	return s
}

// add appends entries with the given fields, as ingest writes them.
func (s *applyStream) add(t *testing.T, entries ...[]any) {
	t.Helper()
	pipe := s.rdb.Pipeline()
	for _, kv := range entries {
		pipe.XAdd(context.Background(), &redis.XAddArgs{Stream: s.keys.Stream(), Values: kv})
	}
	if _, err := pipe.Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// read reads up to 1000 new entries as consumer.
func (s *applyStream) read(t *testing.T, consumer string) []redis.XMessage {
	t.Helper()
	res, err := s.rdb.XReadGroup(context.Background(), &redis.XReadGroupArgs{
		Group: s.gen.Group(), Consumer: consumer, Streams: []string{s.keys.Stream(), ">"}, Count: 1000, Block: -1,
	}).Result()
	if err != nil {
		t.Fatal(err)
	}
	return res[0].Messages
}

func (s *applyStream) pending(t *testing.T) int64 {
	t.Helper()
	p, err := s.rdb.XPending(context.Background(), s.keys.Stream(), s.gen.Group()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return p.Count
}

// assertCountedOnce checks that generation 1 holds exactly what one application of
// the batch's increments writes (every key, its contents and its expiry), by writing
// them once into generation 2 with the increments block alone, no group involved.
func (s *applyStream) assertCountedOnce(t *testing.T, batch []Entry) {
	t.Helper()
	once := s.keys.Gen(2)
	in := NewIncrements(once, events.DefaultRetention)
	in.Reset(time.Now().UnixMilli())
	for i := range batch {
		if batch[i].Bad == nil {
			in.Add(&batch[i].Event, batch[i].Event.Time(batch[i].ID))
		}
	}
	script := NewScript("#!lua\napply_increments(1)\nreturn 1\n")
	if err := script.Run(context.Background(), s.rdb, in.Keys(), in.AppendArgs(nil, 1)...).Err(); err != nil {
		t.Fatal(err)
	}
	got, want := relative(dumpWithExpiry(t, s.rdb, s.gen.Prefix()), s.gen), relative(dumpWithExpiry(t, s.rdb, once.Prefix()), once)
	delete(got, "claims") // the group's claim epoch, which only the apply has
	if len(want) == 0 || !reflect.DeepEqual(got, want) {
		t.Errorf("generation 1:\n%v\nwant what one application of the batch writes:\n%v", got, want)
	}
}

// relative names a dump's keys without the generation's prefix.
func relative(dump map[string]map[string]string, gen events.GenKeys) map[string]map[string]string {
	out := make(map[string]map[string]string, len(dump))
	for k, v := range dump {
		out[strings.TrimPrefix(k, gen.Prefix())] = v
	}
	return out
}

// randomEntries returns the fields of n events of every type over a few users and
// products, so that a batch sums several events into each key.
func randomEntries(seed uint64, n int) [][]any {
	r := rand.New(rand.NewPCG(seed, 42))
	out := make([][]any, n)
	for i := range out {
		ev := events.Event{UserID: "u" + strconv.Itoa(r.IntN(7)), ProductID: "p" + strconv.Itoa(r.IntN(5))}
		switch x := r.IntN(10); {
		case x < 5:
			ev.Type = events.Click
		case x < 8:
			ev.Type = events.PageView
		default:
			ev.Type = events.Dwell
			ev.DurationMs = 1 + r.Int64N(events.MaxDurationMs)
		}
		out[i] = ev.AppendFields(nil)
	}
	return out
}

// A batch applied again (a retry after a lost reply, a redelivery) adds nothing: the
// keys hold what one application writes, and the second Apply reports every entry as
// skipped.
func TestApplyTwiceCountsOnce(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	ctx := context.Background()

	t.Run("whole batch", func(t *testing.T) {
		t.Parallel()
		s := newApplyStream(t, rs)
		evs := randomEntries(1, 500)
		s.add(t, evs[:250]...)
		s.add(t, []any{"foo", "bar"}) // a dead-lettered entry is acked, never counted
		s.add(t, evs[250:]...)
		batch := Decode(s.read(t, "c1"))
		if len(batch) != 501 || batch[250].Bad == nil {
			t.Fatalf("read %d entries (the 251st undecodable: %v), want 501", len(batch), batch[250].Bad)
		}

		a := NewApplier(s.rdb, s.keys, s.gen, "c1", events.DefaultRetention)
		applied, skipped, err := a.Apply(ctx, batch)
		if err != nil || applied != 500 || skipped != 0 {
			t.Fatalf("first Apply = %d applied, %d skipped, %v; want 500, 0, nil", applied, skipped, err)
		}
		if n := s.pending(t); n != 0 {
			t.Errorf("%d entries pending after Apply, want 0", n)
		}

		applied, skipped, err = a.Apply(ctx, batch)
		if err != nil || applied != 0 || skipped != int64(len(batch)) {
			t.Errorf("second Apply = %d applied, %d skipped, %v; want 0, %d, nil", applied, skipped, err, len(batch))
		}
		// Another consumer's Applier (a claimed copy) adds nothing either.
		applied, skipped, err = NewApplier(s.rdb, s.keys, s.gen, "c2", events.DefaultRetention).Apply(ctx, batch)
		if err != nil || applied != 0 || skipped != int64(len(batch)) {
			t.Errorf("Apply by another consumer = %d applied, %d skipped, %v; want 0, %d, nil", applied, skipped, err, len(batch))
		}
		s.assertCountedOnce(t, batch)
	})

	t.Run("batch partly applied before", func(t *testing.T) {
		t.Parallel()
		s := newApplyStream(t, rs)
		s.add(t, randomEntries(2, 400)...)
		batch := Decode(s.read(t, "c1"))
		a := NewApplier(s.rdb, s.keys, s.gen, "c1", events.DefaultRetention)
		// Every third entry was applied already, e.g. by a consumer that claimed them.
		var some []Entry
		for i := 0; i < len(batch); i += 3 {
			some = append(some, batch[i])
		}
		applied, skipped, err := a.Apply(ctx, some)
		if err != nil || applied != int64(len(some)) || skipped != 0 {
			t.Fatalf("Apply of a third = %d applied, %d skipped, %v; want %d, 0, nil", applied, skipped, err, len(some))
		}
		applied, skipped, err = a.Apply(ctx, batch)
		if err != nil || applied != int64(len(batch)-len(some)) || skipped != int64(len(some)) {
			t.Errorf("Apply of the whole batch = %d applied, %d skipped, %v; want %d, %d, nil",
				applied, skipped, err, len(batch)-len(some), len(some))
		}
		s.assertCountedOnce(t, batch)
		if n := s.pending(t); n != 0 {
			t.Errorf("%d entries pending, want 0", n)
		}
	})
}

// Consumer A reads a batch; consumer B claims the same entries (A looked dead); both
// apply. Each entry is counted once, whoever gets there first.
func TestClaimedEntriesCountOnce(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	ctx := context.Background()

	for _, order := range []string{"A first", "B first", "concurrently"} {
		t.Run(order, func(t *testing.T) {
			t.Parallel()
			s := newApplyStream(t, rs)
			s.add(t, randomEntries(3, 300)...)
			msgs := s.read(t, "A")
			ids := make([]string, len(msgs))
			for i, m := range msgs {
				ids[i] = m.ID
			}
			claimed, err := s.rdb.XClaim(ctx, &redis.XClaimArgs{
				Stream: s.keys.Stream(), Group: s.gen.Group(), Consumer: "B", MinIdle: 0, Messages: ids,
			}).Result()
			if err != nil || len(claimed) != len(msgs) {
				t.Fatalf("XCLAIM by B: %d entries, %v; want %d", len(claimed), err, len(msgs))
			}
			batchA, batchB := Decode(msgs), Decode(claimed)
			a := NewApplier(s.rdb, s.keys, s.gen, "A", events.DefaultRetention)
			b := NewApplier(s.rdb, s.keys, s.gen, "B", events.DefaultRetention)

			type result struct{ applied, skipped int64 }
			var ra, rb result
			var errA, errB error
			switch order {
			case "A first":
				ra.applied, ra.skipped, errA = a.Apply(ctx, batchA)
				rb.applied, rb.skipped, errB = b.Apply(ctx, batchB)
			case "B first":
				rb.applied, rb.skipped, errB = b.Apply(ctx, batchB)
				ra.applied, ra.skipped, errA = a.Apply(ctx, batchA)
			default:
				var wg sync.WaitGroup
				wg.Add(2)
				go func() { defer wg.Done(); ra.applied, ra.skipped, errA = a.Apply(ctx, batchA) }()
				go func() { defer wg.Done(); rb.applied, rb.skipped, errB = b.Apply(ctx, batchB) }()
				wg.Wait()
			}
			if errA != nil || errB != nil {
				t.Fatalf("Apply: A %v, B %v", errA, errB)
			}
			n := int64(len(msgs))
			if ra.applied+rb.applied != n || ra.skipped+rb.skipped != n {
				t.Errorf("A %+v, B %+v: want applied and skipped each to add up to %d", ra, rb, n)
			}
			s.assertCountedOnce(t, batchA)
			if n := s.pending(t); n != 0 {
				t.Errorf("%d entries pending, want 0", n)
			}
		})
	}
}
