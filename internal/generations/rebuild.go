package generations

import (
	"context"
	"errors"
	"strconv"

	"github.com/clickstream/pipeline/events"
	"github.com/redis/go-redis/v9"
)

// Rebuild is the last rebuild as `processor rebuild` records it in the RebuildState
// hash; the zero value (State "") is no rebuild ever run.
type Rebuild struct {
	State      string // one of the events.RebuildState* values
	Target     int64  // the generation it builds
	From       int64  // the generation that was current when it began
	Seeded     bool   // the checkpoint is copied and the new group created
	Applied    int64  // entries replayed into Target so far
	Rate       int64  // entries per second at the last progress report
	ETASeconds int64  // -1 when unknown
	StartedAt  string // RFC 3339
	UpdatedAt  string // RFC 3339
	Error      string
}

// ParseRebuild reads the fields of the RebuildState hash. A field that is missing or
// not a number reads as 0 (ETASeconds as -1): the hash is written by one program, and
// a rebuild that died between two writes leaves some fields older than others, never
// a wrong type.
func ParseRebuild(m map[string]string) Rebuild {
	num := func(f string) int64 {
		n, _ := strconv.ParseInt(m[f], 10, 64)
		return n
	}
	r := Rebuild{
		State: m[events.RebuildFieldState], Target: num(events.RebuildFieldTarget), From: num(events.RebuildFieldFrom),
		Seeded: m[events.RebuildFieldSeeded] == "1", Applied: num(events.RebuildFieldApplied),
		Rate: num(events.RebuildFieldRate), ETASeconds: -1,
		StartedAt: m[events.RebuildFieldStarted], UpdatedAt: m[events.RebuildFieldUpdated], Error: m[events.RebuildFieldError],
	}
	if eta, err := strconv.ParseInt(m[events.RebuildFieldETA], 10, 64); err == nil && eta >= 0 {
		r.ETASeconds = eta
	}
	return r
}

// Unfinished reports whether r is a rebuild that has not switched yet, cur being the
// current generation: one that `processor rebuild` resumes and `--cancel` discards.
func (r Rebuild) Unfinished(cur int64) bool {
	switch r.State {
	case events.RebuildStateBuilding, events.RebuildStateSwitching, events.RebuildStateFailed:
		return r.Target > cur
	}
	return false
}

// RebuildCmds are the reads QueueRebuild put on a pipeline.
type RebuildCmds struct {
	state *redis.MapStringStringCmd
	ptr   *redis.StringCmd
}

// QueueRebuild queues the reads of the rebuild's state and of the pointer on pipe, so
// that they share a round trip with the caller's own reads. Call Result after Exec.
func QueueRebuild(ctx context.Context, pipe redis.Pipeliner, keys events.Keys) *RebuildCmds {
	return &RebuildCmds{state: pipe.HGetAll(ctx, keys.RebuildState()), ptr: pipe.Get(ctx, keys.Generation())}
}

// Err returns the first Redis error of the reads; a missing pointer is none.
func (c *RebuildCmds) Err() error {
	for _, err := range []error{c.state.Err(), c.ptr.Err()} {
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
	}
	return nil
}

// Result returns the rebuild's state and the current generation.
func (c *RebuildCmds) Result() (Rebuild, int64, error) {
	if err := c.Err(); err != nil {
		return Rebuild{}, 0, err
	}
	cur, err := events.ParseGeneration(c.ptr.Val())
	if err != nil {
		return Rebuild{}, 0, err
	}
	return ParseRebuild(c.state.Val()), cur, nil
}
