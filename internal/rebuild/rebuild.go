// Package rebuild is `processor rebuild`: it builds every count again from the
// checkpoint and the stream as a new generation, beside the live pipeline, and
// switches to it in one atomic step once it has counted everything the current
// generation has; then it removes the replaced generation's keys. With --cancel it
// discards an unfinished rebuild. See the README, "Replay: rebuilding every count
// from the stream", for the guarantees.
package rebuild

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/aggregate"
	"github.com/clickstream/pipeline/internal/generations"
	"github.com/redis/go-redis/v9"
)

// rebuildConsumer is the consumer name a rebuild reads as. It is fixed, so that a
// resumed rebuild first re-reads the entries its killed predecessor read and did not
// apply.
const rebuildConsumer = "rebuild"

//go:embed switch.lua
var switchSource string

// switchScript makes the rebuilt generation current; see switch.lua for the check
// that makes the switch exact.
var switchScript = redis.NewScript(switchSource)

// createAtCheckpointScript creates the new generation's group just after the
// checkpoint's position (at the start of the stream when there is no checkpoint),
// reading the position in the same step: from then on the group holds the checkpoint
// back (retention's fold.lua never folds what a group has not acked), so the copy of
// the checkpoint that follows is exactly the counts of the entries the group skips.
var createAtCheckpointScript = redis.NewScript(`#!lua
local pos = redis.call('HGET', KEYS[2], ARGV[1]) or '0'
redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[2], pos, 'MKSTREAM')
return pos
`)

// discardScript destroys an unfinished generation's group, unless the pointer names
// that generation (it is current: nothing to discard), and records the state. Once
// the group is gone nothing can write the generation's keys or switch to it.
var discardScript = redis.NewScript(`#!lua
local cur = redis.call('GET', KEYS[2]) or '1'
if cur == ARGV[1] then return redis.error_reply('generation ' .. cur .. ' is current') end
redis.pcall('XGROUP', 'DESTROY', KEYS[1], ARGV[2])
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[4], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
redis.call('HDEL', KEYS[4], ARGV[7])
return 1
`)

// errCancelRequested stops a running rebuild that `rebuild --cancel` asked to stop.
var errCancelRequested = errors.New("cancel requested")

// Config is what a rebuild takes of the processor's settings.
type Config struct {
	Batch          int              // BATCH_SIZE: entries per read and per apply
	RedisTimeout   time.Duration    // REDIS_TIMEOUT: bound on one Redis call
	LockTTL        time.Duration    // REBUILD_LOCK_TTL: a killed rebuild's lock expires after this
	StatsRetention events.Retention // STATS_RETENTION_*: how long time buckets are kept
}

// Rebuilder builds a new generation from the checkpoint and the stream and switches
// to it. One runs at a time (the rebuild lock); its progress is in the state hash.
type Rebuilder struct {
	rdb    redis.UniversalClient
	keys   events.Keys
	cfg    Config
	logger *slog.Logger
	lock   *generations.Lock

	outMu sync.Mutex
	out   io.Writer

	from, target  events.GenKeys
	applier       *aggregate.Applier
	start         string       // where the next read starts: "0" (own pending) or ">"
	replayed      atomic.Int64 // entries replayed by this run
	appliedBefore atomic.Int64 // by the runs this one resumes
	length        atomic.Int64 // the stream's length at the last progress report
	finished      atomic.Bool  // done: switched and the old generation removed
	cancelled     atomic.Bool  // stopped by `rebuild --cancel`, its generation discarded
	quiet         bool         // no progress line every second (RunAll prints one for all partitions)
	began         time.Time
	switched      atomic.Bool
	pausing       atomic.Bool             // the pause key is set: processors start no reads
	cancelWork    context.CancelCauseFunc // stops the work, e.g. on a cancel request
}

// New returns a Rebuilder of keys' pipeline that prints its progress to out, a line
// at a time, and logs retries to logger.
func New(rdb redis.UniversalClient, keys events.Keys, cfg Config, out io.Writer, logger *slog.Logger) *Rebuilder {
	return &Rebuilder{rdb: rdb, keys: keys, cfg: cfg, out: out, start: "0", logger: logger,
		lock: generations.NewLock(rdb, keys.RebuildLock(), generations.HolderName(), cfg.LockTTL)}
}

