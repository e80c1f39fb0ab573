package e2e

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/redis/go-redis/v9"
)

// scripts/run.sh --cluster starts a Redis Cluster of three masters and the whole
// pipeline on it with six partitions: an event posted is counted, each master holds
// partitions, a master killed with SIGKILL is restarted from its AOF, and SIGINT stops
// everything, the cluster's nodes included.
func TestRunScriptCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: runs scripts/run.sh --cluster")
	}
	base := clusterBase(t)
	r := startRunScriptArgs(t, []string{"--cluster"}, "CLUSTER_PORT="+strconv.Itoa(base))
	r.waitOutput("Pipeline is running")
	if !strings.Contains(r.output(), "redis cluster of 3 masters started") || !strings.Contains(r.output(), "6 partitions") {
		t.Errorf("run.sh does not say it started a cluster with 6 partitions:\n%s", r.output())
	}
	r.postClick("e1")
	r.postClick("e1") // a retry: not counted again
	r.postClick("e2")
	r.waitClicks(2)

	var addrs []string
	for i := range 3 {
		addrs = append(addrs, net.JoinHostPort("127.0.0.1", strconv.Itoa(base+i)))
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	defer c.Close()
	ctx := context.Background()
	var masters atomic.Int32 // ForEachMaster calls at once
	err := c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		n, err := m.DBSize(ctx).Result()
		if err == nil && n > 0 {
			masters.Add(1)
		}
		return err
	})
	if err != nil || masters.Load() != 3 {
		t.Errorf("%d of 3 masters hold keys (%v)", masters.Load(), err)
	}

	pids := redisPids(r.dataDir)
	if len(pids) != 3 {
		t.Fatalf("%d cluster nodes run, want 3", len(pids))
	}
	victim := pids[0]
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r.waitOutput("exited; restarting it from its AOF")
	r.waitOutput("restarted (pid")
	r.postClick("e3")
	r.waitClicks(3)

	procs := r.processes()
	if err := syscall.Kill(r.pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	r.waitExit(130, procs)
}

// clusterBase returns a port p such that p, p+1, p+2 and their bus ports are free.
func clusterBase(t *testing.T) int {
	t.Helper()
	for range 1000 {
		addr := freePorts(t, 3)
		_, port, _ := net.SplitHostPort(addr)
		p, _ := strconv.Atoi(port)
		if p+2+10000 > 65535 {
			continue
		}
		ok := true
		for i := range 3 {
			if ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+i+10000))); err != nil {
				ok = false
			} else {
				ln.Close()
			}
		}
		if ok {
			return p
		}
	}
	t.Fatal("no free ports for a cluster")
	return 0
}
