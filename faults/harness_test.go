// Package faults injects the faults a production pipeline meets into the real
// binaries, each run as an OS process against a private redis-server: processors
// killed with SIGKILL, Redis killed and restarted, Redis frozen, ingest stopped with
// requests in flight, junk written straight into the stream, and hostile requests.
// After each fault the test checks what a user cares about: every user's and product's
// four counters equal, exactly, what the 202 answers imply, and no client ever hung.
//
// Each test logs one line that starts with "RESULT |", so that a run's results read as
// a table: go test -v ./faults/ | grep 'RESULT |'.
package faults

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/proctest"
	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/clickstream/pipeline/internal/workload"
	"github.com/redis/go-redis/v9"
)

func TestMain(m *testing.M) { proctest.Main(m) }

// The workload of every scenario: events over these users and products, posted in
// batches of batchMin to batchMax events, by clients concurrent clients.
const (
	users    = 500
	products = 100
	batchMin = 100
	batchMax = 500
	clients  = 8
)

// clientTimeout bounds every HTTP request a test makes. Ingest promises a 503 within
// REDIS_TIMEOUT (1 s) plus a quarter second, so an attempt that reaches this counts as
// a hung client, which fails the test.
const clientTimeout = 5 * time.Second

// pipeline is one private redis-server with ingest, processors and queryapi running
// against it as OS processes, all stopped when the test ends.
type pipeline struct {
	t      *testing.T
	ctx    context.Context
	redis  *redistest.Server
	rdb    *redis.Client
	keys   events.Keys
	fleet  *proctest.Fleet
	env    []string // REDIS_URL and REDIS_NAMESPACE, the part of every service's environment
	client *http.Client

	ingestAddr   string
	ingestEnv    []string
	ingestStarts int
	procEnv      []string
	ingest       *proctest.Process
	queryAddr    string
	queryapi     *proctest.Process
	procs        []*proctest.Process // the processors started first, in order
	query        *workload.Query
}

// setup is what startPipeline starts.
type setup struct {
	processors int                // named proc-a-0, proc-b-0, …
	redis      []redistest.Option // redis-server's options
	ingestEnv  []string           // added to ingest's environment
	procEnv    []string           // added to every processor's environment
}

// startPipeline starts Redis, ingest, queryapi and the processors; ctx bounds every
// wait of the test.
func startPipeline(ctx context.Context, t *testing.T, s setup) *pipeline {
	t.Helper()
	if testing.Short() {
		t.Skip("fault test: starts redis-server and the services as processes")
	}
	srv := redistest.Start(t, s.redis...)
	ns := redistest.Namespace(t)
	p := &pipeline{
		t: t, ctx: ctx, redis: srv, rdb: srv.Client(), keys: events.NewKeys(ns),
		ingestEnv: s.ingestEnv, procEnv: s.procEnv,
		fleet:  proctest.NewTestFleet(t),
		env:    []string{"REDIS_URL=" + srv.URL(), "REDIS_NAMESPACE=" + ns},
		client: &http.Client{Timeout: clientTimeout, Transport: &http.Transport{MaxIdleConnsPerHost: 4 * clients}},
	}
	t.Cleanup(p.client.CloseIdleConnections)
	var err error
	if p.ingestAddr, err = proctest.FreeAddr(); err != nil {
		t.Fatal(err)
	}
	if p.ingest, err = p.startIngest(); err != nil {
		t.Fatal(err)
	}
	if p.queryAddr, err = proctest.FreeAddr(); err != nil {
		t.Fatal(err)
	}
	if p.queryapi, err = p.fleet.Start(ctx, "queryapi", "queryapi", p.queryAddr, p.envWith("QUERY_ADDR="+p.queryAddr)...); err != nil {
		t.Fatal(err)
	}
	p.query = workload.NewQuery(p.client, "http://"+p.queryAddr)
	for i := range s.processors {
		proc, err := p.startProcessor(fmt.Sprintf("proc-%c-0", 'a'+i))
		if err != nil {
			t.Fatal(err)
		}
		p.procs = append(p.procs, proc)
	}
	return p
}

func (p *pipeline) envWith(vars ...string) []string {
	return append(append([]string(nil), p.env...), vars...)
}

// startIngest starts ingest on the pipeline's ingest address, the same every time, so
// that clients find a restarted ingest where they left it. Its starts are named
// ingest, ingest-1, ingest-2, … (their log files).
func (p *pipeline) startIngest() (*proctest.Process, error) {
	name := "ingest"
	if p.ingestStarts > 0 {
		name = fmt.Sprintf("ingest-%d", p.ingestStarts)
	}
	p.ingestStarts++
	env := p.envWith(append([]string{"INGEST_ADDR=" + p.ingestAddr}, p.ingestEnv...)...)
	return p.fleet.Start(p.ctx, name, "ingest", p.ingestAddr, env...)
}

// startProcessor starts a processor whose consumer name is name. CLAIM_MIN_IDLE is 1 s,
// so that the entries a killed processor held are taken over quickly.
func (p *pipeline) startProcessor(name string) (*proctest.Process, error) {
	addr, err := proctest.FreeAddr()
	if err != nil {
		return nil, err
	}
	env := p.envWith(append([]string{"PROCESSOR_ADDR=" + addr, "CONSUMER_NAME=" + name, "CLAIM_MIN_IDLE=1s"}, p.procEnv...)...)
	return p.fleet.Start(p.ctx, name, "processor", addr, env...)
}

