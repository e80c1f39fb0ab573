package rebuild

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/generations"
)

// Cancel is `processor rebuild --cancel`: it deletes the generation an unfinished
// rebuild was building. If a rebuild is running, it asks it to stop (through the state
// hash) and waits; the running rebuild deletes its generation itself.
func (b *Rebuilder) Cancel(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		lctx, cancel := b.rctx(ctx)
		holder, err := b.lock.Acquire(lctx)
		cancel()
		if errors.Is(err, generations.ErrHeld) && attempt == 0 {
			if err := b.requestCancel(ctx, holder); err != nil {
				return err
			}
			st, cur, err := b.readState(ctx)
			if err != nil {
				return err
			}
			switch st.State {
			case events.RebuildStateCancelled:
				b.printf("rebuild: cancelled; generation %d stays current", cur)
				return nil
			case events.RebuildStateCleanup, events.RebuildStateDone:
				return fmt.Errorf("too late to cancel: the rebuild had already switched; generation %d is current", cur)
			}
			continue // the holder died without acting on the request: cancel it here
		}
		if errors.Is(err, generations.ErrHeld) {
			return fmt.Errorf("refused: a rebuild is running (lock %s held by %s)", b.keys.RebuildLock(), holder)
		}
		if err != nil {
			return fmt.Errorf("take the rebuild lock: %w", err)
		}
		break
	}
	defer func() {
		rctx, cancel := b.rctx(context.Background())
		defer cancel()
		b.lock.Release(rctx)
	}()
	st, cur, err := b.readState(ctx)
	if err != nil {
		return err
	}
	if !st.Unfinished(cur) {
		state := st.State
		if state == "" {
			state = "idle"
		}
		b.printf("rebuild: nothing to cancel (%s); generation %d is current", state, cur)
		if st.State == events.RebuildStateCleanup {
			b.printf("rebuild: the removal of generation %d is unfinished: run `processor rebuild` to finish it", st.From)
		}
		return nil
	}
	b.from = b.keys.Gen(cur)
	return b.discard(ctx, st.Target, "cancelled")
}

// requestCancel asks the running rebuild to stop and waits until its lock is gone.
func (b *Rebuilder) requestCancel(ctx context.Context, holder string) error {
	if err := b.setState(ctx, events.RebuildFieldCancel, 1); err != nil {
		return err
	}
	b.printf("rebuild: a rebuild is running (held by %s); asked it to cancel; waiting for it to stop", holder)
	deadline := time.Now().Add(max(30*time.Second, 6*b.cfg.LockTTL))
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		rctx, cancel := b.rctx(ctx)
		n, err := b.rdb.Exists(rctx, b.keys.RebuildLock()).Result()
		cancel()
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the running rebuild (%s) did not stop within %v", holder, time.Until(deadline).Round(time.Second))
		}
	}
}

// discard deletes the unfinished generation target: its group first, in a script that
// refuses if target is current (so that nothing can write it or switch to it any
// more), then its keys.
func (b *Rebuilder) discard(ctx context.Context, target int64, why string) error {
	gen := b.keys.Gen(target)
	dctx, cancel := b.rctx(ctx)
	err := discardScript.Run(dctx, b.rdb,
		[]string{b.keys.Stream(), b.keys.Generation(), b.keys.Pause(), b.keys.RebuildState()},
		target, gen.Group(), events.RebuildFieldState, events.RebuildStateCancelled,
		events.RebuildFieldUpdated, time.Now().UTC().Format(time.RFC3339Nano), events.RebuildFieldCancel).Err()
	cancel()
	if err != nil {
		return fmt.Errorf("cancel the rebuild of generation %d: %w", target, err)
	}
	n, err := b.unlinkAll(ctx, gen.Pattern())
	if err != nil {
		return fmt.Errorf("cancelled, but removing generation %d's keys failed (a later rebuild removes them): %w", target, err)
	}
	b.printf("rebuild: %s: generation %d deleted (%d keys); generation %d stays current", why, target, n, b.from.Number)
	return nil
}
