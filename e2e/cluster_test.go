package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/proctest"
	"github.com/clickstream/pipeline/internal/redistest"
	wl "github.com/clickstream/pipeline/internal/workload"
	"github.com/redis/go-redis/v9"
)

// clusterRig is a local Redis Cluster with the whole pipeline on it, as OS processes:
// ingest, queryapi and processors, all with STREAM_PARTITIONS partitions.
type clusterRig struct {
	t          *testing.T
	ctx        context.Context
	c          *redistest.Cluster
	rdb        *redis.ClusterClient
	ns         string
	layout     events.Layout
	fleet      *proctest.Fleet
	query      *wl.Query
	ingestAddr string
	procs      []*proctest.Process
	runs       int
}

func newClusterRig(t *testing.T, ctx context.Context, c *redistest.Cluster, partitions int, ingestEnv ...string) *clusterRig {
	ns := redistest.Namespace(t)
	r := &clusterRig{t: t, ctx: ctx, c: c, rdb: c.Client(), ns: ns, layout: events.NewLayout(ns, partitions), fleet: proctest.NewTestFleet(t)}
	queryAddr := r.start("queryapi", "queryapi", "QUERY_ADDR")
	r.query = wl.NewQuery(&http.Client{Timeout: 10 * time.Second}, "http://"+queryAddr)
	r.ingestAddr = r.start("ingest", "ingest", "INGEST_ADDR", ingestEnv...)
	for _, name := range []string{"proc-a", "proc-b-0"} {
		r.startProcessor(name)
	}
	return r
}

func (r *clusterRig) env(extra ...string) []string {
	return append([]string{"REDIS_URL=" + r.c.URL(), "REDIS_NAMESPACE=" + r.ns,
		"STREAM_PARTITIONS=" + strconv.Itoa(r.layout.Count()), "REBUILD_LOCK_TTL=2s"}, extra...)
}

func (r *clusterRig) start(name, bin, addrVar string, extra ...string) string {
	r.t.Helper()
	addr, err := proctest.FreeAddr()
	if err != nil {
		r.t.Fatal(err)
	}
	p, err := r.fleet.Start(r.ctx, name, bin, addr, r.env(append(extra, addrVar+"="+addr)...)...)
	if err != nil {
		r.t.Fatal(err)
	}
	if bin == "processor" {
		r.procs = append(r.procs, p)
	}
	return addr
}

func (r *clusterRig) startProcessor(name string) *proctest.Process {
	r.start(name, "processor", "PROCESSOR_ADDR", "CONSUMER_NAME="+name, "CLAIM_MIN_IDLE=1s", "READ_BLOCK=200ms")
	return r.procs[len(r.procs)-1]
}

// pending is how many entries the current generation's groups of every partition have
// delivered to consumer and not seen acked.
func (r *clusterRig) pending(consumer string) int64 {
	var n int64
	for _, k := range r.layout.Partitions() {
		ctx, cancel := context.WithTimeout(r.ctx, time.Second)
		gen, _ := events.ParseGeneration(r.rdb.Get(ctx, k.Generation()).Val())
		cs, _ := r.rdb.XInfoConsumers(ctx, k.Stream(), k.Gen(gen).Group()).Result()
		cancel()
		for _, c := range cs {
			if c.Name == consumer {
				n += c.Pending
			}
		}
	}
	return n
}

// rebuild starts `processor rebuild` as a process.
func (r *clusterRig) rebuild(env ...string) *proctest.Process {
	r.t.Helper()
	r.runs++
	p, err := r.fleet.Exec(fmt.Sprintf("rebuild-%d", r.runs), filepath.Join(proctest.Binaries(r.t), "processor"), []string{"rebuild"}, r.env(env...))
	if err != nil {
		r.t.Fatal(err)
	}
	return p
}

