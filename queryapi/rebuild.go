package main

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/generations"
	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"
)

// RebuildStatus is the progress of the last rebuild (`processor rebuild`), as it
// recorded it, and the generation queries are answered from.
type RebuildStatus struct {
	// State is idle (no rebuild ever ran), building, switching, cleanup (switched; the
	// old generation's keys are being removed), done, failed or cancelled. A rebuild
	// whose process is gone (its lock expired) is reported as failed.
	State             string `json:"state"`
	Generation        int64  `json:"generation"` // the generation the rebuild builds; the current one when none ever ran
	CurrentGeneration int64  `json:"current_generation"`
	Applied           int64  `json:"applied"`       // entries replayed into it so far
	StreamLength      int64  `json:"stream_length"` // the stream's length now
	Rate              int64  `json:"rate"`          // entries per second, at the last progress report
	ETASeconds        *int64 `json:"eta_seconds"`   // null when unknown or not building
	StartedAt         string `json:"started_at"`
	UpdatedAt         string `json:"updated_at"`
	Error             string `json:"error"`
	// With several partitions: each partition's own, and the fields above over all of
	// them (see rebuildOverAll).
	Partition  *int            `json:"partition,omitempty"`
	Partitions []RebuildStatus `json:"partitions,omitempty"`
}

func (h *handler) rebuild(c echo.Context) error {
	ctx, cancel := h.ctx(c)
	defer cancel()
	parts := h.layout.Partitions()
	pipe := h.rdb.Pipeline()
	cmds := make([]rebuildCmds, len(parts))
	for i, k := range parts {
		cmds[i] = rebuildCmds{rb: generations.QueueRebuild(ctx, pipe, k), xlen: pipe.XLen(ctx, k.Stream()), lock: pipe.Exists(ctx, k.RebuildLock())}
	}
	pipe.Exec(ctx) // errors are per command, below
	sts := make([]RebuildStatus, len(parts))
	for i := range parts {
		st, err := cmds[i].status()
		if err != nil {
			if !errors.Is(err, errBadState) {
				h.redisErrors.Inc()
			}
			return err
		}
		sts[i] = st
	}
	if len(parts) == 1 {
		return c.JSON(http.StatusOK, sts[0])
	}
	return c.JSON(http.StatusOK, rebuildOverAll(sts))
}

// rebuildCmds are the reads of one partition's rebuild state.
type rebuildCmds struct {
	rb   *generations.RebuildCmds
	xlen *redis.IntCmd
	lock *redis.IntCmd
}

// errBadState wraps a state that Redis returned but that cannot be read.
var errBadState = errors.New("unreadable rebuild state")

func (cmds rebuildCmds) status() (RebuildStatus, error) {
	rb, xlen, lock := cmds.rb, cmds.xlen, cmds.lock
	for _, err := range []error{rb.Err(), xlen.Err(), lock.Err()} {
		if err != nil && !errors.Is(err, redis.Nil) {
			return RebuildStatus{}, err
		}
	}
	r, cur, err := rb.Result()
	if err != nil {
		return RebuildStatus{}, fmt.Errorf("%w: %w", errBadState, err)
	}
	st := RebuildStatus{State: r.State, Generation: r.Target, CurrentGeneration: cur, Applied: r.Applied,
		StreamLength: xlen.Val(), Rate: r.Rate, StartedAt: r.StartedAt, UpdatedAt: r.UpdatedAt, Error: r.Error}
	if st.State == "" {
		// No rebuild ever ran: what there is, is the current generation.
		st.State = "idle"
		st.Generation = cur
	}
	running := lock.Val() == 1
	switch st.State {
	case events.RebuildStateBuilding, events.RebuildStateSwitching:
		if !running {
			st.State = events.RebuildStateFailed
			st.Error = "the rebuild process is gone (its lock expired): run `processor rebuild` to resume it, or `processor rebuild --cancel`"
			break
		}
		if r.ETASeconds >= 0 {
			eta := r.ETASeconds
			st.ETASeconds = &eta
		}
	case events.RebuildStateCleanup:
		if !running {
			st.Error = "the removal of the replaced generation is unfinished: run `processor rebuild` to finish it"
		}
	case events.RebuildStateDone:
		zero := int64(0)
		st.ETASeconds = &zero
	}
	return st, nil
}

// rebuildRank orders rebuild states from the least advanced that matters.
var rebuildRank = map[string]int{events.RebuildStateFailed: 0, events.RebuildStateBuilding: 1, events.RebuildStateSwitching: 2,
	events.RebuildStateCleanup: 3, events.RebuildStateCancelled: 4, events.RebuildStateDone: 5, "idle": 6}

// rebuildOverAll sums up the partitions' rebuilds, each listed in Partitions: the state
// is the least advanced that matters (failed, then building, switching, cleanup, then
// cancelled or done, idle only when all are), generation the highest any builds,
// current_generation the lowest current one, applied, stream_length and rate their
// sums, eta_seconds the longest, started_at the earliest, updated_at the latest, error
// the first.
func rebuildOverAll(sts []RebuildStatus) RebuildStatus {
	rank := rebuildRank
	all := RebuildStatus{State: "idle", Partitions: sts}
	for i := range sts {
		st := &sts[i]
		p := i
		st.Partition = &p
		if rank[st.State] < rank[all.State] {
			all.State = st.State
		}
		all.Generation = max(all.Generation, st.Generation)
		if i == 0 || st.CurrentGeneration < all.CurrentGeneration {
			all.CurrentGeneration = st.CurrentGeneration
		}
		all.Applied += st.Applied
		all.StreamLength += st.StreamLength
		all.Rate += st.Rate
		if st.ETASeconds != nil && (all.ETASeconds == nil || *st.ETASeconds > *all.ETASeconds) {
			eta := *st.ETASeconds
			all.ETASeconds = &eta
		}
		if st.StartedAt != "" && (all.StartedAt == "" || st.StartedAt < all.StartedAt) {
			all.StartedAt = st.StartedAt
		}
		if st.UpdatedAt > all.UpdatedAt {
			all.UpdatedAt = st.UpdatedAt
		}
		if all.Error == "" && st.Error != "" {
			all.Error = fmt.Sprintf("partition %d: %s", i, st.Error)
		}
	}
	return all
}
