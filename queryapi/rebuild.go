package main

import (
	"errors"
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
}

func (h *handler) rebuild(c echo.Context) error {
	ctx, cancel := h.ctx(c)
	defer cancel()
	keys := h.layout.Partition(0)
	pipe := h.rdb.Pipeline()
	rb := generations.QueueRebuild(ctx, pipe, keys)
	xlen := pipe.XLen(ctx, keys.Stream())
	lock := pipe.Exists(ctx, keys.RebuildLock())
	pipe.Exec(ctx) // errors are per command, below
	for _, err := range []error{rb.Err(), xlen.Err(), lock.Err()} {
		if err != nil && !errors.Is(err, redis.Nil) {
			h.redisErrors.Inc()
			return err
		}
	}
	r, cur, err := rb.Result()
	if err != nil {
		return err
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
	return c.JSON(http.StatusOK, st)
}