// streamed returns the event ids every partition's stream holds, and how many entries.
func (r *clusterRig) streamed() (map[string]bool, int64) {
	r.t.Helper()
	ids := map[string]bool{}
	var n int64
	for _, k := range r.layout.Partitions() {
		start := "-"
		for {
			msgs, err := r.rdb.XRangeN(r.ctx, k.Stream(), start, "+", 10_000).Result()
			if err != nil {
				r.t.Fatalf("XRANGE %s: %v", k.Stream(), err)
			}
			for _, m := range msgs {
				n++
				var kv []string
				for f, v := range m.Values {
					kv = append(kv, f, v.(string))
				}
				if ev, err := events.DecodeEntry(kv); err == nil && ev.EventID != "" {
					ids[ev.EventID] = true
				}
			}
			if len(msgs) < 10_000 {
				break
			}
			start = "(" + msgs[len(msgs)-1].ID
		}
	}
	return ids, n
}

// checkTop compares the all-time ranking, cut at several limits, with exp: the same
// products' clicks in the same order (products with equal clicks in any order).
func checkTop(ctx context.Context, t *testing.T, q *wl.Query, exp *wl.Expected, products []string) {
	t.Helper()
	var want []productClicks
	for _, id := range products {
		if c := exp.Product(id).Clicks; c > 0 {
			want = append(want, productClicks{id, c})
		}
	}
	slices.SortStableFunc(want, func(a, b productClicks) int { return int(b.Clicks - a.Clicks) })
	for _, limit := range []int{1, 10, 100} {
		var got []productClicks
		if err := q.Get(ctx, "/v1/top-products?limit="+strconv.Itoa(limit), &got); err != nil {
			t.Fatal(err)
		}
		if err := sameRanking(got, want[:min(limit, len(want))], exp); err != nil {
			t.Errorf("GET /v1/top-products?limit=%d: %v", limit, err)
		}
	}
}

