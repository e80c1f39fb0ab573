package servertest

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/logging"
)

// CheckRedisLogger fails t if use, which starts and stops a service in-process, replaces
// go-redis's logger: that logger is one per process, so a service that set it in its
// run would send the go-redis lines of every other service in the process (and of the
// test) to its own log. main sets it, once.
func CheckRedisLogger(t testing.TB, use func()) {
	t.Helper()
	rec := &redisRecorder{}
	redis.SetLogger(rec)
	defer logging.Enable() // go-redis's own logger, to stderr
	use()
	// A dial that fails is one thing go-redis logs on its own.
	c := redis.NewClient(&redis.Options{Network: "unix", Addr: filepath.Join(t.TempDir(), "no.sock"), DialerRetries: 1, MaxRetries: -1})
	defer c.Close()
	if err := c.Ping(context.Background()).Err(); err == nil {
		t.Fatal("PING to a socket nobody listens on succeeded")
	}
	if !rec.has("failed to dial") {
		t.Errorf("go-redis's log no longer goes to the logger the test set: the service replaced it (lines the test's logger got: %q)", rec.String())
	}
}

// redisRecorder is a go-redis logger that keeps what it is given.
type redisRecorder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (r *redisRecorder) Printf(_ context.Context, format string, v ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(&r.b, format+"\n", v...)
}

func (r *redisRecorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.b.String()
}

func (r *redisRecorder) has(s string) bool { return strings.Contains(r.String(), s) }
