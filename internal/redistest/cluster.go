package redistest

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/redis/go-redis/v9"
)

// Cluster is a Redis Cluster of redis-server processes owned by a test, on TCP ports of
// the loopback interface (a cluster's nodes find each other by TCP address only, and
// each also listens on its bus port, port + 10000). Each node still has its unix socket,
// which Node.Client uses for admin commands that must reach that very node.
type Cluster struct {
	t        testing.TB
	masters  []*Node // as started; a failover may swap roles since
	replicas []*Node
	timeout  time.Duration // cluster-node-timeout

	clientOnce sync.Once
	client     *redis.ClusterClient
}

// Node is one redis-server of a Cluster.
type Node struct {
	*Server
	Port int
	ID   string // the node id (CLUSTER MYID)
}

// Addr is the node's TCP address, host:port.
func (n *Node) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.Port)) }

// ClusterOption changes how StartCluster forms the cluster.
type ClusterOption func(*clusterConfig)

type clusterConfig struct {
	replicas int           // per master
	timeout  time.Duration // cluster-node-timeout
	args     []Option
}

// Replicas gives every master n replicas.
func Replicas(n int) ClusterOption { return func(c *clusterConfig) { c.replicas = n } }

// NodeTimeout sets cluster-node-timeout: how long a node may not answer before the
// others count it as failing, and so how soon a replica takes over a killed master
// (about twice this). The default, 2 s, is short for a test and long enough that a busy
// test machine does not trigger failovers by itself.
func NodeTimeout(d time.Duration) ClusterOption { return func(c *clusterConfig) { c.timeout = d } }

// NodeArgs passes options (AOF(), Args(…)) to every node.
func NodeArgs(opts ...Option) ClusterOption {
	return func(c *clusterConfig) { c.args = append(c.args, opts...) }
}

