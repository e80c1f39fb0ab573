// Package e2e runs the real ingest, processor and queryapi binaries as OS processes
// against a private redis-server, and checks what a user of the pipeline cares about:
// after processors are killed with SIGKILL mid-run, every total is still exact.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
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

// The workload.
const (
	nUsers         = 200
	nProducts      = 50
	nEvents        = 50_000 // distinct events
	batchSize      = 100
	singleShare    = 0.10 // of events, posted one per request
	idShare        = 0.10 // of events, carrying an event_id
	retryShare     = 0.30 // of events with an event_id, posted a second time
	concurrentDups = 20   // events with an event_id posted twice at the same instant
	posters        = 8    // concurrent HTTP clients
)

// killAt are the shares of the postings after which the victim processor is killed.
var killAt = []float64{0.20, 0.45, 0.70}

func TestCrashRecoveryExactTotals(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: starts redis-server and the three services")
	}
	// Every wait below is bounded by this; the test never asserts on time.
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	setup := time.Now()

	srv := redistest.Start(t, redistest.AOF())
	rdb := srv.Client()
	ns := redistest.Namespace(t)
	keys := events.NewKeys(ns)
	group := keys.Gen(1).Group()
	f := proctest.NewTestFleet(t)

	env := func(extra ...string) []string {
		return append([]string{"REDIS_URL=" + srv.URL(), "REDIS_NAMESPACE=" + ns}, extra...)
	}
	startProcessor := func(name string) (*proctest.Process, error) {
		addr, err := proctest.FreeAddr()
		if err != nil {
			return nil, err
		}
		return f.Start(ctx, name, "processor", addr, env(
			"PROCESSOR_ADDR="+addr, "CONSUMER_NAME="+name, "CLAIM_MIN_IDLE=1s")...)
	}
	ingestAddr, err := proctest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	queryAddr, err := proctest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	// A flush that times out may still have been written, and an event without event_id
	// that is then posted again is stored twice: ingest documents that. The test's
	// expected totals are exact only if that never happens, so ingest gets more time
	// than its default 1s on a loaded test machine; a retry is reported below if it does.
	if _, err := f.Start(ctx, "ingest", "ingest", ingestAddr, env("INGEST_ADDR="+ingestAddr, "REDIS_TIMEOUT=5s")...); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Start(ctx, "queryapi", "queryapi", queryAddr, env("QUERY_ADDR="+queryAddr)...); err != nil {
		t.Fatal(err)
	}
	survivor, err := startProcessor("proc-a")
	if err != nil {
		t.Fatal(err)
	}
	victim, err := startProcessor("proc-b-0")
	if err != nil {
		t.Fatal(err)
	}

	t.Logf("redis-server, ingest, queryapi and 2 processors ready after %v (build included)", time.Since(setup).Round(time.Millisecond))

	w := newWorkload(rand.New(rand.NewPCG(1, 2)))
	t.Logf("workload: %d distinct events (%d with event_id, %d of them posted twice, %d of those concurrently), %d postings in %d requests, %d users, %d products",
		len(w.events), w.withID, w.reposted, concurrentDups, w.postings, len(w.requests), nUsers, nProducts)

	client := &http.Client{
		Timeout:   15 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 2 * posters},
	}
	ing := &poster{client: client, url: "http://" + ingestAddr + "/v1/events", tally: newTally()}
	postCtx, stopPosting := context.WithCancel(ctx)
	defer stopPosting()

	// Post everything, while the chaos goroutine kills and restarts the victim.
	start := time.Now()
	work := make(chan *request)
	var posting sync.WaitGroup
	var failOnce sync.Once
	for range posters {
		posting.Add(1)
		go func() {
			defer posting.Done()
			for r := range work {
				if err := ing.do(postCtx, r); err != nil {
					failOnce.Do(func() { t.Errorf("posting stopped: %v", err) })
					stopPosting()
				}
			}
		}()
	}
	postingDone := make(chan struct{})
	var kills []killRecord
	chaosDone := make(chan error, 1)
	go func() {
		var err error
		victim, kills, err = chaos(postCtx, rdb, keys.Stream(), group, victim, &ing.progress, w.postings, postingDone, startProcessor)
		chaosDone <- err
	}()
