package servertest

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/clickstream/pipeline/internal/testlog"
)

// Run is a service's runWith with the test's environment: it serves on ln and logs to
// stderr until ctx is cancelled.
type Run func(ctx context.Context, stderr io.Writer, ln net.Listener) error

// CheckLifecycle starts the service n times in this process, each time lets work use
// it (base is http://host:port), then cancels its context, as SIGTERM does. It fails t
// unless run returns nil each time, having stopped and waited for every goroutine it
// started (see CheckReturned), unless no goroutine is left once all n have stopped
// (see CheckSettled), and if the service replaced go-redis's process-wide logger.
// known is passed on to CheckReturned.
func CheckLifecycle(t *testing.T, n int, run Run, work func(t testing.TB, base string, client *http.Client), known ...string) {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: true}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	before := TakeGoroutines()
	CheckRedisLogger(t, func() {
		for i := range n {
			once(t, run, work, client, before, known)
			if t.Failed() {
				t.Fatalf("failed at start %d of %d", i+1, n)
			}
		}
	})
	tr.CloseIdleConnections()
	before.CheckSettled(t)
}

// once starts the service, lets work use it, stops it and checks that run stopped
// every goroutine it started.
func once(t *testing.T, run Run, work func(testing.TB, string, *http.Client), client *http.Client, before Goroutines, known []string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := &testlog.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, logs, ln) }()
	returned := false
	defer func() {
		if !returned { // work failed the test
			cancel()
			<-done
		}
		if t.Failed() {
			t.Logf("the service's log:\n%s", logs.String())
		}
	}()
	work(t, "http://"+ln.Addr().String(), client)
	cancel()
	err = <-done
	returned = true
	if err != nil {
		t.Errorf("run returned %v after its context was cancelled, want nil", err)
	}
	before.CheckReturned(t, known...)
}
