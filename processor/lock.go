package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
)

// lock is a lease in one Redis key: SET NX with an expiry that its holder refreshes.
// A holder that dies stops refreshing, and the lease expires after ttl. The value
// names the holder, so that only the holder refreshes or releases it, and a refused
// caller can say who holds it.
type lock struct {
	rdb    redis.UniversalClient
	key    string
	holder string
	ttl    time.Duration
}

// errLockHeld is returned by acquire when another holder has the lock.
var errLockHeld = errors.New("lock held")

// holderName names this process: host, pid and a random suffix, so that a restarted
// process with a reused pid is still someone else.
func holderName() string {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown-host"
	}
	var b [4]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s:%d:%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// acquire takes the lock, or returns errLockHeld and the current holder.
func (l *lock) acquire(ctx context.Context) (holder string, err error) {
	ok, err := l.rdb.SetNX(ctx, l.key, l.holder, l.ttl).Result()
	if err != nil {
		return "", err
	}
	if ok {
		return l.holder, nil
	}
	holder, err = l.rdb.Get(ctx, l.key).Result()
	if errors.Is(err, redis.Nil) { // expired just now
		return l.acquire(ctx)
	}
	if err != nil {
		return "", err
	}
	return holder, errLockHeld
}

var refreshScript = redis.NewScript(`#!lua
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
`)

var releaseScript = redis.NewScript(`#!lua
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
`)

// refresh extends the lease; false means it was lost (it expired and someone else may
// hold it now).
func (l *lock) refresh(ctx context.Context) (bool, error) {
	n, err := refreshScript.Run(ctx, l.rdb, []string{l.key}, l.holder, l.ttl.Milliseconds()).Int()
	return n == 1, err
}

// release gives the lock up if this holder still has it.
func (l *lock) release(ctx context.Context) error {
	return releaseScript.Run(ctx, l.rdb, []string{l.key}, l.holder).Err()
}

// errLockLost cancels work whose lock expired under it.
var errLockLost = errors.New("lost the lock (it expired: was this process frozen, or Redis unreachable?)")

// keep refreshes the lock every ttl/5 until ctx ends, and cancels ctx with errLockLost
// if the lock is lost, so that the work it guards stops.
func (l *lock) keep(ctx context.Context, cancel context.CancelCauseFunc) {
	t := time.NewTicker(l.ttl / 5)
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, rcancel := context.WithTimeout(ctx, l.ttl/5)
		ok, err := l.refresh(rctx)
		rcancel()
		switch {
		case err == nil && !ok:
			cancel(errLockLost)
			return
		case err != nil:
			// Redis did not answer: the lease may still be valid; give up once it cannot be.
			if failures++; failures >= 4 {
				cancel(fmt.Errorf("%w: %v", errLockLost, err))
				return
			}
		default:
			failures = 0
		}
	}
}