// poster returns a poster to this pipeline's ingest that adds to exp.
func (p *pipeline) poster(exp *workload.Expected) *workload.Poster {
	return workload.NewPoster(p.client, "http://"+p.ingestAddr+"/v1/events", exp)
}

// pendingOf returns how many entries the group has delivered to consumer and not acked.
func (p *pipeline) pendingOf(consumer string) int64 {
	return proctest.Pending(p.ctx, p.rdb, p.keys.Stream(), p.keys.Gen(1).Group(), consumer)
}

// checkQueryUnavailable checks that queryapi answers a read with 503 and Retry-After
// (while Redis is down or frozen) rather than hang or fail otherwise.
func (p *pipeline) checkQueryUnavailable(what string) {
	p.t.Helper()
	path := "/v1/users/" + workload.UserID(0)
	resp, err := p.client.Get("http://" + p.queryAddr + path)
	if err != nil {
		p.t.Errorf("GET %s %s: %v, want 503", path, what, err)
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		p.t.Errorf("GET %s %s: %d with Retry-After %q, want 503 with Retry-After", path, what, resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

// checkStillRunning fails the test for each process that exited: the point of some
// scenarios is that the services recover without a restart.
func (p *pipeline) checkStillRunning(procs ...*proctest.Process) {
	p.t.Helper()
	for _, proc := range procs {
		if proc.Exited() {
			p.t.Errorf("%s exited, want it to recover by itself: %v", proc.Name, proc.Err())
		}
	}
}

// load posts batches with clients concurrent clients until each got a 202.
type load struct {
	done chan struct{}
	err  error
}

// postAll starts posting batches, alternating JSON arrays and NDJSON. gate, when not
// nil, is called before batch i is handed to a client and may block to hold the
// posting back.
func postAll(ctx context.Context, poster *workload.Poster, batches [][]workload.Event, clients int, gate func(i int)) *load {
	l := &load{done: make(chan struct{})}
	ctx, cancel := context.WithCancel(ctx)
	work := make(chan int)
	var wg sync.WaitGroup
	var once sync.Once
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if err := poster.Post(ctx, batches[i], i%2 == 1); err != nil {
					once.Do(func() { l.err = fmt.Errorf("batch %d: %w", i, err) })
					cancel()
				}
			}
		}()
	}
	go func() {
		defer close(l.done)
		defer cancel()
	feed:
		for i := range batches {
			if gate != nil {
				gate(i)
			}
			select {
			case work <- i:
			case <-ctx.Done():
				break feed
			}
		}
		close(work)
		wg.Wait()
	}()
	return l
}

// wait returns once every batch got a 202 or posting failed.
func (l *load) wait() error {
	<-l.done
	return l.err
}

// waitEvents waits until requests holding at least n events got a 202, or posting
// ended, or ctx ended.
func waitEvents(ctx context.Context, poster *workload.Poster, l *load, n int64) error {
	for poster.Stats.Events.Load() < n {
		select {
		case <-l.done:
			return errors.New("posting ended before the fault was injected")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
	return nil
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, what string, cond func() bool) error {
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// verdict is the end of every scenario: the pipeline drained, the stream holds each
// accepted event once (plus extra entries written around ingest), nothing was
// dead-lettered unless expected, no client hung or got a wrong answer, and every user's
// and product's counters are exact. It logs the scenario's RESULT line.
type verdict struct {
	scenario   string
	src        *workload.Source
	exp        *workload.Expected
	poster     *workload.Poster
	kills      int   // processes killed (SIGKILL or SIGTERM) or frozen during the run
	extra      int64 // entries written into the stream by other clients
	deadLetter int64 // entries expected in the dead-letter stream

	// more, when set, checks whatever else the scenario promises, once drained.
	more func(workload.Pipeline)
}

func (p *pipeline) check(v verdict) {
	t := p.t
	t.Helper()
	s := &v.poster.Stats
	result := "exact"
	defer func() {
		if t.Failed() {
			result = "FAILED"
		}
		t.Logf("RESULT | %-38s | events %7d | 202s %5d | 503s %4d | conn errors %4d | hung %d | kills %2d | %s",
			v.scenario, v.exp.Distinct(), s.Accepted.Load(), s.Unavailable.Load(), s.ConnErrors.Load(), s.Hung.Load(), v.kills, result)
	}()
	if n := s.Hung.Load(); n > 0 {
		t.Errorf("%d requests got no answer within %v: a client hung", n, clientTimeout)
	}
	if n := s.Wrong.Load(); n > 0 {
		t.Errorf("%d requests got an answer other than 202 or 503 with Retry-After; the first: %q", n, v.poster.WrongAnswers())
	}
	pl, err := p.query.WaitDrained(p.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(v.exp.Distinct()) + v.extra; pl.Length != want {
		t.Errorf("stream length %d, want %d: %d distinct events answered 202 and %d entries written directly",
			pl.Length, want, v.exp.Distinct(), v.extra)
	}
	if pl.DeadLetter.Length != v.deadLetter {
		t.Errorf("dead-letter stream %s holds %d entries, want %d", pl.DeadLetter.Stream, pl.DeadLetter.Length, v.deadLetter)
	}
	sum, err := p.query.Check(p.ctx, v.exp, v.src.UserIDs(), v.src.ProductIDs())
	if err != nil {
		t.Error(err)
	} else {
		t.Logf("totals: %v", sum)
	}
	if v.more != nil {
		v.more(pl)
	}
}
