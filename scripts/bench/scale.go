package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/lag"
	"github.com/redis/go-redis/v9"
)

// scaleOut measures, side by side, batch ingest and the processor's drain on the one
// Redis of the run with one partition, and on a local Redis Cluster of three masters
// with six partitions; with each, the Redis CPU spent per event, per node. On one
// machine the cluster's masters share the cores with everything else, so its own
// throughput says little; what carries over to a real cluster, one core per master, is
// the Redis CPU per event, from which the notes project the throughput of 3, 6 and 12
// shards.
func (b *bench) scaleOut(ctx context.Context) error {
	n := b.o.scaleEvents
	b.logf("scale-out: %d events through ingest and one processor, on one Redis (1 partition) and on 3 masters (6 partitions)", n)
	single, err := b.scaleRun(ctx, "scale1", b.url, []int{b.redis.Process.Pid}, 1, n)
	if err != nil {
		return err
	}
	c, err := startBenchCluster(ctx, b.dir, 3)
	if err != nil {
		return err
	}
	defer c.close()
	clustered, err := b.scaleRun(ctx, "scale6", c.url(), c.pids(), 6, n)
	if err != nil {
		return err
	}
	for _, r := range []scaleResult{single, clustered} {
		where := "1 Redis, 1 partition"
		if len(r.ingestCPU) > 1 {
			where = "3-master cluster, 6 partitions"
		}
		b.add("scale-out, batch ingest (NDJSON 500/request, 8 conns): "+where,
			fmt.Sprintf("%s events/s; Redis CPU %s µs/event", num(r.ingestRate), perNode(r.ingestCPU)), "", "")
		b.add("scale-out, processor drain (1 process): "+where,
			fmt.Sprintf("%s events/s; Redis CPU %s µs/event", num(r.drainRate), perNode(r.drainCPU)), "", "")
	}
	// One core per master: a master saturates when the events it holds cost it a core,
	// so S masters sharing the events evenly carry S × 10⁶ / (CPU µs per event, all
	// nodes) events per second.
	in, dr := sum(clustered.ingestCPU), sum(clustered.drainCPU)
	for _, s := range []int{3, 6, 12} {
		b.add(fmt.Sprintf("projected Redis-bound throughput, %d masters (one core each)", s),
			fmt.Sprintf("ingest %s events/s, drain %s events/s", num(float64(s)*1e6/in), num(float64(s)*1e6/dr)), "", "")
	}
	b.logf("scale-out: one Redis %.2f µs/event ingest, %.2f drain; 3 masters %.2f ingest, %.2f drain (all nodes); a master's share with 3: %.2f and %.2f",
		sum(single.ingestCPU), sum(single.drainCPU), in, dr, in/3, dr/3)
	return nil
}

type scaleResult struct {
	ingestRate, drainRate float64
	ingestCPU, drainCPU   []float64 // per node, µs of Redis CPU per event of the whole run
}

func perNode(cpu []float64) string {
	if len(cpu) == 1 {
		return fmt.Sprintf("%.2f", cpu[0])
	}
	var parts []string
	for _, c := range cpu {
		parts = append(parts, fmt.Sprintf("%.2f", c))
	}
	return fmt.Sprintf("%.2f (%s per node)", sum(cpu), strings.Join(parts, " + "))
}

func sum(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s
}

// scaleRun posts n events through an ingest on url with the given partitions, then
// drains them with one processor, measuring both and the CPU of the Redis processes.
func (b *bench) scaleRun(ctx context.Context, ns, url string, redisPids []int, partitions, n int) (scaleResult, error) {
	var res scaleResult
	env := []string{"REDIS_URL=" + url, "REDIS_NAMESPACE=" + ns, "STREAM_PARTITIONS=" + strconv.Itoa(partitions), "LOG_LEVEL=warn"}
	addr := freeAddr()
	ing, err := b.start("ingest-"+ns, []string{b.dir + "/ingest"}, append(env, "INGEST_ADDR="+addr), "http://"+addr+"/readyz")
	if err != nil {
		return res, err
	}
	cpu0 := cpuTimes(redisPids)
	if res.ingestRate, err = b.batchIngest(addr, n, 500); err != nil {
		return res, err
	}
	res.ingestCPU = perEvent(cpuTimes(redisPids), cpu0, n)
	stopProc(ing)

	var rdb redis.UniversalClient = b.rdb
	if !strings.HasPrefix(url, "unix://") {
		copt, err := redis.ParseClusterURL(url)
		if err != nil {
			return res, err
		}
		c := redis.NewClusterClient(copt)
		defer c.Close()
		rdb = c
	}
	cpu0 = cpuTimes(redisPids)
	t0 := time.Now()
	p, err := b.start("processor-"+ns, []string{b.dir + "/processor"}, append(env, "PROCESSOR_ADDR="+freeAddr()), "")
	if err != nil {
		return res, err
	}
	defer stopProc(p)
	layout := events.NewLayout(ns, partitions)
	for _, k := range layout.Partitions() {
		if err := waitGroupDrained(ctx, rdb, k.Stream(), k.Gen(1).Group(), 10*time.Minute); err != nil {
			return res, err
		}
	}
	res.drainRate = float64(n) / time.Since(t0).Seconds()
	res.drainCPU = perEvent(cpuTimes(redisPids), cpu0, n)
	b.logf("scale-out %s (%d partitions): ingest %s events/s, Redis %s µs/event; drain %s events/s, Redis %s µs/event",
		ns, partitions, num(res.ingestRate), perNode(res.ingestCPU), num(res.drainRate), perNode(res.drainCPU))
	return res, nil
}

