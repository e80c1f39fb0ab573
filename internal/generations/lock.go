package generations

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

// Lock is a lease in one Redis key: SET NX with an expiry that its holder refreshes.
// A holder that dies stops refreshing, and the lease expires after ttl. The value
// names the holder, so that only the holder refreshes or releases it, and a refused
// caller can say who holds it. The rebuild lock keeps a second rebuild out; the
// retention lock lets one processor at a time trim.
type Lock struct {
	rdb    redis.UniversalClient
	key    string
	holder string
	ttl    time.Duration
}

// NewLock returns the lock in key, taken as holder (see HolderName) for ttl at a time.
func NewLock(rdb redis.UniversalClient, key, holder string, ttl time.Duration) *Lock {
	return &Lock{rdb: rdb, key: key, holder: holder, ttl: ttl}
}

// ErrHeld is returned by Acquire when another holder has the lock.
var ErrHeld = errors.New("lock held")

// ErrLost cancels work whose lock expired under it.
var ErrLost = errors.New("lost the lock (it expired: was this process frozen, or Redis unreachable?)")

// HolderName names this process: host, pid and a random suffix, so that a restarted
// process with a reused pid is still someone else.
func HolderName() string {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown-host"
	}
	var b [4]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s:%d:%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// Holder is the name this Lock takes the lock as.
func (l *Lock) Holder() string { return l.holder }

// Acquire takes the lock, or returns ErrHeld and the current holder.
func (l *Lock) Acquire(ctx context.Context) (holder string, err error) {
	ok, err := l.rdb.SetNX(ctx, l.key, l.holder, l.ttl).Result()
	if err != nil {
		return "", err
	}
	if ok {
		return l.holder, nil
	}
	holder, err = l.rdb.Get(ctx, l.key).Result()
	if errors.Is(err, redis.Nil) { // expired just now
		return l.Acquire(ctx)
	}
	if err != nil {
		return "", err
	}
	return holder, ErrHeld
}

var refreshScript = redis.NewScript(`#!lua
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
`)

var releaseScript = redis.NewScript(`#!lua
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
`)

// Refresh extends the lease; false means it was lost (it expired and someone else may
// hold it now).
func (l *Lock) Refresh(ctx context.Context) (bool, error) {
	n, err := refreshScript.Run(ctx, l.rdb, []string{l.key}, l.holder, l.ttl.Milliseconds()).Int()
	return n == 1, err
}

// Release gives the lock up if this holder still has it.
func (l *Lock) Release(ctx context.Context) error {
	return releaseScript.Run(ctx, l.rdb, []string{l.key}, l.holder).Err()
}

// Keep refreshes the lock every ttl/5 until ctx ends, and cancels ctx with ErrLost
// if the lock is lost, so that the work it guards stops.
func (l *Lock) Keep(ctx context.Context, cancel context.CancelCauseFunc) {
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
		ok, err := l.Refresh(rctx)
		rcancel()
		switch {
		case err == nil && !ok:
			cancel(ErrLost)
			return
		case err != nil:
			// Redis did not answer: the lease may still be valid; give up once it cannot be.
			if failures++; failures >= 4 {
				cancel(fmt.Errorf("%w: %v", ErrLost, err))
				return
			}
		default:
			failures = 0
		}
	}
}