feed:
	for _, r := range w.requests {
		select {
		case work <- r:
		case <-postCtx.Done():
			break feed
		}
	}
	close(work)
	posting.Wait()
	posted := time.Since(start)
	close(postingDone)
	if err := <-chaosDone; err != nil {
		t.Fatalf("kill and restart: %v", err)
	}
	if t.Failed() {
		t.FailNow()
	}
	exp := ing.tally
	t.Logf("ingest: %d events in %d requests got 202 in %v: %.0f events/s (accepted %d, duplicates %d, non-202 answers retried %d)",
		exp.posted, len(w.requests)+concurrentDups, posted.Round(time.Millisecond), float64(exp.posted)/posted.Seconds(),
		exp.accepted, exp.duplicates, exp.retried)
	for _, k := range kills {
		t.Logf("killed %s with SIGKILL after %.0f%% of the postings, holding %d delivered but unacked entries; restarted as %s",
			k.name, 100*k.at, k.pending, k.next)
	}
	if len(kills) < len(killAt) {
		t.Fatalf("only %d of %d kills happened before posting ended", len(kills), len(killAt))
	}
	if !slices.ContainsFunc(kills, func(k killRecord) bool { return k.pending > 0 }) {
		t.Errorf("no kill left entries pending: the claim path was not exercised")
	}

	query := wl.NewQuery(client, "http://"+queryAddr)
	pl, err := query.WaitDrained(ctx)
	if err != nil {
		t.Fatal(err)
	}
	drained := time.Since(start)
	distinct := exp.totals.Distinct()
	for _, p := range []*proctest.Process{survivor, victim} {
		if p.Exited() {
			t.Errorf("%s exited unexpectedly: %v", p.Name, p.Err())
		}
	}
	t.Logf("processing: %d events applied in %v from first post to drained: %.0f events/s",
		distinct, drained.Round(time.Millisecond), float64(distinct)/drained.Seconds())
	claimed, skipped := claimStats(t, f)
	t.Logf("processors claimed %d entries left pending by other consumers and skipped %d redeliveries already applied; the group has %d consumers (dead ones are reaped after CONSUMER_EXPIRY)",
		claimed, skipped, pl.Groups[0].Consumers)

	// The stream holds each event once, nothing was dead-lettered.
	if len(pl.Groups) != 1 || pl.Groups[0].Name != group {
		t.Errorf("groups %+v, want only %q", pl.Groups, group)
	}
	if pl.Length != int64(distinct) {
		t.Errorf("stream length %d, want %d distinct accepted events (%d postings, %d non-202 answers retried)",
			pl.Length, distinct, exp.posted, exp.retried)
	}
	if pl.DeadLetter.Length != 0 {
		t.Errorf("dead-letter stream %s holds %d entries, want 0", pl.DeadLetter.Stream, pl.DeadLetter.Length)
	}
	if exp.retried == 0 {
		// Without retries, the 202 answers account for every posting exactly.
		if exp.accepted != distinct || exp.duplicates != exp.posted-distinct {
			t.Errorf("202 answers: accepted %d, duplicates %d; want %d and %d",
				exp.accepted, exp.duplicates, distinct, exp.posted-distinct)
		}
	}
	for _, pair := range exp.pairs {
		if pair != 1 {
			t.Errorf("an event posted twice at once was accepted %d times, want 1", pair)
			break
		}
	}
	checkTotals(ctx, t, query, exp)
	checkRanking(ctx, t, query, exp)
}

// checkTotals compares every user's and every product's four counters with exp.
func checkTotals(ctx context.Context, t *testing.T, query *wl.Query, exp *tally) {
	t.Helper()
	users := make([]string, nUsers)
	for u := range users {
		users[u] = wl.UserID(u)
	}
	products := make([]string, nProducts)
	for p := range products {
		products[p] = wl.ProductID(p)
	}
	sum, err := query.Check(ctx, exp.totals, users, products)
	if err != nil {
		t.Errorf("%v\n(%d non-202 answers were retried)", err, exp.retried)
		return
	}
	t.Logf("all %s", sum)
}