// postOnce posts evs until a 202 and returns its accepted count.
func postOnce(ctx context.Context, client *http.Client, url string, evs []wl.Event) (int, error) {
	ct, body := wl.Body(evs, false)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Content-Type", ct)
		resp, err := client.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusAccepted {
				var a accepted
				if err := json.Unmarshal(b, &a); err != nil {
					return 0, err
				}
				return a.Accepted, nil
			}
			if resp.StatusCode < 500 {
				return 0, fmt.Errorf("POST: %d %s", resp.StatusCode, b)
			}
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// The pipeline on a cluster of three masters with six partitions, end to end, with the
// real binaries: 100,000 distinct events of 3,000 users, a tenth of the requests posted
// again later (client retries), twenty events posted by two clients at the same
// instant, while one of two processors is killed with SIGKILL three times holding
// entries of several partitions, and while `processor rebuild` rebuilds every
// partition. Queries read during the rebuild never go backwards; afterwards every
// user's and product's totals, the all-time ranking and the statistics are exact, each
// event is stored once, and each of the concurrent pairs was accepted once.
func TestClusterEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: starts a Redis Cluster and the services")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
	defer cancel()
	setup := time.Now()
	c := redistest.StartCluster(t, 3)
	r := newClusterRig(t, ctx, c, 6, "REDIS_TIMEOUT=5s")
	t.Logf("a cluster of 3 masters, ingest, queryapi and 2 processors with 6 partitions ready after %v", time.Since(setup).Round(time.Millisecond))

	const users, products, total, batch = 3000, 200, 100_000, 100
	src := wl.NewSource(21, "ce-", users, products)
	var requests, resent [][]wl.Event
	for range total / batch {
		b := src.Batch(batch)
		requests = append(requests, b)
		if len(requests)%10 == 0 {
			resent = append(resent, b)
		}
	}
	for i, b := range resent { // posted again, some time after the first copy
		at := min(len(requests), (i+1)*10+30)
		requests = slices.Insert(requests, at, b)
	}
	exp := wl.NewExpected()
	client := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	url := "http://" + r.ingestAddr + "/v1/events"
	poster := wl.NewPoster(client, url, exp)

	// Post everything, with the kills and the rebuild on the way.
	postCtx, stopPosting := context.WithCancel(ctx)
	defer stopPosting()
	work := make(chan []wl.Event)
	var posting sync.WaitGroup
	for range 8 {
		posting.Add(1)
		go func() {
			defer posting.Done()
			for b := range work {
				if err := poster.Post(postCtx, b, false); err != nil {
					t.Errorf("posting: %v", err)
					stopPosting()
				}
			}
		}()
	}
	// Twenty events, each posted by two clients at once: exactly one may write it.
	pairSrc := wl.NewSource(22, "pair-", users, products)
	pairAccepted := make([]int, 20)
	var pairs sync.WaitGroup
	for i := range pairAccepted {
		ev := pairSrc.Batch(1)
		for range 2 {
			pairs.Add(1)
			go func() {
				defer pairs.Done()
				n, err := postOnce(postCtx, client, url, ev)
				if err != nil {
					t.Errorf("pair %d: %v", i, err)
					return
				}
				exp.Add(ev)
				mu.Lock()
				pairAccepted[i] += n
				mu.Unlock()
			}()
		}
	}

	victim := r.procs[1]
	var kills []string
	var sampler *sampler
	var samplerDone chan struct{}
	stopSampling := func() {}
	var rebuildOut string
	var rebuildErr error
	var postedAtRebuild, postedDuringRebuild int64
	for i, b := range requests {
		select {
		case work <- b:
		case <-postCtx.Done():
		}
		if postCtx.Err() != nil {
			break
		}
		switch i {
		case len(requests) * 2 / 10, len(requests) * 4 / 10, len(requests) * 6 / 10:
			held, err := proctest.KillHolding(victim, func() int64 { return r.pending(victim.Name) })
			if err != nil {
				t.Fatal(err)
			}
			next := fmt.Sprintf("proc-b-%d", len(kills)+1)
			kills = append(kills, fmt.Sprintf("%s holding %d entries", victim.Name, held))
			victim = r.startProcessor(next)
		case len(requests) * 65 / 100:
			// The rebuild, under load, in small batches so that it lasts; a sampler reads
			// users and products meanwhile.
			sampler = newSampler(r.query, 30, 30, nil)
			sctx, stop := context.WithCancel(ctx)
			stopSampling = stop
			samplerDone = make(chan struct{})
			go func() { defer close(samplerDone); sampler.run(sctx) }()
			postedAtRebuild = poster.Stats.Events.Load()
			p := r.rebuild("BATCH_SIZE=100")
			go func() {
				<-p.Done()
				mu.Lock()
				rebuildOut, rebuildErr = readLog(p), p.Err()
				postedDuringRebuild = poster.Stats.Events.Load() - postedAtRebuild
				mu.Unlock()
			}()
		}
	}
	close(work)
	posting.Wait()
	pairs.Wait()
	if t.Failed() {
		t.FailNow()
	}
	waitUntil(ctx, t, "the rebuild to finish", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return rebuildOut != "" || rebuildErr != nil
	})
	stopSampling()
	<-samplerDone
	mu.Lock()
	if rebuildErr != nil || !strings.Contains(rebuildOut, "rebuild: done: all 6 partitions rebuilt and switched") {
		t.Errorf("rebuild: %v\n%s", rebuildErr, rebuildOut)
	}
	mu.Unlock()
	if postedDuringRebuild == 0 || sampler.passesBuilding.Load() == 0 {
		t.Errorf("%d events accepted and %d sampler passes while the rebuild ran: it did not run under load", postedDuringRebuild, sampler.passesBuilding.Load())
	}
	if v := sampler.violations(); len(v) > 0 {
		t.Errorf("%d answers read during the rebuild went backwards; the first ones:\n%s", len(v), strings.Join(v[:min(len(v), 10)], "\n"))
	}
	t.Logf("posted %d events in %d requests (%d sent twice, 20 pairs at once); %d answers were not 202 and were retried; killed %s; %d events accepted while the rebuild ran, %d reads (%d passes while building), none went backwards",
		exp.Distinct(), len(requests), len(resent), poster.Stats.Attempts.Load()-poster.Stats.Accepted.Load(), strings.Join(kills, ", "),
		postedDuringRebuild, sampler.reads.Load(), sampler.passesBuilding.Load())

	pl, err := r.query.WaitDrained(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if pl.Length != int64(exp.Distinct()) {
		t.Errorf("the partitions hold %d entries, want %d distinct accepted events", pl.Length, exp.Distinct())
	}
	if len(pl.Groups) != 6 {
		t.Errorf("%d groups, want one per partition: %+v", len(pl.Groups), pl.Groups)
	}
	for i, n := range pairAccepted {
		if n != 1 {
			t.Errorf("pair %d: accepted %d times, want once", i, n)
		}
	}
	sum, err := r.query.Check(ctx, exp, src.UserIDs(), src.ProductIDs())
	if err != nil {
		t.Error(err)
	} else {
		t.Logf("all %s; statistics exact", sum)
	}
	checkTop(ctx, t, r.query, exp, src.ProductIDs())
	for _, p := range []*proctest.Process{r.procs[0], victim} {
		if p.Exited() {
			t.Errorf("%s exited: %v", p.Name, p.Err())
		}
	}
}

