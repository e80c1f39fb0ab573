package cluster_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/clickstream/pipeline/internal/cluster"
	"github.com/clickstream/pipeline/internal/config"
	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// After a master is killed with SIGKILL and its replica has taken over, a client built
// by NewClient from a cluster REDIS_URL, with no retries of its own (as ingest's), finds
// the new master by itself: writes to the killed master's slots succeed again long
// before go-redis would reload its slot map unasked (a minute, redis/go-redis#3979).
// The writes that fail meanwhile fail at once; none hangs.
func TestFailoverFoundWithoutRetries(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 3, redistest.Replicas(1), redistest.NodeTimeout(time.Second))
	r := config.NewReader(func(k string) string {
		if k == "REDIS_URL" {
			return c.URL()
		}
		return ""
	})
	opt := r.Redis()
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	opt.MaxRetries = -1
	config.BoundRedis(opt, time.Second)
	rdb := cluster.NewClient(opt)
	defer rdb.Close()
	if _, ok := rdb.(*redis.ClusterClient); !ok {
		t.Fatalf("NewClient(%s) is a %T, want a cluster client", c.URL(), rdb)
	}
	ctx := context.Background()
	victim := c.Masters()[0]
	var key string
	for i := 0; key == ""; i++ {
		if k := fmt.Sprintf("k%d", i); c.NodeFor(k) == victim {
			key = k
		}
	}
	if err := rdb.Set(ctx, key, "before", 0).Err(); err != nil {
		t.Fatal(err)
	}
	replica := c.ReplicaOf(victim)
	victim.Kill()
	c.WaitHealthy() // the replica serves the slots now, by every node's account
	if got := c.NodeFor(key); got != replica {
		t.Fatalf("after the failover %s is served by %s, want %s", key, got.Addr(), replica.Addr())
	}
	// Well under go-redis's own reload interval, a minute: a client that only reloads
	// then fails every write for the whole wait.
	deadline := time.Now().Add(30 * time.Second)
	failed := 0
	for {
		start := time.Now()
		err := rdb.Set(ctx, key, "after", 0).Err()
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("a write took %v: it must fail or succeed within the bound", took)
		}
		if err == nil {
			break
		}
		failed++
		if time.Now().After(deadline) {
			t.Fatalf("writes to the failed-over slots still fail after 30 s (%d failures): %v", failed, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if v, err := replica.Client().Get(ctx, key).Result(); err != nil || v != "after" {
		t.Errorf("GET %s on the new master = %q, %v; want after", key, v, err)
	}
	t.Logf("%d writes failed before the client found the new master", failed)
}