// checkRanking compares /v1/products/top, in full and cut short, with exp.
func checkRanking(ctx context.Context, t *testing.T, query *wl.Query, exp *tally) {
	t.Helper()
	wantTop := make([]productClicks, 0, nProducts)
	for p := range nProducts {
		if c := exp.totals.Product(wl.ProductID(p)).Clicks; c > 0 {
			wantTop = append(wantTop, productClicks{wl.ProductID(p), c})
		}
	}
	slices.SortStableFunc(wantTop, func(a, b productClicks) int { return int(b.Clicks - a.Clicks) })
	for _, limit := range []int{nProducts, 5} {
		var got []productClicks
		if err := query.Get(ctx, "/v1/products/top?limit="+strconv.Itoa(limit), &got); err != nil {
			t.Fatal(err)
		}
		want := wantTop[:min(limit, len(wantTop))]
		if err := sameRanking(got, want, exp.totals); err != nil {
			t.Errorf("GET /v1/products/top?limit=%d: %v\ngot  %v\nwant %v", limit, err, got, want)
		}
	}
}

// ----- the workload -----

// request is one POST to ingest.
type request struct {
	contentType string
	body        []byte
	events      []wl.Event // the events in body
	concurrent  bool       // post it from two clients at the same instant
}

type workload struct {
	events   []wl.Event
	requests []*request
	withID   int // events with an event_id
	reposted int // of those, posted twice
	postings int // events in all requests, copies included (a concurrent pair counts twice)
}

// newWorkload generates the events and cuts them into requests: about 10% posted one
// per request, the rest in JSON-array and NDJSON batches of 100; about 10% carry an
// event_id, and 30% of those are posted a second time in some other request (a client
// retry), a few of them by two clients at once.
func newWorkload(rng *rand.Rand) *workload {
	w := &workload{events: make([]wl.Event, nEvents)}
	var withID []int
	for i := range w.events {
		// Products are skewed, so that the ranking has a clear head and a long tail.
		ev := wl.Random(rng, nUsers, nProducts)
		if rng.Float64() < idShare {
			ev.EventID = fmt.Sprintf("ev-%06d", i)
			withID = append(withID, i)
		}
		w.events[i] = ev
	}
	w.withID = len(withID)
	pairs := withID[:concurrentDups]
	isPair := make(map[int]bool)
	for _, i := range pairs {
		isPair[i] = true
	}
	var postings []int
	for i := range w.events {
		if !isPair[i] {
			postings = append(postings, i)
		}
	}
	w.reposted = concurrentDups
	for _, i := range withID[concurrentDups:] {
		if rng.Float64() < retryShare {
			postings = append(postings, i)
			w.reposted++
		}
	}
	rng.Shuffle(len(postings), func(a, b int) { postings[a], postings[b] = postings[b], postings[a] })
	w.postings = len(postings) + 2*len(pairs)

	// A request is a single with probability s, else a batch of batchSize; s is chosen so
	// that singles carry singleShare of the events: s/(s+batchSize(1-s)) = singleShare.
	s := singleShare * batchSize / (1 - singleShare + singleShare*batchSize)
	for len(postings) > 0 {
		if rng.Float64() < s {
			w.requests = append(w.requests, w.single(postings[0]))
			postings = postings[1:]
			continue
		}
		n := min(batchSize, len(postings))
		w.requests = append(w.requests, w.batch(postings[:n], rng.IntN(2) == 0))
		postings = postings[n:]
	}
	for _, i := range pairs {
		r := w.single(i)
		r.concurrent = true
		w.requests = append(w.requests, r)
	}
	rng.Shuffle(len(w.requests), func(a, b int) { w.requests[a], w.requests[b] = w.requests[b], w.requests[a] })
	return w
}

