package faults

import (
	"context"
	"testing"
	"time"

	"github.com/clickstream/pipeline/internal/workload"
)

// TestIngestTerminated sends ingest SIGTERM while clients have requests in flight.
// Ingest stops accepting connections, finishes the requests it has, and exits 0. Every
// request either got a 202, and its events are counted, or an error (refused, reset, or
// 503), and is retried; none got a 202 and was lost. Ingest is then started again on
// the same address and the run finishes.
func TestIngestTerminated(t *testing.T) {
	const nEvents = 60_000
	const clients = 2 * clients // more requests in flight at the signal
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := startPipeline(ctx, t, setup{processors: 2})
	src := workload.NewSource(4, "it-", users, products)
	exp := workload.NewExpected()
	poster := p.poster(exp)
	l := postAll(ctx, poster, src.Batches(nEvents, batchMin, batchMax), clients, nil)

	if err := waitEvents(ctx, poster, l, 2*nEvents/5); err != nil {
		t.Fatal(err)
	}
	// Phases of the attempts: started before the signal, during the shutdown, and with
	// ingest gone.
	shutdown := poster.Mark()
	if !p.ingest.Stop(30 * time.Second) {
		t.Fatalf("ingest did not exit within 30 s of SIGTERM; killed")
	}
	if err := p.ingest.Err(); err != nil {
		t.Errorf("ingest exited with %v after SIGTERM, want exit status 0", err)
	}
	gone := poster.Mark()
	if err := waitFor(ctx, "the attempts started before ingest exited to end", func() bool {
		return poster.Phase(shutdown-1).Running == 0 && poster.Phase(shutdown).Running == 0
	}); err != nil {
		t.Fatal(err)
	}
	before := poster.Phase(shutdown - 1)
	t.Logf("requests in flight at SIGTERM: %d answered 202, %d 503, %d connection errors, %d hung, %d wrong",
		before.EndedLater[workload.Accepted], before.EndedLater[workload.Unavailable], before.EndedLater[workload.ConnError],
		before.EndedLater[workload.Hung], before.EndedLater[workload.Wrong])
	if before.InFlight() == 0 {
		t.Errorf("no request was in flight when ingest got SIGTERM: the scenario tested nothing")
	}
	// Down until the clients have made an attempt each, on average; with nothing
	// listening, every one must fail to connect.
	if err := waitFor(ctx, "the clients to try", func() bool { return poster.Phase(gone).Total() >= clients }); err != nil {
		t.Fatal(err)
	}
	if ph := poster.Phase(gone); ph.Ended[workload.ConnError] != ph.Total() {
		t.Errorf("requests to a stopped ingest: %v by outcome (202, 503, connection error, hung, wrong), want connection errors only", ph.Ended)
	}
	var err error
	if p.ingest, err = p.startIngest(); err != nil {
		t.Fatal(err)
	}
	if err := l.wait(); err != nil {
		t.Fatal(err)
	}
	p.check(verdict{scenario: "d. ingest SIGTERM, requests in flight", src: src, exp: exp, poster: poster, kills: 1})
}