func cpuTimes(pids []int) []time.Duration {
	out := make([]time.Duration, len(pids))
	for i, p := range pids {
		out[i] = cpuTime(p)
	}
	return out
}

func perEvent(now, before []time.Duration, n int) []float64 {
	out := make([]float64, len(now))
	for i := range now {
		out[i] = float64((now[i] - before[i]).Microseconds()) / float64(n)
	}
	return out
}

// waitGroupDrained polls a group until it has been delivered and has acked everything.
func waitGroupDrained(ctx context.Context, rdb redis.UniversalClient, stream, group string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		s, groups, err := lag.Read(ctx, rdb, stream)
		if err == nil {
			for _, g := range groups {
				if g.Name == group && lag.Of(s, g) == 0 && g.Pending == 0 {
					return nil
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("%s: group %s not drained within %v", stream, group, timeout)
}

// benchCluster is a local Redis Cluster of masters only, for the scale-out rows.
type benchCluster struct {
	ports []int
	cmds  []*exec.Cmd
}

// startBenchCluster starts masters redis-servers with cluster mode on free TCP ports,
// shares the slots evenly among them and waits until the cluster is ok.
func startBenchCluster(ctx context.Context, dir string, masters int) (*benchCluster, error) {
	c := &benchCluster{}
	for i := range masters {
		port, err := freeClusterPort()
		if err != nil {
			c.close()
			return nil, err
		}
		d := filepath.Join(dir, fmt.Sprintf("cluster-%d", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			c.close()
			return nil, err
		}
		cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", d,
			"--save", "", "--appendonly", "no", "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--logfile", filepath.Join(d, "redis.log"))
		if err := cmd.Start(); err != nil {
			c.close()
			return nil, err
		}
		c.ports, c.cmds = append(c.ports, port), append(c.cmds, cmd)
	}
	for i, port := range c.ports {
		node := redis.NewClient(&redis.Options{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Protocol: 2})
		defer node.Close()
		for j := 0; node.Ping(ctx).Err() != nil; j++ {
			if j > 500 {
				c.close()
				return nil, fmt.Errorf("cluster node on port %d did not start", port)
			}
			time.Sleep(10 * time.Millisecond)
		}
		first, last := i*events.SlotCount/masters, (i+1)*events.SlotCount/masters-1
		if err := node.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", first, last).Err(); err != nil {
			c.close()
			return nil, err
		}
		if i > 0 {
			if err := node.ClusterMeet(ctx, "127.0.0.1", strconv.Itoa(c.ports[0])).Err(); err != nil {
				c.close()
				return nil, err
			}
		}
	}
	for j := 0; ; j++ {
		ok := true
		for _, port := range c.ports {
			node := redis.NewClient(&redis.Options{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Protocol: 2})
			info, err := node.ClusterInfo(ctx).Result()
			node.Close()
			ok = ok && err == nil && strings.Contains(info, "cluster_state:ok") &&
				strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(masters))
		}
		if ok {
			return c, nil
		}
		if j > 3000 {
			c.close()
			return nil, fmt.Errorf("the bench cluster did not form within 30 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (c *benchCluster) url() string {
	u := "redis://127.0.0.1:" + strconv.Itoa(c.ports[0])
	for i, p := range c.ports[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		u += sep + "addr=127.0.0.1:" + strconv.Itoa(p)
	}
	return u
}

func (c *benchCluster) pids() []int {
	var out []int
	for _, cmd := range c.cmds {
		out = append(out, cmd.Process.Pid)
	}
	return out
}

func (c *benchCluster) close() {
	for _, cmd := range c.cmds {
		cmd.Process.Kill()
		cmd.Wait()
	}
}

// freeClusterPort returns a TCP port free on the loopback interface with its cluster bus
// port (+10000) free too.
func freeClusterPort() (int, error) {
	for range 1000 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if port+10000 > 65535 {
			continue
		}
		if bus, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+10000))); err == nil {
			bus.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("no free pair of ports for a cluster node")
}