func (b *Rebuilder) printf(format string, args ...any) {
	b.outMu.Lock()
	defer b.outMu.Unlock()
	fmt.Fprintf(b.out, format+"\n", args...)
}

// rctx bounds one Redis call.
func (b *Rebuilder) rctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, b.cfg.RedisTimeout)
}

// acquire takes the rebuild lock and keeps it until the returned context ends. The
// context is cancelled (with generations.ErrLost) if the lock is lost.
func (b *Rebuilder) acquire(ctx context.Context) (context.Context, func(), error) {
	lctx, cancel := b.rctx(ctx)
	holder, err := b.lock.Acquire(lctx)
	cancel()
	if errors.Is(err, generations.ErrHeld) {
		return nil, nil, fmt.Errorf("refused: another rebuild is running (lock %s held by %s); "+
			"wait for it to finish, or stop it with `processor rebuild --cancel`", b.keys.RebuildLock(), holder)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("take the rebuild lock: %w", err)
	}
	work, cancelWork := context.WithCancelCause(ctx)
	b.cancelWork = cancelWork
	kept := make(chan struct{})
	go func() { defer close(kept); b.lock.Keep(work, cancelWork) }()
	return work, func() {
		cancelWork(nil)
		<-kept
		rctx, cancel := b.rctx(context.Background())
		defer cancel()
		b.lock.Release(rctx)
	}, nil
}

// readState returns the state hash and the current generation.
func (b *Rebuilder) readState(ctx context.Context) (generations.Rebuild, int64, error) {
	ctx, cancel := b.rctx(ctx)
	defer cancel()
	pipe := b.rdb.Pipeline()
	rc := generations.QueueRebuild(ctx, pipe, b.keys)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return generations.Rebuild{}, 0, err
	}
	return rc.Result()
}

func (b *Rebuilder) setState(ctx context.Context, kv ...any) error {
	ctx, cancel := b.rctx(ctx)
	defer cancel()
	kv = append(kv, events.RebuildFieldUpdated, time.Now().UTC().Format(time.RFC3339Nano))
	return b.rdb.HSet(ctx, b.keys.RebuildState(), kv...).Err()
}

