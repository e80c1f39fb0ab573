package faults

import (
	"context"
	"testing"
	"time"

	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/clickstream/pipeline/internal/workload"
)

// TestRedisKilled kills Redis with SIGKILL mid-run and starts it again on its AOF
// (appendfsync always). While it is down, ingest answers 503 with Retry-After and no
// client hangs; afterwards ingest, the processors and queryapi recover by themselves,
// without a restart, and no event that got a 202 is lost.
func TestRedisKilled(t *testing.T) {
	const nEvents = 60_000
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := startPipeline(ctx, t, setup{processors: 2, redis: []redistest.Option{redistest.AOF()}})
	src := workload.NewSource(2, "rk-", users, products)
	exp := workload.NewExpected()
	poster := p.poster(exp)
	l := postAll(ctx, poster, src.Batches(nEvents, batchMin, batchMax), clients, nil)

	if err := waitEvents(ctx, poster, l, nEvents/3); err != nil {
		t.Fatal(err)
	}
	attempts := &poster.Stats.Attempts
	unavailable := &poster.Stats.Unavailable
	attemptsBefore, unavailableBefore := attempts.Load(), unavailable.Load()
	p.redis.Kill()
	// A request sent now (with events of its own) gets a 503 with Retry-After: ingest
	// stays up and says so; so does queryapi.
	probe := src.Batch(batchMin)
	o, a, err := poster.Try(ctx, probe, false)
	if err != nil {
		t.Fatal(err)
	}
	if o != workload.Unavailable {
		t.Errorf("POST with Redis killed: %v (%v), want 503 with Retry-After", o, a)
	}
	p.checkQueryUnavailable("with Redis killed")
	// Down until the clients have made two attempts each, on average.
	if err := waitFor(ctx, "the clients to try", func() bool { return attempts.Load()-attemptsBefore >= 2*clients }); err != nil {
		t.Fatal(err)
	}
	p.redis.Restart()
	if err := poster.Post(ctx, probe, false); err != nil {
		t.Fatal(err)
	}
	if err := l.wait(); err != nil {
		t.Fatal(err)
	}
	if unavailable.Load() == unavailableBefore {
		t.Errorf("no client got a 503 while Redis was down")
	}
	p.check(verdict{scenario: "b. Redis SIGKILL + restart (AOF)", src: src, exp: exp, poster: poster, kills: 1})
	p.checkStillRunning(append(p.procs, p.ingest, p.queryapi)...)
}

// TestRedisFrozen freezes Redis with SIGSTOP for 5 s: its connections stay open and
// nothing answers. Ingest answers 503 with Retry-After within its timeout rather than
// hang; after SIGCONT everything resumes by itself. What Redis then performs for
// clients that gave up meanwhile must be harmless: ingest's writes, because the
// retries carry the same event_ids; the processors' reads, whose entries stay pending
// until claimed; and their applies, which a retry must not count again. The processors
// get REDIS_TIMEOUT=2s so that their calls in flight give up during the freeze, and
// CLAIM_MIN_IDLE=10s so that such a retry comes before any claim changes the picture.
func TestRedisFrozen(t *testing.T) {
	const nEvents = 60_000
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := startPipeline(ctx, t, setup{processors: 2, procEnv: []string{"REDIS_TIMEOUT=2s", "CLAIM_MIN_IDLE=10s"}})
	src := workload.NewSource(3, "rf-", users, products)
	exp := workload.NewExpected()
	poster := p.poster(exp)
	l := postAll(ctx, poster, src.Batches(nEvents, batchMin, batchMax), clients, nil)

	if err := waitEvents(ctx, poster, l, nEvents/3); err != nil {
		t.Fatal(err)
	}
	before := poster.Stats.Unavailable.Load()
	// Frozen just after a processor read a batch it has not applied: its apply is then
	// most likely under way, and it is the one call whose late execution would matter.
	for range 200 {
		if p.pendingOf(p.procs[0].Name)+p.pendingOf(p.procs[1].Name) > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	p.redis.Stop()
	frozen := time.Now()
	probe := src.Batch(batchMin)
	o, a, err := poster.Try(ctx, probe, true)
	if err != nil {
		t.Fatal(err)
	}
	if o != workload.Unavailable {
		t.Errorf("POST with Redis frozen: %v (%v), want 503 with Retry-After", o, a)
	}
	p.checkQueryUnavailable("with Redis frozen")
	// Not an assertion: the freeze lasts 5 s whatever the answers took.
	select {
	case <-time.After(5*time.Second - time.Since(frozen)):
	case <-ctx.Done():
	}
	during := poster.Stats.Unavailable.Load() - before
	p.redis.Cont()
	if err := poster.Post(ctx, probe, true); err != nil {
		t.Fatal(err)
	}
	if err := l.wait(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d answers were 503 with Retry-After while Redis was frozen", during)
	p.check(verdict{scenario: "c. Redis SIGSTOP 5 s + SIGCONT", src: src, exp: exp, poster: poster, kills: 1})
	p.checkStillRunning(append(p.procs, p.ingest, p.queryapi)...)
}
