package e2e

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clickstream/pipeline/internal/proctest"
	"github.com/clickstream/pipeline/internal/redistest"
)

// SIGTERM to a queryapi with open /v1/live streams ends every stream, and the process
// exits cleanly: an open dashboard never holds up a shutdown (net/http's Shutdown waits
// for handlers, and a stream's handler would otherwise run until its client left).
func TestLiveStreamsEndOnSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: starts redis-server and queryapi")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv := redistest.Start(t)
	f := proctest.NewTestFleet(t)
	addr, err := proctest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	p, err := f.Start(ctx, "queryapi", "queryapi", addr, "REDIS_URL="+srv.URL(), "REDIS_NAMESPACE="+redistest.Namespace(t),
		"QUERY_ADDR="+addr, "LIVE_INTERVAL=200ms")
	if err != nil {
		t.Fatal(err)
	}
	var bodies []io.ReadCloser
	for range 5 {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/live", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /v1/live: %s", resp.Status)
		}
		// Wait for the first snapshot, so the stream is surely open on the server.
		br := bufio.NewReader(resp.Body)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("before the first snapshot: %v", err)
			}
			if strings.HasPrefix(line, "id: ") {
				break
			}
		}
		bodies = append(bodies, io.NopCloser(br))
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for i, b := range bodies {
		// Reads the rest of the stream: it returns once the server has ended it.
		if _, err := io.Copy(io.Discard, b); err != nil && err != io.ErrUnexpectedEOF {
			t.Errorf("stream %d: %v", i+1, err)
		}
	}
	select {
	case <-p.Done():
		if err := p.Err(); err != nil {
			t.Errorf("queryapi exited with %v after SIGTERM, want a clean exit:\n%s", err, proctest.Tail(p.Log, 4<<10))
		}
	case <-ctx.Done():
		t.Fatal("queryapi did not exit after SIGTERM")
	}
}
