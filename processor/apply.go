package main

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"

	"github.com/clickstream/pipeline/events"
	"github.com/redis/go-redis/v9"
)

//go:embed apply.lua
var applySource string

// applyScript acks and applies a batch in one call; see apply.lua for why that makes
// redelivery harmless.
var applyScript = redis.NewScript(applySource)

// Entry is a stream entry as the processor sees it: decoded, or with the reason it
// could not be.
type Entry struct {
	ID     string
	Event  events.Event
	Bad    error    // set when the entry could not be decoded
	Fields []string // the raw field/value pairs, kept for the dead-letter stream
}

// Applier builds and runs the apply script call for a batch.
type Applier struct {
	rdb  redis.UniversalClient
	keys events.Keys
	gen  events.GenKeys

	// Reused between batches: a batch is applied by one goroutine at a time.
	index map[string]int
	kargs []string
	argv  []any
}

// NewApplier returns an Applier for one generation of aggregates.
func NewApplier(rdb redis.UniversalClient, keys events.Keys, gen events.GenKeys) *Applier {
	return &Applier{rdb: rdb, keys: keys, gen: gen, index: make(map[string]int)}
}

// Apply acks every entry of batch and adds the increments of those that were still
// pending. Dead-lettered entries (Bad set) are acked without increments. It returns
// how many entries were applied and how many were skipped because another consumer
// had already applied them. Apply may be retried after any error: the script is
// atomic, and a retry after a success only acks nothing and adds nothing.
func (a *Applier) Apply(ctx context.Context, batch []Entry) (applied, skipped int64, err error) {
	if len(batch) == 0 {
		return 0, 0, nil
	}
	clear(a.index)
	keys := append(a.kargs[:0], a.keys.Stream(), a.gen.TopProducts())
	// Users first, then products, so the script knows which keys feed the ranking.
	for i := range batch {
		if batch[i].Bad == nil {
			keys = a.keyIndex(keys, a.gen.User(batch[i].Event.UserID))
		}
	}
	firstProduct := len(keys) + 1
	for i := range batch {
		if batch[i].Bad == nil {
			keys = a.keyIndex(keys, a.gen.Product(batch[i].Event.ProductID))
		}
	}
	argv := append(a.argv[:0], a.gen.Group(), len(a.gen.ProductPrefix()), firstProduct)
	for i := range batch {
		e := &batch[i]
		if e.Bad != nil {
			argv = append(argv, e.ID, 0, 0, "")
			continue
		}
		u := a.index[a.gen.User(e.Event.UserID)]
		p := a.index[a.gen.Product(e.Event.ProductID)]
		var code any
		switch e.Event.Type {
		case events.Click:
			code = "c"
		case events.PageView:
			code = "v"
		default:
			code = strconv.FormatInt(e.Event.DurationMs, 10)
		}
		argv = append(argv, e.ID, u, p, code)
	}
	a.kargs, a.argv = keys, argv
	res, err := applyScript.Run(ctx, a.rdb, keys, argv...).Int64Slice()
	if err != nil {
		return 0, 0, fmt.Errorf("apply batch %s..%s: %w", batch[0].ID, batch[len(batch)-1].ID, err)
	}
	return res[0], res[1], nil
}

// keyIndex appends key to keys unless it is there already, remembering its 1-based
// position (Lua's KEYS index).
func (a *Applier) keyIndex(keys []string, key string) []string {
	if _, ok := a.index[key]; ok {
		return keys
	}
	keys = append(keys, key)
	a.index[key] = len(keys)
	return keys
}