// StartCluster runs a Redis Cluster of masters masters, which share the slots evenly
// as redis-cli --cluster create shares them (0-5460, 5461-10922 and 10923-16383 for
// three), and waits until every node reports cluster_state:ok and every replica's
// link to its master is up. The nodes are killed when the test ends.
func StartCluster(t testing.TB, masters int, opts ...ClusterOption) *Cluster {
	t.Helper()
	cfg := clusterConfig{timeout: 2 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	c := &Cluster{t: t, timeout: cfg.timeout}
	for i := range masters * (1 + cfg.replicas) {
		n := c.startNode(cfg)
		if i < masters {
			c.masters = append(c.masters, n)
		} else {
			c.replicas = append(c.replicas, n)
		}
	}
	ctx := context.Background()
	for i, m := range c.masters {
		first, last := SlotRange(i, masters)
		if err := m.Client().Do(ctx, "CLUSTER", "ADDSLOTSRANGE", first, last).Err(); err != nil {
			t.Fatalf("CLUSTER ADDSLOTSRANGE %d %d: %v", first, last, err)
		}
	}
	all := c.Nodes()
	meet := func(n *Node) {
		if err := n.Client().ClusterMeet(ctx, "127.0.0.1", strconv.Itoa(all[0].Port)).Err(); err != nil {
			t.Fatalf("CLUSTER MEET: %v", err)
		}
	}
	for _, n := range all[1:] {
		meet(n)
	}
	lastMeet := time.Now()
	c.waitFor("every node to know every other", func() error {
		for _, n := range all {
			info, err := n.Client().ClusterInfo(ctx).Result()
			if err != nil {
				return err
			}
			if want := "cluster_known_nodes:" + strconv.Itoa(len(all)); !strings.Contains(info, want) {
				// A handshake that takes longer than the node timeout (a busy machine) is
				// dropped, and never tried again: meet again.
				if n != all[0] && time.Since(lastMeet) > c.timeout {
					meet(n)
					lastMeet = time.Now()
				}
				return fmt.Errorf("%s: %s", n.Addr(), firstLine(info, "cluster_known_nodes"))
			}
		}
		return nil
	})
	for i, r := range c.replicas {
		m := c.masters[i%masters]
		if err := r.Client().Do(ctx, "CLUSTER", "REPLICATE", m.ID).Err(); err != nil {
			t.Fatalf("CLUSTER REPLICATE %s: %v", m.ID, err)
		}
	}
	c.WaitHealthy()
	return c
}

// SlotRange is the slots master i of n holds in a cluster StartCluster forms, as
// redis-cli --cluster create shares them.
func SlotRange(i, n int) (first, last int) {
	per := float64(events.SlotCount) / float64(n)
	first = int(float64(i)*per + 0.5)
	last = int(float64(i+1)*per+0.5) - 1
	if i == n-1 {
		last = events.SlotCount - 1
	}
	return first, last
}

// startNode starts one cluster-enabled node on free ports, trying other ports when a
// port was taken between the check and the start.
func (c *Cluster) startNode(cfg clusterConfig) *Node {
	c.t.Helper()
	var lastErr error
	for range 10 {
		port := freeClusterPort(c.t)
		args := append(slices.Clone(cfg.args), Args("--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", strconv.FormatInt(cfg.timeout.Milliseconds(), 10),
			// A replica takes over however long its link to the master was down: a test
			// kills masters on purpose, and a busy machine delays replication.
			"--cluster-replica-validity-factor", "0"))
		s := newServer(c.t, args...)
		if lastErr = s.start(); lastErr != nil {
			continue
		}
		c.t.Cleanup(s.Kill)
		id, err := s.Client().Do(context.Background(), "CLUSTER", "MYID").Text()
		if err != nil {
			c.t.Fatalf("CLUSTER MYID: %v", err)
		}
		return &Node{Server: s, Port: port, ID: id}
	}
	c.t.Fatalf("could not start a cluster node: %v", lastErr)
	return nil
}

// freeClusterPort returns a TCP port that is free on the loopback interface with its
// cluster bus port (port + 10000) free too.
func freeClusterPort(t testing.TB) int {
	for range 1000 {
		p := 20000 + rand.IntN(30000)
		if portFree(p) && portFree(p+10000) {
			return p
		}
	}
	t.Fatal("no free pair of TCP ports for a cluster node")
	return 0
}

func portFree(p int) bool {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// Nodes returns every node, the first masters first, killed ones included.
func (c *Cluster) Nodes() []*Node { return append(slices.Clone(c.masters), c.replicas...) }

// Addrs are the TCP addresses of every node, killed ones included.
func (c *Cluster) Addrs() []string {
	var addrs []string
	for _, n := range c.Nodes() {
		addrs = append(addrs, n.Addr())
	}
	return addrs
}

// URL is the REDIS_URL of the cluster in go-redis's cluster form: the first node, and
// every other as an addr parameter (redis.ParseClusterURL).
func (c *Cluster) URL() string {
	addrs := c.Addrs()
	u := "redis://" + addrs[0]
	for i, a := range addrs[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		u += sep + "addr=" + a
	}
	return u
}

// Client returns a cluster client of the test's own, closed when the test ends.
func (c *Cluster) Client() *redis.ClusterClient {
	c.clientOnce.Do(func() {
		c.client = redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), Protocol: 2})
		c.t.Cleanup(func() { c.client.Close() })
	})
	return c.client
}

// live returns the nodes whose process runs.
func (c *Cluster) live() []*Node {
	var out []*Node
	for _, n := range c.Nodes() {
		n.mu.Lock()
		up := n.cmd != nil
		n.mu.Unlock()
		if up {
			out = append(out, n)
		}
	}
	return out
}

// Masters returns the live nodes that are masters now, by their own account.
func (c *Cluster) Masters() []*Node {
	var out []*Node
	for _, n := range c.live() {
		if role, _ := n.role(); role == "master" {
			out = append(out, n)
		}
	}
	return out
}

// role is the node's ROLE: "master" or "slave".
func (n *Node) role() (string, error) {
	v, err := n.Client().Do(context.Background(), "ROLE").Slice()
	if err != nil || len(v) == 0 {
		return "", err
	}
	s, _ := v[0].(string)
	return s, nil
}

// NodeFor returns the node that serves key's slot now, by a live node's CLUSTER SLOTS.
func (c *Cluster) NodeFor(key string) *Node {
	c.t.Helper()
	slot := events.Slot(key)
	for _, n := range c.live() {
		slots, err := n.Client().ClusterSlots(context.Background()).Result()
		if err != nil {
			continue
		}
		for _, r := range slots {
			if slot >= int(r.Start) && slot <= int(r.End) && len(r.Nodes) > 0 {
				if m := c.byAddr(r.Nodes[0].Addr); m != nil {
					return m
				}
			}
		}
	}
	c.t.Fatalf("no live node serves slot %d", slot)
	return nil
}

func (c *Cluster) byAddr(addr string) *Node {
	for _, n := range c.Nodes() {
		if n.Addr() == addr {
			return n
		}
	}
	return nil
}

