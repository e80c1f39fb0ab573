package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/proctest"
	"github.com/clickstream/pipeline/internal/redistest"
	wl "github.com/clickstream/pipeline/internal/workload"
	"github.com/redis/go-redis/v9"
)

// A rebuild while a load generator posts events continuously: queries never go
// backwards and never drop below what they answered when the rebuild started, the
// processors follow the switch, and once the stream drains every total equals an
// independent recount of the stream.
func TestRebuildUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: starts redis-server and the services")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	r := newReplayRig(t, ctx, true)
	const users, products, preloaded = 400, 40, 100_000
	r.preload(preloaded, users, products, 1)
	if _, err := r.query.WaitDrained(ctx); err != nil {
		t.Fatal(err)
	}

	// The load generator: four clients posting batches of 50 until told to stop.
	exp := wl.NewExpected()
	poster := wl.NewPoster(&http.Client{Timeout: 10 * time.Second}, "http://"+r.ingestAddr+"/v1/events", exp)
	postCtx, stopPosting := context.WithCancel(ctx)
	defer stopPosting()
	var posting sync.WaitGroup
	for c := range 4 {
		posting.Add(1)
		go func() {
			defer posting.Done()
			src := wl.NewSource(uint64(10+c), fmt.Sprintf("load%d-", c), users, products)
			for postCtx.Err() == nil {
				if err := poster.Post(postCtx, src.Batch(50), c%2 == 0); err != nil && postCtx.Err() == nil {
					t.Errorf("posting: %v", err)
					return
				}
			}
		}()
	}
	waitUntil(ctx, t, "posting to get going", func() bool { return poster.Stats.Events.Load() >= 2000 })

	// The sampler's first pass is the floor: what queries answered as the rebuild started.
	s := newSampler(r.query, 60, 20, nil)
	if err := s.pass(ctx); err != nil {
		t.Fatal(err)
	}
	s.floor = s.lastCopy()
	sampleCtx, stopSampling := context.WithCancel(ctx)
	samplerDone := make(chan struct{})
	go func() { defer close(samplerDone); s.run(sampleCtx) }()

	postedAtStart := poster.Stats.Events.Load()
	p := r.rebuild()
	out, err := r.wait(ctx, p)
	if err != nil {
		t.Fatalf("rebuild: %v\n%s", err, out)
	}
	postedDuring := poster.Stats.Events.Load() - postedAtStart
	// Keep posting a little after the switch: the processors must now count into the
	// new generation.
	atSwitch := poster.Stats.Events.Load()
	waitUntil(ctx, t, "posting after the switch", func() bool { return poster.Stats.Events.Load() >= atSwitch+2000 })
	stopPosting()
	posting.Wait()
	stopSampling()
	<-samplerDone
	t.Logf("rebuild output:\n%s", out)
	t.Logf("ingest accepted %d events during the rebuild, %d in all; the sampler read %d answers in %d passes (%d during the rebuild)",
		postedDuring, poster.Stats.Events.Load(), s.reads.Load(), s.passes.Load(), s.passesBuilding.Load())

	for _, want := range []string{"building generation 2: ", "switched: generation 2 is current", "done: generation 2 is current"} {
		if !strings.Contains(out, want) {
			t.Errorf("rebuild output lacks %q", want)
		}
	}
	if postedDuring == 0 {
		t.Errorf("no event was accepted during the rebuild: it did not run under load")
	}
	if s.passesBuilding.Load() == 0 {
		t.Errorf("the sampler made no pass while the rebuild was building")
	}
	if v := s.violations(); len(v) > 0 {
		t.Errorf("%d query answers went backwards or below their value at the start; the first ones:\n%s",
			len(v), strings.Join(v[:min(len(v), 10)], "\n"))
	}

	pl, err := r.query.WaitDrained(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pl.Groups) != 1 || pl.Groups[0].Name != r.keys.Gen(2).Group() {
		t.Errorf("groups after the rebuild: %+v, want only %s", pl.Groups, r.keys.Gen(2).Group())
	}
	rc := r.recount(ctx)
	// Requests cut short when posting stopped may have been stored without a 202.
	if want := int64(preloaded + exp.Distinct()); rc.entries < want {
		t.Errorf("stream holds %d entries, want at least %d preloaded + %d accepted", rc.entries, preloaded, exp.Distinct())
	}
	r.checkTotals(ctx, rc)
	r.checkDone(ctx, 2)
}