// single is a request of one event, posted as a JSON object rather than an array.
func (w *workload) single(i int) *request {
	b, _ := json.Marshal(w.events[i])
	return &request{contentType: "application/json", body: b, events: w.events[i : i+1]}
}

func (w *workload) batch(idx []int, ndjson bool) *request {
	r := &request{events: make([]wl.Event, len(idx))}
	for j, i := range idx {
		r.events[j] = w.events[i]
	}
	r.contentType, r.body = wl.Body(r.events, ndjson)
	return r
}

// ----- posting and the expected totals -----

// tally is what the test expects, built from the 202 answers only: the events of a
// request that got 202 count, an event_id counts once however often it was accepted.
type tally struct {
	totals *wl.Expected // every user's and product's counters, and the stream length

	mu         sync.Mutex
	posted     int   // events in requests that got 202, copies included
	accepted   int   // sums of the 202 answers' fields
	duplicates int   //
	retried    int   // non-202 answers (the request was sent again)
	pairs      []int // per concurrent pair: how many of the two posts were accepted
}

func newTally() *tally { return &tally{totals: wl.NewExpected()} }

func (t *tally) record(r *request, a accepted) {
	t.mu.Lock()
	t.posted += len(r.events)
	t.accepted += a.Accepted
	t.duplicates += a.Duplicates
	t.mu.Unlock()
	t.totals.Add(r.events)
}

// accepted is ingest's 202 body.
type accepted struct {
	Accepted   int `json:"accepted"`
	Duplicates int `json:"duplicates"`
}

// poster posts requests to ingest until each gets a 202.
type poster struct {
	client   *http.Client
	url      string
	tally    *tally
	progress atomic.Int64 // events in requests that got 202
}

func (p *poster) do(ctx context.Context, r *request) error {
	if !r.concurrent {
		a, err := p.post(ctx, r)
		if err != nil {
			return err
		}
		p.tally.record(r, a)
		p.progress.Add(int64(len(r.events)))
		return nil
	}
	// Two clients send the same event at the same instant; exactly one may write it.
	var wg sync.WaitGroup
	var res [2]accepted
	var errs [2]error
	ready := make(chan struct{})
	for k := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-ready
			res[k], errs[k] = p.post(ctx, r)
		}()
	}
	close(ready)
	wg.Wait()
	for k := range 2 {
		if errs[k] != nil {
			return errs[k]
		}
		p.tally.record(r, res[k])
		p.progress.Add(int64(len(r.events)))
	}
	p.tally.mu.Lock()
	p.tally.pairs = append(p.tally.pairs, res[0].Accepted+res[1].Accepted)
	p.tally.mu.Unlock()
	return nil
}

