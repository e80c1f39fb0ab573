package main

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// Requests for the same key while a read is in flight share it; a read that has
// returned is not kept; a waiter whose request ends stops waiting without failing the
// others; another key is another read.
func TestCoalesce(t *testing.T) {
	c := newCoalescer()
	var reads atomic.Int32
	release := make(chan struct{})
	started := make(chan struct{})
	read := func(ctx context.Context) (int, error) {
		if reads.Add(1) == 1 {
			close(started)
		}
		<-release
		return 42, nil
	}
	var wg sync.WaitGroup
	results := make([]int, 10)
	wg.Go(func() { results[0], _ = coalesce(c, context.Background(), "k", read) })
	<-started
	for i := 1; i < 10; i++ {
		wg.Go(func() { results[i], _ = coalesce(c, context.Background(), "k", read) })
	}
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := coalesce(c, gone, "k", read); !errors.Is(err, context.Canceled) {
		t.Errorf("a waiter whose request ended: %v, want context.Canceled", err)
	}
	for joined := 0; joined < 10; { // the nine requests and the one that gave up
		c.mu.Lock()
		joined = c.calls["k"].waiters
		c.mu.Unlock()
		runtime.Gosched()
	}
	close(release)
	wg.Wait()
	for i, r := range results {
		if r != 42 {
			t.Errorf("request %d got %d, want 42", i, r)
		}
	}
	if n := reads.Load(); n != 1 {
		t.Errorf("%d reads for 10 concurrent requests, want 1", n)
	}
	before := reads.Load()
	if v, err := coalesce(c, context.Background(), "k", read); err != nil || v != 42 || reads.Load() != before+1 {
		t.Errorf("a request after the read returned: %d, %v, reads %d → %d; want a read of its own", v, err, before, reads.Load())
	}
	fail := errors.New("redis down")
	if _, err := coalesce(c, context.Background(), "other", func(context.Context) (int, error) { return 0, fail }); !errors.Is(err, fail) {
		t.Errorf("a failed read: %v, want its error", err)
	}
}