// SIGKILL the rebuild at several points (early and late in the replay, after the
// switch), refuse a second rebuild while the lock is held, cancel one, and re-run: the
// final totals are exact, and the query API never served a partial generation. The
// stream stands still meanwhile, so every answer must equal the recount exactly.
func TestRebuildKilledAndResumed(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: starts redis-server and the services")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	r := newReplayRig(t, ctx, false)
	// Many users, so that the old generation has many keys and its removal takes a while.
	const users, products = 20_000, 300
	ids := r.preload(60_000, users, products, 2)
	if _, err := r.query.WaitDrained(ctx); err != nil {
		t.Fatal(err)
	}
	rc := r.recount(ctx)
	s := newSampler(r.query, 300, products, &rc)
	sampleCtx, stopSampling := context.WithCancel(ctx)
	samplerDone := make(chan struct{})
	go func() { defer close(samplerDone); s.run(sampleCtx) }()
	defer func() { stopSampling(); <-samplerDone }()

	// 1. Kill early in the replay. A second rebuild started at once is refused: the
	// dead one's lock has not expired yet.
	p := r.rebuild()
	if !killWhen(p, r.delivered(2, ids[len(ids)/10])) {
		t.Fatalf("rebuild finished before 10%% of the stream was replayed:\n%s", proctest.Tail(p.Log, 4<<10))
	}
	second, err := r.wait(ctx, r.rebuild())
	if err == nil || !strings.Contains(second, "refused: another rebuild is running") {
		t.Errorf("a rebuild started while the lock was held: err %v, output:\n%s", err, second)
	}
	r.checkPointer(ctx, 1)
	r.waitLockExpired(ctx)
	if st := r.status(ctx); st.State != "failed" || st.CurrentGeneration != 1 {
		t.Errorf("/v1/rebuild after the kill: %+v, want state failed, current generation 1", st)
	}

	// 2. Re-run: it resumes; kill it again half-way.
	p = r.rebuild()
	if !killWhen(p, r.delivered(2, ids[len(ids)/2])) {
		t.Fatalf("rebuild finished before half the stream was replayed:\n%s", proctest.Tail(p.Log, 4<<10))
	}
	if out := readLog(p); !strings.Contains(out, "resuming the rebuild of generation 2") {
		t.Errorf("the second run did not resume:\n%s", out)
	}
	r.checkPointer(ctx, 1)
	r.waitLockExpired(ctx)

	// 3. Cancel the unfinished rebuild: its generation is deleted.
	out, err := r.wait(ctx, r.rebuild("--cancel"))
	if err != nil || !strings.Contains(out, "generation 2 deleted") {
		t.Errorf("rebuild --cancel: %v\n%s", err, out)
	}
	if n := r.countKeys(ctx, r.keys.Gen(2)); n != 0 {
		t.Errorf("%d keys of the cancelled generation 2 remain", n)
	}
	if gs, _ := r.rdb.XInfoGroups(ctx, r.keys.Stream()).Result(); len(gs) != 1 || gs[0].Name != r.keys.Gen(1).Group() {
		t.Errorf("groups after the cancel: %+v, want only %s", gs, r.keys.Gen(1).Group())
	}
	if st := r.status(ctx); st.State != "cancelled" {
		t.Errorf("/v1/rebuild after the cancel: %+v, want state cancelled", st)
	}

	// 4. Start again from scratch; kill at 30%. Then resume, and kill while switching
	// if the pause can be caught (it lasts milliseconds), and after the switch, while
	// the old generation's keys are being removed. If the removal finished before the
	// kill landed, rebuild again and retry.
	p = r.rebuild()
	if !killWhen(p, r.delivered(2, ids[len(ids)*3/10])) {
		t.Fatalf("rebuild finished before 30%% of the stream was replayed:\n%s", proctest.Tail(p.Log, 4<<10))
	}
	r.waitLockExpired(ctx)
	target := int64(2)
	tryPause := true
	for attempt := 1; ; attempt++ {
		p = r.rebuild()
		pausedKill := false
		killed := killWhen(p, func() bool {
			if tryPause {
				if n, _ := r.rdb.Exists(ctx, r.keys.Pause()).Result(); n == 1 {
					pausedKill = true
					return true
				}
			}
			v, _ := r.rdb.Get(ctx, r.keys.Generation()).Result()
			return v == strconv.FormatInt(target, 10)
		})
		state, _ := r.rdb.HGet(ctx, r.keys.RebuildState(), events.RebuildFieldState).Result()
		switch {
		case killed && pausedKill && state == events.RebuildStateSwitching:
			t.Logf("killed while switching to generation %d, with the processors paused", target)
			r.checkPointer(ctx, target-1)
			tryPause = false
			r.waitLockExpired(ctx)
			continue // the same target: the next run resumes, lifts the pause and switches
		case killed && state == events.RebuildStateCleanup:
			t.Logf("killed after the switch to generation %d, with %d keys of generation %d left to remove",
				target, r.countKeys(ctx, r.keys.Gen(target-1))-1, target-1)
		case attempt >= 4:
			t.Fatalf("four rebuilds finished their cleanup before a kill landed (last state %q)", state)
		default:
			tryPause = false
			r.waitLockExpired(ctx)
			if state == events.RebuildStateDone {
				target++
			}
			continue
		}
		break
	}
	r.checkPointer(ctx, target)
	r.waitLockExpired(ctx)

	// 5. The last run finishes the removal.
	out, err = r.wait(ctx, r.rebuild())
	if err != nil || !strings.Contains(out, fmt.Sprintf("finishing the removal of generation %d", target-1)) {
		t.Errorf("final rebuild: %v\n%s", err, out)
	}
	if n := r.countKeys(ctx, r.keys.Gen(target-1)); n > 1 { // the replaced claim epoch stays
		t.Errorf("%d keys of generation %d remain", n, target-1)
	}
	stopSampling()
	<-samplerDone
	t.Logf("the sampler read %d answers in %d passes, every one exact", s.reads.Load(), s.passes.Load())
	if v := s.violations(); len(v) > 0 {
		t.Errorf("%d query answers were not the exact totals; the first ones:\n%s", len(v), strings.Join(v[:min(len(v), 10)], "\n"))
	}
	r.checkTotals(ctx, rc)
	r.checkDone(ctx, target)

	// The processors followed the switch: new events are counted.
	r.preload(2000, users, products, 3)
	if _, err := r.query.WaitDrained(ctx); err != nil {
		t.Fatal(err)
	}
	r.checkTotals(ctx, r.recount(ctx))
}

