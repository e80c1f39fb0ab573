package rebuild

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/clickstream/pipeline/internal/testlog"
	"github.com/redis/go-redis/v9"
)

// A rebuild through a cluster client: each namespace's keys live on the master that
// holds its hash tag's slot, which SCAN sent through the cluster client would reach
// only by chance, so the seed and the removal of the old generation scan every
// master. With two masters and a namespace on each, both rebuilds are exact and leave
// nothing of generation 1.
func TestRebuildOnCluster(t *testing.T) {
	t.Parallel()
	rdb := startCluster(t)
	ctx := context.Background()
	// A namespace on each master (slots 0-8191 and 8192-16383).
	var namespaces []string
	for lower := range 2 {
		for i := 0; ; i++ {
			ns := fmt.Sprintf("%s-%d", redistest.Namespace(t), i)
			slot, err := rdb.ClusterKeySlot(ctx, events.NewKeys(ns).Stream()).Result()
			if err != nil {
				t.Fatal(err)
			}
			if (slot < 8192) == (lower == 0) {
				namespaces = append(namespaces, ns)
				break
			}
		}
	}
	for _, ns := range namespaces {
		keys := events.NewKeys(ns)
		want := live(t, rdb, keys)
		out := &testlog.Buffer{}
		if err := New(rdb, keys, testConfig, out, discard()).Run(ctx); err != nil {
			t.Fatalf("namespace %s: Run: %v\n%s", ns, err, out)
		}
		assertRebuilt(t, rdb, keys, want, out.String())
		if !strings.Contains(out.String(), fmt.Sprintf("removed generation 1: %d keys unlinked", len(want))) {
			t.Errorf("namespace %s: want %d keys of generation 1 unlinked:\n%s", ns, len(want), out)
		}
	}
}

// scan on a cluster client visits every master: keys of two namespaces, one on each
// master, are all found by a pattern without a hash tag (with one, go-redis itself
// sends SCAN to the master of that slot, and a pattern of one namespace would not
// show that the other master is scanned too).
func TestScanEveryMaster(t *testing.T) {
	t.Parallel()
	rdb := startCluster(t)
	ctx := context.Background()
	prefix := redistest.Namespace(t)
	var keys []string
	for lower := range 2 {
		for i := 0; ; i++ {
			k := fmt.Sprintf("{%s-%d}:k", prefix, i)
			if slot := rdb.ClusterKeySlot(ctx, k).Val(); (slot < 8192) == (lower == 0) {
				keys = append(keys, k)
				break
			}
		}
	}
	for _, k := range keys {
		if err := rdb.Set(ctx, k, 1, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	b := New(rdb, events.NewKeys(prefix), testConfig, nil, discard())
	var mu sync.Mutex
	var found []string
	n, err := b.scan(ctx, "*"+prefix+"*:k", func(_ context.Context, ks []string) error {
		mu.Lock()
		defer mu.Unlock()
		found = append(found, ks...)
		return nil
	})
	slices.Sort(found)
	slices.Sort(keys)
	if err != nil || n != len(keys) || !slices.Equal(found, keys) {
		t.Errorf("scan = %d keys %v, %v; want %v, one from each master", n, found, err, keys)
	}
}

// startCluster runs a Redis Cluster of two masters, each holding half of the slots,
// and returns a client for it, closed when the test ends.
func startCluster(t *testing.T) *redis.ClusterClient {
	t.Helper()
	return redistest.StartCluster(t, 2).Client()
}