// post sends r until it gets a 202, retrying 5xx answers and transport errors (ingest
// promises nothing about a request it did not answer 202). A 4xx is a bug in the test
// or the service and is not retried.
func (p *poster) post(ctx context.Context, r *request) (accepted, error) {
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(r.body))
		if err != nil {
			return accepted{}, err
		}
		req.Header.Set("Content-Type", r.contentType)
		resp, err := p.client.Do(req)
		var status int
		var body []byte
		if err == nil {
			status = resp.StatusCode
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if err == nil && status == http.StatusAccepted {
			var a accepted
			if err := json.Unmarshal(body, &a); err != nil {
				return a, fmt.Errorf("202 body %q: %w", body, err)
			}
			if a.Accepted+a.Duplicates != len(r.events) {
				return a, fmt.Errorf("202 body %s for a request of %d events", body, len(r.events))
			}
			return a, nil
		}
		if ctx.Err() != nil {
			return accepted{}, ctx.Err()
		}
		if err == nil && status < 500 {
			return accepted{}, fmt.Errorf("POST %s (%s, %d events): %d %s", p.url, r.contentType, len(r.events), status, body)
		}
		p.tally.mu.Lock()
		p.tally.retried++
		p.tally.mu.Unlock()
		select {
		case <-ctx.Done():
			return accepted{}, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ----- killing and restarting a processor -----

type killRecord struct {
	name    string  // the consumer killed
	at      float64 // share of the postings done
	pending int64   // entries delivered to it and not acked when it died
	next    string  // the consumer that replaced it
}

// chaos kills victim with SIGKILL once progress passes each of killAt's shares of
// total, and restarts it under a new consumer name, as a restarted process with the
// default name (host-pid) would get. It returns the last incarnation.
//
// A SIGKILL at a random instant would mostly hit a processor idle in XREADGROUP that
// holds nothing, and prove nothing. So the victim is killed with proctest.KillHolding:
// frozen first, and killed once Redis shows entries delivered to it but not acked.
// Only other consumers can apply them.
func chaos(ctx context.Context, rdb *redis.Client, stream, group string, victim *proctest.Process,
	progress *atomic.Int64, total int, postingDone <-chan struct{},
	start func(name string) (*proctest.Process, error)) (*proctest.Process, []killRecord, error) {
	var kills []killRecord
	for n, share := range killAt {
		for progress.Load() < int64(share*float64(total)) {
			select {
			case <-postingDone:
				return victim, kills, nil
			case <-ctx.Done():
				return victim, kills, nil
			case <-time.After(2 * time.Millisecond):
			}
		}
		k := killRecord{name: victim.Name, at: float64(progress.Load()) / float64(total)}
		var err error
		k.pending, err = proctest.KillHolding(victim, func() int64 {
			return proctest.Pending(ctx, rdb, stream, group, victim.Name)
		})
		if err != nil {
			return victim, kills, err
		}
		k.next = fmt.Sprintf("proc-b-%d", n+1)
		kills = append(kills, k)
		next, err := start(k.next)
		if err != nil {
			return victim, kills, err
		}
		victim = next
	}
	return victim, kills, nil
}

var (
	claimedRe = regexp.MustCompile(`msg="claimed entries left pending by another consumer" .*entries=(\d+)`)
	skippedRe = regexp.MustCompile(`msg="entries already applied by another consumer were skipped" .*skipped=(\d+)`)
)

// claimStats sums, over the processors' logs, the entries they claimed from other
// consumers and the redeliveries they skipped.
func claimStats(t *testing.T, f *proctest.Fleet) (claimed, skipped int) {
	for _, p := range f.Processes() {
		file, err := os.Open(p.Log)
		if err != nil {
			t.Error(err)
			continue
		}
		sc := bufio.NewScanner(file)
		for sc.Scan() {
			if m := claimedRe.FindStringSubmatch(sc.Text()); m != nil {
				n, _ := strconv.Atoi(m[1])
				claimed += n
			}
			if m := skippedRe.FindStringSubmatch(sc.Text()); m != nil {
				n, _ := strconv.Atoi(m[1])
				skipped += n
			}
		}
		file.Close()
	}
	return claimed, skipped
}

// ----- reading queryapi -----

// productClicks is an entry of queryapi's /v1/products/top.
type productClicks struct {
	ProductID string `json:"product_id"`
	Clicks    int64  `json:"clicks"`
}

// sameRanking checks got against want, the expected ranking: the same length, every
// product's clicks exact, highest first. Products with equal clicks may come in any
// order, so positions are compared by clicks, not by product.
func sameRanking(got, want []productClicks, exp *wl.Expected) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d products, want %d", len(got), len(want))
	}
	seen := map[string]bool{}
	for i, g := range got {
		if seen[g.ProductID] {
			return fmt.Errorf("%s listed twice", g.ProductID)
		}
		seen[g.ProductID] = true
		if c := exp.Product(g.ProductID).Clicks; g.Clicks != c {
			return fmt.Errorf("position %d: %s has %d clicks, want %d", i+1, g.ProductID, g.Clicks, c)
		}
		if g.Clicks != want[i].Clicks {
			return fmt.Errorf("position %d: %s with %d clicks, want a product with %d (%s)",
				i+1, g.ProductID, g.Clicks, want[i].Clicks, want[i].ProductID)
		}
	}
	return nil
}
