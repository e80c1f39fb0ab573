package generations

import (
	"context"
	"reflect"
	"testing"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/redistest"
)

func TestParseRebuild(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    map[string]string
		want Rebuild
	}{
		{"never ran", nil, Rebuild{ETASeconds: -1}},
		{"building", map[string]string{
			"state": "building", "generation": "3", "from_generation": "2", "seeded": "1", "applied": "1200",
			"stream_length": "5000", "rate": "400", "eta_seconds": "10", "started_at": "2026-01-02T03:04:05Z",
			"updated_at": "2026-01-02T03:04:09Z", "error": "", "cancel_requested": "1",
		}, Rebuild{State: "building", Target: 3, From: 2, Seeded: true, Applied: 1200, Rate: 400,
			ETASeconds: 10, StartedAt: "2026-01-02T03:04:05Z", UpdatedAt: "2026-01-02T03:04:09Z"}},
		{"eta unknown", map[string]string{"state": "building", "generation": "2", "seeded": "0", "eta_seconds": "-1"},
			Rebuild{State: "building", Target: 2, ETASeconds: -1}},
		{"failed", map[string]string{"state": "failed", "generation": "2", "error": "interrupted", "eta_seconds": "x"},
			Rebuild{State: "failed", Target: 2, Error: "interrupted", ETASeconds: -1}},
	} {
		if got := ParseRebuild(tc.m); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: ParseRebuild = %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

// A rebuild is unfinished while it has not switched: building, switching or failed,
// towards a generation after the current one.
func TestRebuildUnfinished(t *testing.T) {
	for _, tc := range []struct {
		state  string
		target int64
		cur    int64
		want   bool
	}{
		{"", 0, 1, false},
		{events.RebuildStateBuilding, 2, 1, true},
		{events.RebuildStateSwitching, 2, 1, true},
		{events.RebuildStateFailed, 2, 1, true},
		{events.RebuildStateFailed, 2, 2, false}, // it did switch after all
		{events.RebuildStateCleanup, 2, 2, false},
		{events.RebuildStateDone, 2, 2, false},
		{events.RebuildStateCancelled, 2, 1, false},
	} {
		if got := (Rebuild{State: tc.state, Target: tc.target}).Unfinished(tc.cur); got != tc.want {
			t.Errorf("%q towards %d with %d current: Unfinished = %v, want %v", tc.state, tc.target, tc.cur, got, tc.want)
		}
	}
}

// QueueRebuild reads the state hash and the pointer in the caller's round trip.
func TestQueueRebuild(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	keys := events.NewKeys(redistest.Namespace(t))
	read := func() (Rebuild, int64, error) {
		pipe := rdb.Pipeline()
		rc := QueueRebuild(ctx, pipe, keys)
		pipe.Exec(ctx)
		return rc.Result()
	}
	if r, cur, err := read(); err != nil || cur != 1 || !reflect.DeepEqual(r, Rebuild{ETASeconds: -1}) {
		t.Errorf("with nothing written: %+v, current %d, %v; want no rebuild, 1", r, cur, err)
	}
	rdb.HSet(ctx, keys.RebuildState(), events.RebuildFieldState, events.RebuildStateCleanup, events.RebuildFieldTarget, 3, events.RebuildFieldFrom, 2)
	rdb.Set(ctx, keys.Generation(), "3", 0)
	want := Rebuild{State: events.RebuildStateCleanup, Target: 3, From: 2, ETASeconds: -1}
	if r, cur, err := read(); err != nil || cur != 3 || !reflect.DeepEqual(r, want) {
		t.Errorf("%+v, current %d, %v; want %+v, 3", r, cur, err, want)
	}
	rdb.Set(ctx, keys.RebuildState(), "not a hash", 0)
	if _, _, err := read(); err == nil {
		t.Error("a state key of the wrong type: no error")
	}
}
