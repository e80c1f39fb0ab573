package rebuild

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/redistest"
)

// unlinkAll removes every key of a pattern, across several SCAN calls and several
// chunks, but the keys it is told to keep, and nothing outside the pattern; it says
// how many it removed.
func TestUnlinkAll(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	keys := events.NewKeys(redistest.Namespace(t))
	gen, other := keys.Gen(1), keys.Gen(2)
	const n = 2*scanCount + 3 // more than one SCAN's worth, in many chunks
	pipe := rdb.Pipeline()
	for i := range n {
		pipe.Set(ctx, gen.User(fmt.Sprint(i)), 1, 0)
	}
	pipe.Set(ctx, gen.ClaimEpoch(), 7, 0)
	pipe.Set(ctx, other.User("u1"), 1, 0)
	pipe.Set(ctx, keys.Marker("e1"), 1, 0)
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	b := New(rdb, keys, testConfig, nil, discard())
	removed, err := b.unlinkAll(ctx, gen.Pattern(), gen.ClaimEpoch())
	if err != nil || removed != n {
		t.Fatalf("unlinkAll = %d, %v; want %d", removed, err, n)
	}
	var left []string
	for _, pattern := range []string{gen.Pattern(), other.Pattern(), keys.Marker("*")} {
		left = append(left, scanKeys(t, rdb, pattern)...)
	}
	slices.Sort(left)
	if want := []string{gen.ClaimEpoch(), other.User("u1"), keys.Marker("e1")}; !slices.Equal(left, want) {
		t.Errorf("keys left %v, want %v", left, want)
	}
}