// ReplicaOf returns a live replica of master m.
func (c *Cluster) ReplicaOf(m *Node) *Node {
	c.t.Helper()
	for _, n := range c.live() {
		info, err := n.Client().Info(context.Background(), "replication").Result()
		if err == nil && strings.Contains(info, "role:slave") && strings.Contains(info, fmt.Sprintf("master_port:%d\r", m.Port)) {
			return n
		}
	}
	c.t.Fatalf("master %s has no live replica", m.Addr())
	return nil
}

// Failover runs CLUSTER FAILOVER on replica r, a manual failover without data loss (the
// replica takes over once it has caught up with its master), and waits until r is a
// master, its former master a replica, and the cluster healthy again.
func (c *Cluster) Failover(r *Node) {
	c.t.Helper()
	info, err := r.Client().Info(context.Background(), "replication").Result()
	if err != nil {
		c.t.Fatal(err)
	}
	old := c.byAddr(net.JoinHostPort("127.0.0.1", strings.TrimPrefix(firstLine(info, "master_port:"), "master_port:")))
	if err := r.Client().Do(context.Background(), "CLUSTER", "FAILOVER").Err(); err != nil {
		c.t.Fatalf("CLUSTER FAILOVER on %s: %v", r.Addr(), err)
	}
	c.waitFor(r.Addr()+" to become a master", func() error {
		if role, err := r.role(); err != nil || role != "master" {
			return fmt.Errorf("%s: role %q, %v", r.Addr(), role, err)
		}
		if old == nil {
			return nil
		}
		if role, err := old.role(); err != nil || role != "slave" {
			return fmt.Errorf("%s: role %q, %v", old.Addr(), role, err)
		}
		return nil
	})
	c.WaitHealthy()
}

// WaitHealthy waits until every live node reports cluster_state:ok, every node's
// CLUSTER SLOTS assigns every slot to a live node that is a master by its own account
// (ROLE), the same way on every node, and every live replica's link to
// its master is up: after a master was killed, once a replica has taken over and every
// node has learnt it.
func (c *Cluster) WaitHealthy() {
	c.t.Helper()
	ctx := context.Background()
	c.waitFor("the cluster to be healthy", func() error {
		live := c.live()
		up := map[string]bool{} // the live masters, by their own account
		for _, n := range live {
			role, err := n.role()
			if err != nil {
				return err
			}
			up[n.Addr()] = role == "master"
		}
		var agreed map[int]string // every node's map of slots must be the same
		for _, n := range live {
			info, err := n.Client().ClusterInfo(ctx).Result()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") {
				return fmt.Errorf("%s: %s", n.Addr(), firstLine(info, "cluster_state"))
			}
			slots, err := n.Client().ClusterSlots(ctx).Result()
			if err != nil {
				return err
			}
			covered := 0
			view := map[int]string{}
			for _, r := range slots {
				if len(r.Nodes) == 0 || !up[r.Nodes[0].Addr] {
					return fmt.Errorf("%s: slots %d-%d are served by %v, not a live master", n.Addr(), r.Start, r.End, r.Nodes)
				}
				covered += int(r.End - r.Start + 1)
				view[r.Start] = fmt.Sprint(r.End, r.Nodes[0].Addr)
			}
			if agreed == nil {
				agreed = view
			} else if !maps.Equal(agreed, view) {
				return fmt.Errorf("%s: its map of slots differs from another node's", n.Addr())
			}
			if covered != events.SlotCount {
				return fmt.Errorf("%s: %d of %d slots assigned", n.Addr(), covered, events.SlotCount)
			}
			repl, err := n.Client().Info(ctx, "replication").Result()
			if err != nil {
				return err
			}
			if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
				return fmt.Errorf("%s: replica with its link down", n.Addr())
			}
		}
		return nil
	})
}

// waitFor retries check until it returns nil, for up to a minute plus twenty node
// timeouts (a failover takes a few), and fails the test with its last error otherwise.
func (c *Cluster) waitFor(what string, check func() error) {
	c.t.Helper()
	deadline := time.Now().Add(time.Minute + 20*c.timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("waited %v for %s: %v", time.Minute+20*c.timeout, what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// firstLine returns the line of an INFO-style reply that starts with prefix.
func firstLine(info, prefix string) string {
	for line := range strings.Lines(info) {
		if strings.HasPrefix(line, prefix) {
			return strings.TrimSpace(line)
		}
	}
	return prefix + " missing"
}