// Run is `processor rebuild`: start a rebuild, or resume an unfinished one, or finish
// the cleanup of one that was killed after its switch.
func (b *Rebuilder) Run(ctx context.Context) error {
	work, release, err := b.acquire(ctx)
	if err != nil {
		return err
	}
	defer release()
	// We hold the lock, so a pause key can only be left by a rebuild that died while
	// switching: lift it now rather than let processors wait for it to expire.
	if err := b.resume(work); err != nil {
		return err
	}
	st, cur, err := b.readState(work)
	if err != nil {
		return err
	}
	b.began = time.Now()
	switch {
	case st.State == events.RebuildStateCleanup:
		b.from, b.target = b.keys.Gen(st.From), b.keys.Gen(st.Target)
		b.switched.Store(true)
		b.printf("rebuild: generation %d is current; finishing the removal of generation %d", cur, st.From)
		return b.finish(work)
	case st.Unfinished(cur):
		b.from, b.target = b.keys.Gen(cur), b.keys.Gen(st.Target)
		b.appliedBefore.Store(st.Applied)
		b.printf("rebuild: resuming the rebuild of generation %d (%s; generation %d is current)", st.Target, st.State, cur)
		if !st.Seeded {
			b.appliedBefore.Store(0)
		}
		if err := b.setState(work, events.RebuildFieldState, events.RebuildStateBuilding, events.RebuildFieldError, ""); err != nil {
			return err
		}
	default:
		b.from, b.target = b.keys.Gen(cur), b.keys.Gen(cur+1)
		now := time.Now().UTC().Format(time.RFC3339Nano)
		ctx, cancel := b.rctx(work)
		pipe := b.rdb.TxPipeline()
		pipe.Del(ctx, b.keys.RebuildState())
		pipe.HSet(ctx, b.keys.RebuildState(), events.RebuildFieldState, events.RebuildStateBuilding,
			events.RebuildFieldTarget, b.target.Number, events.RebuildFieldFrom, cur,
			events.RebuildFieldSeeded, 0, events.RebuildFieldApplied, 0,
			events.RebuildFieldStarted, now, events.RebuildFieldUpdated, now)
		_, err := pipe.Exec(ctx)
		cancel()
		if err != nil {
			return err
		}
		b.printf("rebuild: building generation %d from the checkpoint and the stream; generation %d stays current meanwhile", b.target.Number, cur)
		st.Seeded = false
	}
	b.applier = aggregate.NewApplier(b.rdb, b.keys, b.target, rebuildConsumer, b.cfg.StatsRetention)

	pctx, stopProgress := context.WithCancel(work)
	progressDone := make(chan struct{})
	go func() { defer close(progressDone); b.progress(pctx) }()
	err = b.build(work, st.Seeded)
	if err == nil {
		err = b.finish(work)
	}
	stopProgress()
	<-progressDone
	if err == nil {
		return nil
	}
	// Stopped before the switch (or the switch failed): record why, and lift the pause.
	bg := context.Background()
	cause := context.Cause(work)
	if b.pausing.Load() && !errors.Is(cause, generations.ErrLost) {
		b.resume(bg)
	}
	switch {
	case b.switched.Load():
		return fmt.Errorf("generation %d is current, but removing generation %d failed (run `processor rebuild` again to finish): %w",
			b.target.Number, b.from.Number, err)
	case errors.Is(cause, errCancelRequested):
		b.cancelled.Store(true)
		return b.discard(bg, b.target.Number, "cancelled on request")
	case errors.Is(cause, generations.ErrLost):
		return fmt.Errorf("rebuild of generation %d stopped: %w", b.target.Number, cause)
	case ctx.Err() != nil:
		err = errors.New("interrupted; run `processor rebuild` again to resume, or `processor rebuild --cancel`")
	}
	b.setState(bg, events.RebuildFieldState, events.RebuildStateFailed, events.RebuildFieldError, err.Error())
	return fmt.Errorf("rebuild of generation %d: %w", b.target.Number, err)
}

// resume lifts the processors' pause.
func (b *Rebuilder) resume(ctx context.Context) error {
	ctx, cancel := b.rctx(ctx)
	defer cancel()
	return generations.Resume(ctx, b.rdb, b.keys)
}

// build seeds the new generation (unless a killed run did), replays the stream into
// it until it has caught up, and switches.
func (b *Rebuilder) build(ctx context.Context, seeded bool) error {
	if !seeded {
		if err := b.seed(ctx); err != nil {
			return fmt.Errorf("seed generation %d: %w", b.target.Number, err)
		}
	}
	if err := b.replay(ctx); err != nil {
		return err
	}
	// Caught up. Pause the processors so that the current generation stands still while
	// the new one passes it, then switch as soon as the check allows.
	if err := b.setState(ctx, events.RebuildFieldState, events.RebuildStateSwitching); err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		pctx, cancel := b.rctx(ctx)
		err := generations.Pause(pctx, b.rdb, b.keys, b.lock.Holder(), 2*b.cfg.LockTTL)
		cancel()
		if err != nil {
			return err
		}
		b.pausing.Store(true)
		if err := b.replay(ctx); err != nil {
			return err
		}
		done, reason, err := b.switchOnce(ctx)
		if err != nil || done {
			return err
		}
		b.logger.Debug("not switched yet", "attempt", attempt, "reason", reason)
	}
}