// ----- the rig -----

// replayRig is a private Redis with queryapi, two processors and optionally ingest, and
// the means to run `processor rebuild` as a process.
type replayRig struct {
	t          *testing.T
	srv        *redistest.Server
	rdb        *redis.Client
	ns         string
	keys       events.Keys
	fleet      *proctest.Fleet
	query      *wl.Query
	ingestAddr string
	runs       int
}

func newReplayRig(t *testing.T, ctx context.Context, ingest bool) *replayRig {
	srv := redistest.Start(t)
	ns := redistest.Namespace(t)
	r := &replayRig{t: t, srv: srv, rdb: srv.Client(), ns: ns, keys: events.NewKeys(ns), fleet: proctest.NewTestFleet(t)}
	start := func(name, bin, addrVar string, extra ...string) string {
		addr, err := proctest.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.fleet.Start(ctx, name, bin, addr, r.env(append(extra, addrVar+"="+addr)...)...); err != nil {
			t.Fatal(err)
		}
		return addr
	}
	queryAddr := start("queryapi", "queryapi", "QUERY_ADDR")
	r.query = wl.NewQuery(&http.Client{Timeout: 10 * time.Second}, "http://"+queryAddr)
	if ingest {
		r.ingestAddr = start("ingest", "ingest", "INGEST_ADDR", "REDIS_TIMEOUT=5s")
	}
	for _, name := range []string{"proc-a", "proc-b"} {
		start(name, "processor", "PROCESSOR_ADDR", "CONSUMER_NAME="+name, "READ_BLOCK=200ms")
	}
	return r
}

