package generations

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/clickstream/pipeline/internal/redistest"
)

// One holder at a time: a second is refused and told who holds the lock; only the
// holder refreshes or releases it; once released (or expired) the next one gets it.
func TestLock(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	key := redistest.Namespace(t) + ":lock"
	a := NewLock(rdb, key, "a", time.Minute)
	b := NewLock(rdb, key, "b", time.Minute)

	if holder, err := a.Acquire(ctx); err != nil || holder != "a" {
		t.Fatalf("a.Acquire = %q, %v; want a", holder, err)
	}
	if holder, err := b.Acquire(ctx); !errors.Is(err, ErrHeld) || holder != "a" {
		t.Fatalf("b.Acquire = %q, %v; want a, ErrHeld", holder, err)
	}
	if ok, err := b.Refresh(ctx); err != nil || ok {
		t.Errorf("b.Refresh = %v, %v; want false", ok, err)
	}
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if v := rdb.Get(ctx, key).Val(); v != "a" {
		t.Fatalf("after b.Release the lock holds %q, want a", v)
	}
	if ok, err := a.Refresh(ctx); err != nil || !ok {
		t.Errorf("a.Refresh = %v, %v; want true", ok, err)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if holder, err := b.Acquire(ctx); err != nil || holder != "b" {
		t.Fatalf("b.Acquire after a.Release = %q, %v; want b", holder, err)
	}
	if ttl := rdb.PTTL(ctx, key).Val(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("lock expiry %v, want within a minute", ttl)
	}
}

// Keep cancels the work with ErrLost once the lock is gone (expired and taken by
// someone else), and returns when the work's context ends.
func TestLockKeep(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	key := redistest.Namespace(t) + ":lock"
	l := NewLock(rdb, key, "me", 500*time.Millisecond)
	if _, err := l.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	work, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan struct{})
	go func() { defer close(done); l.Keep(work, cancel) }()
	if err := rdb.Set(ctx, key, "someone else", 0).Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-work.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("Keep did not cancel the work within 30s of losing the lock")
	}
	if cause := context.Cause(work); !errors.Is(cause, ErrLost) {
		t.Errorf("work cancelled with %v, want ErrLost", cause)
	}
	<-done
}
