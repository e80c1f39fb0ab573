package rebuild

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

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

// startCluster runs a Redis Cluster of two masters on the loopback interface, each
// holding half of the slots, and returns a client for it, closed when the test ends.
func startCluster(t *testing.T) *redis.ClusterClient {
	t.Helper()
	ctx := context.Background()
	var addrs []string
	var nodes []*redis.Client
	for i, port := range clusterPorts(t, 2) {
		s := redistest.Start(t, redistest.Args("--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"))
		c := s.Client()
		if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", i*8192, i*8192+8191).Err(); err != nil {
			t.Fatalf("CLUSTER ADDSLOTSRANGE: %v", err)
		}
		addrs = append(addrs, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		nodes = append(nodes, c)
	}
	host, port, _ := net.SplitHostPort(addrs[1])
	if err := nodes[0].ClusterMeet(ctx, host, port).Err(); err != nil {
		t.Fatalf("CLUSTER MEET: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, c := range nodes {
		for {
			info, err := c.ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_known_nodes:2") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the cluster did not form within 30s: %v\n%s", err, info)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, Protocol: 2})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// clusterPorts returns n TCP ports that are free on the loopback interface, each with
// its cluster bus port (port + 10000) free too.
func clusterPorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for len(ports) < n {
		p := 20000 + rand.IntN(30000)
		ok := !slices.ContainsFunc(ports, func(q int) bool { return q == p || q == p+10000 || q+10000 == p })
		for _, q := range []int{p, p + 10000} {
			if !ok {
				break
			}
			ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(q)))
			if err != nil {
				ok = false
				break
			}
			ln.Close()
		}
		if ok {
			ports = append(ports, p)
		}
	}
	return ports
}