// mu guards what the end-to-end tests' goroutines hand back.
var mu sync.Mutex

// fromStreams returns the totals of what every partition's stream holds, as expected
// totals: what the aggregates must equal whatever was lost before it got there.
func (r *clusterRig) fromStreams() *wl.Expected {
	r.t.Helper()
	exp := wl.NewExpected()
	for _, k := range r.layout.Partitions() {
		start := "-"
		for {
			msgs, err := r.rdb.XRangeN(r.ctx, k.Stream(), start, "+", 10_000).Result()
			if err != nil {
				r.t.Fatalf("XRANGE %s: %v", k.Stream(), err)
			}
			evs := make([]wl.Event, 0, len(msgs))
			for _, m := range msgs {
				var kv []string
				for f, v := range m.Values {
					kv = append(kv, f, v.(string))
				}
				ev, err := events.DecodeEntry(kv)
				if err != nil {
					r.t.Fatalf("entry %s: %v", m.ID, err)
				}
				evs = append(evs, wl.Event{UserID: ev.UserID, ProductID: ev.ProductID, Type: ev.Type.String(), DurationMs: ev.DurationMs, EventID: ev.EventID})
			}
			exp.Add(evs)
			if len(msgs) < 10_000 {
				break
			}
			start = "(" + msgs[len(msgs)-1].ID
		}
	}
	return exp
}

// A master failover while clients post, on a cluster of three masters with a replica
// each and six partitions: a master is killed with SIGKILL while its replica lags (the
// replica, frozen meanwhile, takes over without the master's last writes; the killed
// one, restarted, rejoins as a replica), then another is replaced on purpose (CLUSTER
// FAILOVER on its replica). Clients get 503s meanwhile, never a hang and
// never any other answer; ingest and the processors recover by themselves; the
// aggregates equal exactly what the streams hold. With WRITE_REPLICAS=1 no event that
// got a 202 is lost; without, the test reports how many were.
func TestClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: starts a Redis Cluster and the services")
	}
	for _, replicas := range []string{"1", "0"} {
		t.Run("write-replicas-"+replicas, func(t *testing.T) {
			lost, accepted := failover(t, replicas)
			if replicas == "1" && lost > 0 {
				t.Errorf("%d of %d events that got a 202 are lost, with WRITE_REPLICAS=1", lost, accepted)
			}
			t.Logf("WRITE_REPLICAS=%s: %d of %d events that got a 202 were lost in the failovers", replicas, lost, accepted)
		})
	}
}