// switchOnce runs the switch script. Its context is not the work context: a call
// abandoned half-way could still switch after this process had concluded that it did
// not. If the answer is lost anyway, the state hash tells a re-run what happened.
func (b *Rebuilder) switchOnce(ctx context.Context) (done bool, reason string, err error) {
	if err := ctx.Err(); err != nil {
		return false, "", err
	}
	sctx, cancel := b.rctx(context.Background())
	defer cancel()
	res, err := switchScript.Run(sctx, b.rdb,
		[]string{b.keys.Stream(), b.keys.Generation(), b.keys.Pause(), b.keys.RebuildState(), b.from.ClaimEpoch()},
		b.from.Number, b.from.Group(), b.target.Number, b.target.Group(), rebuildConsumer,
		events.RebuildFieldState, events.RebuildStateCleanup,
		events.RebuildFieldUpdated, time.Now().UTC().Format(time.RFC3339Nano),
		int64(replacedEpochTTL/time.Second)).Slice()
	if err != nil {
		return false, "", fmt.Errorf("switch to generation %d: %w", b.target.Number, err)
	}
	ok, _ := res[0].(int64)
	detail, _ := res[1].(string)
	if ok != 1 {
		return false, detail, nil
	}
	b.switched.Store(true)
	b.pausing.Store(false)
	b.printf("rebuild: switched: generation %d is current; it has counted everything generation %d had been delivered (up to %s)",
		b.target.Number, b.from.Number, orNone(detail))
	return true, "", nil
}

// replacedEpochTTL is how long a replaced generation's claim epoch is kept (see
// switch.lua): longer than any processor could plausibly hold a batch read before the
// switch. It is the only key of the old generation left after the cleanup.
const replacedEpochTTL = 7 * 24 * time.Hour

func orNone(id string) string {
	if id == "" {
		return "nothing: it had no group"
	}
	return id
}