func (r *replayRig) env(extra ...string) []string {
	return append([]string{"REDIS_URL=" + r.srv.URL(), "REDIS_NAMESPACE=" + r.ns, "REBUILD_LOCK_TTL=2s"}, extra...)
}

// rebuild starts `processor rebuild args...` as a process.
func (r *replayRig) rebuild(args ...string) *proctest.Process {
	r.t.Helper()
	r.runs++
	p, err := r.fleet.Exec(fmt.Sprintf("rebuild-%d", r.runs), filepath.Join(proctest.Binaries(r.t), "processor"),
		append([]string{"rebuild"}, args...), r.env())
	if err != nil {
		r.t.Fatal(err)
	}
	return p
}

// wait waits for p to exit and returns its output and how it ended.
func (r *replayRig) wait(ctx context.Context, p *proctest.Process) (string, error) {
	select {
	case <-p.Done():
	case <-ctx.Done():
		p.Kill()
		return readLog(p), fmt.Errorf("%s did not finish: %w", p.Name, ctx.Err())
	}
	return readLog(p), p.Err()
}

func readLog(p *proctest.Process) string {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// killWhen polls cond while p runs and kills p with SIGKILL as soon as cond holds. It
// returns false if p exited first.
func killWhen(p *proctest.Process, cond func() bool) bool {
	for !p.Exited() {
		if cond() {
			p.Kill()
			return true
		}
		time.Sleep(200 * time.Microsecond)
	}
	return false
}

// delivered returns a condition: generation gen's group has been delivered entry id.
func (r *replayRig) delivered(gen int64, id string) func() bool {
	group := r.keys.Gen(gen).Group()
	return func() bool {
		gs, err := r.rdb.XInfoGroups(context.Background(), r.keys.Stream()).Result()
		if err != nil {
			return false
		}
		for _, g := range gs {
			if g.Name == group {
				return events.CompareIDs(g.LastDeliveredID, id) >= 0
			}
		}
		return false
	}
}

func (r *replayRig) waitLockExpired(ctx context.Context) {
	r.t.Helper()
	waitUntil(ctx, r.t, "the killed rebuild's lock to expire", func() bool {
		n, err := r.rdb.Exists(ctx, r.keys.RebuildLock()).Result()
		return err == nil && n == 0
	})
}

func (r *replayRig) checkPointer(ctx context.Context, want int64) {
	r.t.Helper()
	v, err := r.rdb.Get(ctx, r.keys.Generation()).Result()
	if err != nil && err != redis.Nil {
		r.t.Fatal(err)
	}
	if got, _ := events.ParseGeneration(v); got != want {
		r.t.Errorf("generation pointer %d, want %d", got, want)
	}
}

// rebuildStatus is queryapi's /v1/rebuild.
type rebuildStatus struct {
	State             string `json:"state"`
	Generation        int64  `json:"generation"`
	CurrentGeneration int64  `json:"current_generation"`
	Applied           int64  `json:"applied"`
	StreamLength      int64  `json:"stream_length"`
	Rate              int64  `json:"rate"`
	ETASeconds        *int64 `json:"eta_seconds"`
	Error             string `json:"error"`
}

func (r *replayRig) status(ctx context.Context) rebuildStatus {
	r.t.Helper()
	var st rebuildStatus
	if err := r.query.Get(ctx, "/v1/rebuild", &st); err != nil {
		r.t.Fatal(err)
	}
	return st
}

// checkDone checks that generation gen is current and the rebuild recorded as done, and
// that no other generation's aggregates are left.
func (r *replayRig) checkDone(ctx context.Context, gen int64) {
	r.t.Helper()
	r.checkPointer(ctx, gen)
	if st := r.status(ctx); st.State != "done" || st.Generation != gen || st.CurrentGeneration != gen {
		r.t.Errorf("/v1/rebuild: %+v, want state done, generation %d current", st, gen)
	}
	for g := int64(1); g < gen; g++ {
		if n := r.countKeys(ctx, r.keys.Gen(g)); n > 1 {
			r.t.Errorf("replaced generation %d still has %d keys", g, n)
		}
	}
}

// countKeys counts the keys of a generation.
func (r *replayRig) countKeys(ctx context.Context, gen events.GenKeys) int {
	n := 0
	iter := r.rdb.Scan(ctx, 0, gen.Pattern(), 1000).Iterator()
	for iter.Next(ctx) {
		n++
	}
	if err := iter.Err(); err != nil {
		r.t.Fatal(err)
	}
	return n
}

// preload appends n events straight to the stream, as ingest writes them, and returns
// their ids.
func (r *replayRig) preload(n, users, products int, seed uint64) []string {
	r.t.Helper()
	src := wl.NewSource(seed, "pre-", users, products)
	ids := make([]string, 0, n)
	for start := 0; start < n; start += 1000 {
		pipe := r.rdb.Pipeline()
		cmds := make([]*redis.StringCmd, 0, 1000)
		for range min(1000, n-start) {
			w := src.Next()
			ev := events.Event{UserID: w.UserID, ProductID: w.ProductID, DurationMs: w.DurationMs}
			switch w.Type {
			case "page_view":
				ev.Type = events.PageView
			case "dwell":
				ev.Type = events.Dwell
			}
			cmds = append(cmds, pipe.XAdd(context.Background(), &redis.XAddArgs{Stream: r.keys.Stream(), Values: ev.AppendFields(nil)}))
		}
		if _, err := pipe.Exec(context.Background()); err != nil {
			r.t.Fatalf("preload: %v", err)
		}
		for _, c := range cmds {
			ids = append(ids, c.Val())
		}
	}
	return ids
}

// recountResult is the totals of every user and product, counted from the stream.
type recountResult struct {
	entries          int64
	users, products  map[string]wl.Counters
	userIDs, prodIDs []string
}

// recount reads the whole stream and counts it, independently of the pipeline.
func (r *replayRig) recount(ctx context.Context) recountResult {
	r.t.Helper()
	rc := recountResult{users: map[string]wl.Counters{}, products: map[string]wl.Counters{}}
	start := "-"
	for {
		msgs, err := r.rdb.XRangeN(ctx, r.keys.Stream(), start, "+", 10_000).Result()
		if err != nil {
			r.t.Fatal(err)
		}
		for _, m := range msgs {
			kv := make([]string, 0, 2*len(m.Values))
			for k, v := range m.Values {
				kv = append(kv, k, v.(string))
			}
			ev, err := events.DecodeEntry(kv)
			if err != nil {
				r.t.Fatalf("entry %s: %v", m.ID, err)
			}
			rc.entries++
			u, p := rc.users[ev.UserID], rc.products[ev.ProductID]
			count(&u, &ev)
			count(&p, &ev)
			u.UserID, p.ProductID = ev.UserID, ev.ProductID
			rc.users[ev.UserID], rc.products[ev.ProductID] = u, p
		}
		if len(msgs) < 10_000 {
			break
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
	for id := range rc.users {
		rc.userIDs = append(rc.userIDs, id)
	}
	for id := range rc.products {
		rc.prodIDs = append(rc.prodIDs, id)
	}
	return rc
}

func count(c *wl.Counters, ev *events.Event) {
	switch ev.Type {
	case events.Click:
		c.Clicks++
	case events.PageView:
		c.PageViews++
	case events.Dwell:
		c.DwellMs += ev.DurationMs
		c.DwellCount++
	}
}

// checkTotals compares every user's and product's counters in queryapi with rc.
func (r *replayRig) checkTotals(ctx context.Context, rc recountResult) {
	r.t.Helper()
	var bad []string
	check := func(path string, want wl.Counters) {
		var got wl.Counters
		if err := r.query.Get(ctx, path, &got); err != nil {
			r.t.Fatal(err)
		}
		if got != want {
			bad = append(bad, fmt.Sprintf("GET %s: got %+v, want %+v", path, got, want))
		}
	}
	for _, id := range rc.userIDs {
		check("/v1/users/"+id, rc.users[id])
	}
	for _, id := range rc.prodIDs {
		check("/v1/products/"+id, rc.products[id])
	}
	if len(bad) > 0 {
		r.t.Errorf("%d of %d totals differ from the recount of the stream; the first ones:\n%s",
			len(bad), len(rc.userIDs)+len(rc.prodIDs), strings.Join(bad[:min(len(bad), 10)], "\n"))
		return
	}
	r.t.Logf("all %d users' and %d products' totals equal the recount of the %d entries in the stream",
		len(rc.userIDs), len(rc.prodIDs), rc.entries)
}

// ----- the sampler -----

// sampler reads a fixed set of users and products from queryapi over and over, and
// checks every answer: against the exact totals when the stream stands still (exact),
// else that no counter went down since the last answer or below floor.
type sampler struct {
	q     *wl.Query
	paths []string
	exact *recountResult

	floor map[string]wl.Counters

	mu   sync.Mutex
	last map[string]wl.Counters
	bad  []string

	reads, passes, passesBuilding atomic.Int64
}

func newSampler(q *wl.Query, users, products int, exact *recountResult) *sampler {
	s := &sampler{q: q, exact: exact, last: map[string]wl.Counters{}}
	for i := range users {
		s.paths = append(s.paths, "/v1/users/"+wl.UserID(i))
	}
	for i := range products {
		s.paths = append(s.paths, "/v1/products/"+wl.ProductID(i))
	}
	return s
}

func (s *sampler) run(ctx context.Context) {
	for ctx.Err() == nil {
		var st rebuildStatus
		building := s.q.Get(ctx, "/v1/rebuild", &st) == nil && (st.State == "building" || st.State == "switching")
		if err := s.pass(ctx); err != nil && ctx.Err() == nil {
			s.fail("pass: %v", err)
			return
		}
		if building {
			s.passesBuilding.Add(1)
		}
	}
}

func (s *sampler) pass(ctx context.Context) error {
	for _, path := range s.paths {
		var got wl.Counters
		if err := s.q.Get(ctx, path, &got); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		s.reads.Add(1)
		got.UserID, got.ProductID = "", ""
		if s.exact != nil {
			var want wl.Counters
			if id, ok := strings.CutPrefix(path, "/v1/users/"); ok {
				want = s.exact.users[id]
			} else {
				want = s.exact.products[strings.TrimPrefix(path, "/v1/products/")]
			}
			want.UserID, want.ProductID = "", ""
			if got != want {
				s.fail("GET %s = %+v, want the exact %+v", path, got, want)
			}
			continue
		}
		s.mu.Lock()
		prev, seen := s.last[path]
		s.last[path] = got
		s.mu.Unlock()
		if seen && below(got, prev) {
			s.fail("GET %s = %+v after %+v: went backwards", path, got, prev)
		}
		if f, ok := s.floor[path]; ok && below(got, f) {
			s.fail("GET %s = %+v, below %+v answered when the rebuild started", path, got, f)
		}
	}
	s.passes.Add(1)
	return nil
}

func below(a, b wl.Counters) bool {
	return a.Clicks < b.Clicks || a.PageViews < b.PageViews || a.DwellMs < b.DwellMs || a.DwellCount < b.DwellCount
}

func (s *sampler) fail(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bad = append(s.bad, fmt.Sprintf(format, args...))
}

func (s *sampler) violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.bad...)
}

func (s *sampler) lastCopy() map[string]wl.Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]wl.Counters, len(s.last))
	for k, v := range s.last {
		out[k] = v
	}
	return out
}

// waitUntil polls cond every 10ms until it holds or ctx ends.
func waitUntil(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("gave up waiting for %s: %v", what, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