func failover(t *testing.T, replicas string) (lost, distinct int) {
	ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
	defer cancel()
	c := redistest.StartCluster(t, 3, redistest.Replicas(1), redistest.NodeTimeout(time.Second))
	r := newClusterRig(t, ctx, c, 6, "WRITE_REPLICAS="+replicas)
	exp := wl.NewExpected()
	// A hang is an answer that takes longer than this; ingest answers within
	// REDIS_TIMEOUT (1 s) and a quarter second.
	poster := wl.NewPoster(&http.Client{Timeout: 10 * time.Second}, "http://"+r.ingestAddr+"/v1/events", exp)
	postCtx, stopPosting := context.WithCancel(ctx)
	defer stopPosting()
	var posting sync.WaitGroup
	for i := range 4 {
		posting.Add(1)
		go func() {
			defer posting.Done()
			src := wl.NewSource(uint64(30+i), fmt.Sprintf("fo%d-", i), 2000, 100)
			for postCtx.Err() == nil {
				if err := poster.Post(postCtx, src.Batch(20), false); err != nil && postCtx.Err() == nil {
					t.Errorf("posting: %v", err)
					return
				}
			}
		}()
	}
	more := func(what string, n int64) {
		at := poster.Stats.Events.Load()
		waitUntil(ctx, t, what, func() bool { return poster.Stats.Events.Load() >= at+n })
	}
	more("posting to get going", 3000)

	// A master killed with SIGKILL while its replica lags: the replica is frozen (SIGSTOP)
	// and cut off until the master has taken writes it does not have (or, with
	// WRITE_REPLICAS=1, until ingest has refused writes it could not confirm), then
	// resumed as the master dies.
	killed := c.Masters()[0]
	lagging := c.ReplicaOf(killed)
	before := poster.Stats.Unavailable.Load()
	lagging.Stop()
	// Cut the replication link too: a frozen replica still receives what its kernel
	// buffers hold, which on loopback is everything a few hundred events amount to.
	if err := killed.Client().Do(ctx, "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
		t.Fatal(err)
	}
	if replicas == "0" {
		more("writes the frozen replica does not have", 500)
	} else {
		waitUntil(ctx, t, "ingest to refuse writes its frozen replica cannot confirm", func() bool {
			return poster.Stats.Unavailable.Load() >= before+4
		})
	}
	start := time.Now()
	killed.Kill()
	lagging.Cont()
	c.WaitHealthy()
	failedOver := time.Since(start)
	if replicas == "0" {
		more("ingest to accept events again after the kill", 2000)
	}
	// Restarted, it comes back as a replica of the master that took over. Until then,
	// with WRITE_REPLICAS=1 that master cannot confirm a write: its partitions answer 503.
	killed.Restart()
	c.WaitHealthy()
	more("ingest to accept events again after the kill", 2000)
	recovered := time.Since(start)
	unavailable := poster.Stats.Unavailable.Load() - before

	// A master replaced on purpose.
	var other *redistest.Node
	for _, m := range c.Masters() {
		if m != c.NodeFor(r.layout.Partition(0).Stream()) || other == nil {
			other = m
		}
	}
	c.Failover(c.ReplicaOf(other))
	more("posting after CLUSTER FAILOVER", 2000)
	stopPosting()
	posting.Wait()

	st := &poster.Stats
	t.Logf("%d requests: %d got 202, %d got 503 (%d of them around the kill), %d connection errors, %d hung, %d wrong; the cluster failed over %v after the kill, ingest accepted 2000 more events %v after it",
		st.Attempts.Load(), st.Accepted.Load(), st.Unavailable.Load(), unavailable, st.ConnErrors.Load(), st.Hung.Load(), st.Wrong.Load(),
		failedOver.Round(time.Millisecond), recovered.Round(time.Millisecond))
	if st.Hung.Load() > 0 || st.Wrong.Load() > 0 {
		t.Errorf("%d requests hung and %d got a wrong answer: %v", st.Hung.Load(), st.Wrong.Load(), poster.WrongAnswers())
	}
	if unavailable == 0 {
		t.Errorf("no 503 around the kill of a master")
	}
	if _, err := r.query.WaitDrained(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range r.procs {
		if p.Exited() {
			t.Errorf("%s exited: %v", p.Name, p.Err())
		}
	}
	// What the streams hold is counted exactly.
	held := r.fromStreams()
	sum, err := r.query.Check(ctx, held, nil, nil)
	if err != nil {
		t.Errorf("the aggregates differ from what the streams hold: %v", err)
	} else {
		t.Logf("the aggregates equal what the streams hold: %s", sum)
	}
	// Which 202'd events the streams do not hold.
	ids, _ := r.streamed()
	for _, id := range exp.EventIDs() {
		if !ids[id] {
			lost++
		}
	}
	return lost, exp.Distinct()
}