// seed starts the new generation from nothing but the checkpoint: any group or keys
// an earlier attempt left are removed, the group is created just after the
// checkpoint, and the checkpoint's hashes and ranking are copied in.
func (b *Rebuilder) seed(ctx context.Context) error {
	dctx, cancel := b.rctx(ctx)
	err := b.rdb.XGroupDestroy(dctx, b.keys.Stream(), b.target.Group()).Err()
	cancel()
	if err != nil && !generations.IsNoGroup(err) && !generations.IsNoStream(err) {
		return err
	}
	if _, err := b.unlinkAll(ctx, b.target.Pattern()); err != nil {
		return err
	}
	cctx, cancel := b.rctx(ctx)
	pos, err := createAtCheckpointScript.Run(cctx, b.rdb, []string{b.keys.Stream(), b.keys.CheckpointInfo()},
		events.CheckpointFieldPosition, b.target.Group()).Text()
	cancel()
	if err != nil {
		return fmt.Errorf("create group %s: %w", b.target.Group(), err)
	}
	// Every key of the checkpoint, whatever its kind, is copied: its hashes, its
	// rankings, its time buckets and their HyperLogLogs. COPY keeps a key's expiry, so a
	// copied time bucket expires when the live one does.
	ck := b.keys.Checkpoint()
	from, to := ck.Prefix(), b.target.Prefix()
	copied, err := b.scan(ctx, ck.Pattern(), func(ctx context.Context, keys []string) error {
		pipe := b.rdb.Pipeline()
		for _, k := range keys {
			pipe.Do(ctx, "COPY", k, to+k[len(from):], "REPLACE")
		}
		_, err := pipe.Exec(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("copy the checkpoint: %w", err)
	}
	if pos == "0" {
		b.printf("rebuild: no checkpoint; replaying the stream from its start")
	} else {
		b.printf("rebuild: copied the checkpoint (%d keys, entries up to %s); replaying the stream after it", copied, pos)
	}
	return b.setState(ctx, events.RebuildFieldSeeded, 1)
}

// replay reads the new group and applies what it reads until a read comes back short
// (the end of the stream as it was then). Reading the next batch overlaps applying
// this one, as in the processor.
func (b *Rebuilder) replay(ctx context.Context) error {
	batches := make(chan []aggregate.Entry, 1)
	readErr := make(chan error, 1)
	rctx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	go func() {
		defer close(batches)
		readErr <- b.read(rctx, batches)
	}()
	var applyErr error
	for batch := range batches {
		if applyErr == nil {
			if applyErr = b.apply(ctx, batch); applyErr != nil {
				stopReading()
			}
		}
	}
	if applyErr != nil {
		<-readErr
		return applyErr
	}
	return <-readErr
}

func (b *Rebuilder) read(ctx context.Context, out chan<- []aggregate.Entry) error {
	backoff := newBackoff()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		rctx, cancel := b.rctx(ctx)
		res, err := b.rdb.XReadGroup(rctx, &redis.XReadGroupArgs{
			Group:    b.target.Group(),
			Consumer: rebuildConsumer,
			Streams:  []string{b.keys.Stream(), b.start},
			Count:    int64(b.cfg.Batch),
			Block:    -1, // never wait: an empty answer means caught up
		}).Result()
		cancel()
		var msgs []redis.XMessage
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			if generations.IsNoGroup(err) || ctx.Err() != nil {
				return fmt.Errorf("read %s: %w", b.target.Group(), err)
			}
			b.logger.Warn("read failed; will retry", "group", b.target.Group(), "start_id", b.start, "err", err)
			backoff.wait(ctx.Done())
			continue
		default:
			msgs = res[0].Messages
		}
		backoff.reset()
		if b.start == "0" { // our own pending entries first, left by a killed run
			if len(msgs) == 0 {
				b.start = ">"
				continue
			}
			b.start = msgs[len(msgs)-1].ID
		}
		if len(msgs) > 0 {
			select {
			case out <- aggregate.Decode(msgs):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if b.start == ">" && len(msgs) < b.cfg.Batch {
			return nil
		}
		if b.start != ">" && len(msgs) < b.cfg.Batch {
			b.start = ">"
		}
	}
}

// apply applies one batch, retrying what Redis failed: a retry is always safe.
func (b *Rebuilder) apply(ctx context.Context, batch []aggregate.Entry) error {
	backoff := newBackoff()
	for {
		actx, cancel := b.rctx(ctx)
		_, _, err := b.applier.Apply(actx, batch)
		cancel()
		if err == nil {
			b.replayed.Add(int64(len(batch)))
			return nil
		}
		if generations.IsNoGroup(err) || ctx.Err() != nil {
			return err
		}
		b.logger.Warn("apply failed; will retry", "group", b.target.Group(),
			"first_id", batch[0].ID, "last_id", batch[len(batch)-1].ID, "entries", len(batch), "err", err)
		backoff.wait(ctx.Done())
	}
}

// finish removes the old generation's keys and records the rebuild as done.
func (b *Rebuilder) finish(ctx context.Context) error {
	replayed, took := b.replayed.Load(), time.Since(b.began)
	began := time.Now()
	n, err := b.unlinkAll(ctx, b.from.Pattern(), b.from.ClaimEpoch())
	if err != nil {
		return fmt.Errorf("remove generation %d: %w", b.from.Number, err)
	}
	rate := float64(replayed) / max(took.Seconds(), 1e-9)
	if err := b.setState(ctx, events.RebuildFieldState, events.RebuildStateDone, events.RebuildFieldApplied, b.appliedBefore.Load()+replayed,
		events.RebuildFieldRate, int64(rate), events.RebuildFieldETA, 0); err != nil {
		return err
	}
	b.finished.Store(true)
	b.printf("rebuild: removed generation %d: %d keys unlinked in %v", b.from.Number, n, time.Since(began).Round(time.Millisecond))
	b.printf("rebuild: done: generation %d is current; this run replayed %d entries in %v (%.0f entries/s)",
		b.target.Number, replayed, took.Round(time.Millisecond), rate)
	return nil
}

// backoff is the wait between retries of a failed read or apply: 50 ms, doubling up
// to 2 s, reset by a success.
type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{d: 50 * time.Millisecond} }

func (b *backoff) reset() { b.d = 50 * time.Millisecond }

// wait sleeps for the current delay or until done is closed.
func (b *backoff) wait(done <-chan struct{}) {
	t := time.NewTimer(b.d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-done:
	}
	if b.d < 2*time.Second {
		b.d *= 2
	}
}
