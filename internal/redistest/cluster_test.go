package redistest_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/redistest"
)

// StartCluster forms a cluster of three masters, each with a replica, that share the
// slots as redis-cli would; a key written through a cluster client survives a manual
// failover (CLUSTER FAILOVER) and a master killed with SIGKILL, after which the replica
// serves its slots; and events.Slot agrees with CLUSTER KEYSLOT.
func TestCluster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 3, redistest.Replicas(1))
	ctx := context.Background()
	masters := c.Masters()
	if len(masters) != 3 || len(c.Nodes()) != 6 {
		t.Fatalf("%d masters of %d nodes, want 3 of 6", len(masters), len(c.Nodes()))
	}
	for i, want := range [][2]int{{0, 5460}, {5461, 10922}, {10923, 16383}} {
		if first, last := redistest.SlotRange(i, 3); first != want[0] || last != want[1] {
			t.Errorf("SlotRange(%d, 3) = %d-%d, want %d-%d", i, first, last, want[0], want[1])
		}
	}
	for i := range 200 {
		key := fmt.Sprintf("k%d{t%d}x", i, i%7)
		n, err := c.Client().ClusterKeySlot(ctx, key).Result()
		if err != nil || int(n) != events.Slot(key) {
			t.Fatalf("CLUSTER KEYSLOT %s = %d, %v; events.Slot says %d", key, n, err, events.Slot(key))
		}
	}

	// A key on each master.
	keys := map[*redistest.Node]string{}
	for i := 0; len(keys) < 3; i++ {
		k := fmt.Sprintf("key-%d", i)
		if n := c.NodeFor(k); keys[n] == "" {
			keys[n] = k
			if err := c.Client().Set(ctx, k, k, 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	m := masters[0]
	r := c.ReplicaOf(m)
	c.Failover(r)
	if got := c.NodeFor(keys[m]); got != r {
		t.Errorf("after CLUSTER FAILOVER, %s is served by %s, want the replica %s (old master %s)", keys[m], got.Addr(), r.Addr(), m.Addr())
	}
	if v, err := r.Client().Get(ctx, keys[m]).Result(); err != nil || v != keys[m] {
		t.Errorf("GET %s on the new master = %q, %v", keys[m], v, err)
	}

	// Kill the master that took over; its own former master, a replica now, takes over.
	r.Kill()
	c.WaitHealthy()
	if got := c.NodeFor(keys[m]); got != m {
		t.Errorf("after SIGKILL of %s, %s is served by %s, want %s", r.Addr(), keys[m], got.Addr(), m.Addr())
	}
	if v, err := m.Client().Get(ctx, keys[m]).Result(); err != nil || v != keys[m] {
		t.Errorf("GET %s on the master after the kill = %q, %v", keys[m], v, err)
	}
}
