package faults

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clickstream/pipeline/internal/proctest"
	"github.com/clickstream/pipeline/internal/workload"
)

// TestProcessorsKilled kills the two processors with SIGKILL, in turn, 20 times during
// a run of 200,000 events, each time while it holds entries it has read and not acked,
// and restarts it under a new consumer name (as a restarted host-pid name would be).
// The entries it held are claimed by the others after CLAIM_MIN_IDLE and applied once.
func TestProcessorsKilled(t *testing.T) {
	const (
		nEvents = 200_000
		kills   = 20
	)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p := startPipeline(ctx, t, setup{processors: 2})
	src := workload.NewSource(1, "kill-", users, products)
	batches := src.Batches(nEvents, batchMin, batchMax)
	exp := workload.NewExpected()
	poster := p.poster(exp)

	// Kill n (1-based) happens once n/(kills+1) of the events got a 202. Posting is held
	// back so that it never runs more than one kill ahead: every kill hits a busy
	// pipeline, none is left for after the last post.
	var killed atomic.Int64
	gate := func(i int) {
		for {
			allowed := (killed.Load() + 2) * int64(len(batches)) / (kills + 1)
			if int64(i) < allowed || ctx.Err() != nil {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	l := postAll(ctx, poster, batches, clients, gate)

	procs := append([]*proctest.Process(nil), p.procs...)
	generation := make([]int, len(procs))
	var holding []int64
	for n := 1; n <= kills; n++ {
		if err := waitEvents(ctx, poster, l, int64(n)*nEvents/(kills+1)); err != nil {
			t.Fatalf("kill %d: %v", n, err)
		}
		v := (n - 1) % len(procs)
		victim := procs[v]
		pending, err := proctest.KillHolding(victim, func() int64 { return p.pendingOf(victim.Name) })
		if err != nil {
			t.Fatalf("kill %d: %v", n, err)
		}
		holding = append(holding, pending)
		generation[v]++
		next, err := p.startProcessor(fmt.Sprintf("proc-%c-%d", 'a'+v, generation[v]))
		if err != nil {
			t.Fatalf("restart after kill %d: %v", n, err)
		}
		procs[v] = next
		killed.Add(1)
	}
	if err := l.wait(); err != nil {
		t.Fatal(err)
	}
	var held, withPending int64
	for _, n := range holding {
		held += n
		if n > 0 {
			withPending++
		}
	}
	t.Logf("%d SIGKILLs; %d of them hit a processor holding delivered, unacked entries (%d entries in all): %v",
		kills, withPending, held, holding)
	if withPending == 0 {
		t.Errorf("no kill left entries pending: the claim path was not exercised")
	}
	p.check(verdict{scenario: "a. 20 processor SIGKILLs", src: src, exp: exp, poster: poster, kills: kills})
	p.checkStillRunning(procs...)
}
