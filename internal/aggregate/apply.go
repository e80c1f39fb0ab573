package aggregate

import (
	"context"
	_ "embed"
	"fmt"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/redis/go-redis/v9"
)

//go:embed apply.lua
var applySource string

// applyScript checks, acks and applies a batch in one call; see apply.lua for why that
// makes redelivery harmless.
var applyScript = NewScript(applySource)

// Entry is a stream entry as the processor and a rebuild see it: decoded, or with the
// reason it could not be.
type Entry struct {
	ID     string
	Event  events.Event
	Bad    error    // set when the entry could not be decoded
	Fields []string // the raw field/value pairs, kept for the dead-letter stream
}

// Decode turns the messages of a read or a claim into entries. An entry trimmed from
// the stream while it was pending comes back with no fields: it has nothing to count
// and is acked. (Retention never trims an entry that is pending, see the processor's
// Retention.)
func Decode(msgs []redis.XMessage) []Entry {
	batch := make([]Entry, len(msgs))
	kv := make([]string, 0, 12)
	for i, m := range msgs {
		kv = kv[:0]
		for k, v := range m.Values {
			s, _ := v.(string)
			kv = append(kv, k, s)
		}
		batch[i].ID = m.ID
		batch[i].Event, batch[i].Bad = events.DecodeEntry(kv)
		if batch[i].Bad != nil {
			batch[i].Fields = append([]string(nil), kv...)
		}
	}
	return batch
}

// Applier sums a batch's increments per key and applies them with one script call,
// acking the batch in the same step: the processor's live apply and a rebuild's replay
// are both an Applier, each as its consumer of its generation's group. An Applier is
// used by one goroutine at a time; it reuses its buffers between batches.
type Applier struct {
	rdb      redis.UniversalClient
	keys     events.Keys
	gen      events.GenKeys
	consumer string

	inc   *Increments
	now   func() time.Time // which time buckets still exist
	kargs []string
	argv  []any
}

// NewApplier returns an Applier for one generation of aggregates, acting as consumer,
// whose time buckets are kept for keep.
func NewApplier(rdb redis.UniversalClient, keys events.Keys, gen events.GenKeys, consumer string, keep events.Retention) *Applier {
	return &Applier{rdb: rdb, keys: keys, gen: gen, consumer: consumer, inc: NewIncrements(gen, keep), now: time.Now}
}

// Apply acks every entry of batch and adds the increments of those that were still
// pending, exactly once. Dead-lettered entries (Bad set) are acked without increments.
// It returns how many entries were counted and how many were skipped because another
// consumer had already counted them. Apply may be retried after any error: the script
// is atomic, and a retry after a success finds nothing pending and adds nothing.
func (a *Applier) Apply(ctx context.Context, batch []Entry) (applied, skipped int64, err error) {
	return a.ApplyAt(ctx, batch, "")
}

// ApplyAt is Apply for a batch read right after the group's claim epoch was read as
// epoch: while the epoch is unchanged, the script can skip its ownership check.
func (a *Applier) ApplyAt(ctx context.Context, batch []Entry, epoch string) (applied, skipped int64, err error) {
	live := batch
	for len(live) > 0 {
		res, err := a.call(ctx, live, epoch)
		if err != nil {
			return 0, 0, fmt.Errorf("apply batch %s..%s: %w", batch[0].ID, batch[len(batch)-1].ID, err)
		}
		if owned, _ := res[0].(int64); owned == int64(len(live)) {
			for i := range live {
				if live[i].Bad == nil {
					applied++
				}
			}
			break
		}
		// Some entries were counted by another consumer: keep the pending ones only.
		pending := make(map[string]bool, len(res)-1)
		for _, id := range res[1:] {
			s, _ := id.(string)
			pending[s] = true
		}
		kept := make([]Entry, 0, len(pending))
		for _, e := range live {
			if pending[e.ID] {
				kept = append(kept, e)
			}
		}
		live = kept
		epoch = "" // the slow path from here on
	}
	return applied, int64(len(batch) - len(live)), nil
}

func (a *Applier) call(ctx context.Context, batch []Entry, epoch string) ([]any, error) {
	a.inc.Reset(a.now().UnixMilli())
	for i := range batch {
		if batch[i].Bad == nil {
			a.inc.Add(&batch[i].Event, batch[i].Event.Time(batch[i].ID))
		}
	}
	keys := append(a.kargs[:0], a.keys.Stream(), a.gen.ClaimEpoch())
	keys = append(keys, a.inc.Keys()...)
	lo, hi := idRange(batch)
	argv := append(a.argv[:0], a.gen.Group(), a.consumer, len(batch), lo, hi, epoch)
	for i := range batch {
		argv = append(argv, batch[i].ID)
	}
	argv = a.inc.AppendArgs(argv, 3)
	a.kargs, a.argv = keys, argv
	return applyScript.Run(ctx, a.rdb, keys, argv...).Slice()
}

// idRange returns the smallest and largest entry id of a non-empty batch.
func idRange(batch []Entry) (lo, hi string) {
	lo, hi = batch[0].ID, batch[0].ID
	for i := range batch[1:] {
		id := batch[i+1].ID
		if events.CompareIDs(id, lo) < 0 {
			lo = id
		}
		if events.CompareIDs(id, hi) > 0 {
			hi = id
		}
	}
	return lo, hi
}
