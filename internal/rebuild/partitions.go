package rebuild

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/generations"
	"github.com/redis/go-redis/v9"
)

// RunAll is `processor rebuild` over every partition of l (see events.Layout). With
// one partition it is New(…).Run. With several, each partition is rebuilt by a
// Rebuilder of its own, all at once: each replays its partition's stream into its next
// generation and switches that partition's pointer in one atomic step within the
// partition's slot, on its own schedule. A read that spans partitions meanwhile (a
// product's totals, the statistics) adds up partitions some of which have switched and
// some not; each has counted, when it switches, everything the generation it replaces
// had, so no sum goes backwards.
//
// One RunAll runs at a time (the lock that CancelAll and queryapi know as the
// namespace's rebuild lock); every partition's own lock is held by its Rebuilder as
// with one partition. A RunAll that finds partitions with an unfinished rebuild (one
// killed, or failed) resumes those only; otherwise it rebuilds every partition. Every
// line a partition's Rebuilder prints is prefixed with its partition, and one progress
// line every second adds up all partitions.
func RunAll(ctx context.Context, rdb redis.UniversalClient, l events.Layout, cfg Config, out io.Writer, logger *slog.Logger) error {
	if l.Count() == 1 {
		return New(rdb, l.Partition(0), cfg, out, logger).Run(ctx)
	}
	lock := generations.NewLock(rdb, RunAllLock(l), generations.HolderName(), cfg.LockTTL)
	lctx, cancel := context.WithTimeout(ctx, cfg.RedisTimeout)
	holder, err := lock.Acquire(lctx)
	cancel()
	if errors.Is(err, generations.ErrHeld) {
		return fmt.Errorf("refused: another rebuild is running (lock %s held by %s); wait for it to finish, or stop it with `processor rebuild --cancel`",
			RunAllLock(l), holder)
	}
	if err != nil {
		return fmt.Errorf("take the rebuild lock: %w", err)
	}
	work, cancelWork := context.WithCancelCause(ctx)
	kept := make(chan struct{})
	go func() { defer close(kept); lock.Keep(work, cancelWork) }()
	defer func() {
		cancelWork(nil)
		<-kept
		rctx, cancel := context.WithTimeout(context.Background(), cfg.RedisTimeout)
		defer cancel()
		lock.Release(rctx)
	}()

	var mu sync.Mutex
	builders := make([]*Rebuilder, l.Count())
	for p, k := range l.Partitions() {
		builders[p] = New(rdb, k, cfg, &prefixed{mu: &mu, w: out, prefix: fmt.Sprintf("partition %d: ", p)}, logger.With("partition", p))
		builders[p].quiet = true
	}
	run, err := unfinished(work, builders)
	if err != nil {
		return err
	}
	if len(run) < len(builders) {
		var ps []string
		for _, b := range run {
			ps = append(ps, fmt.Sprint(b.keys.Partition()))
		}
		fmt.Fprintf(out, "rebuild: resuming the unfinished rebuild of partitions %s of %d\n", strings.Join(ps, ", "), l.Count())
	} else {
		fmt.Fprintf(out, "rebuild: rebuilding all %d partitions at once; each switches to its new generation on its own\n", l.Count())
	}
	began := time.Now()
	pctx, stopProgress := context.WithCancel(work)
	progressDone := make(chan struct{})
	go func() { defer close(progressDone); progressAll(pctx, run, &mu, out) }()
	errs := make([]error, len(run))
	var wg sync.WaitGroup
	for i, b := range run {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = b.Run(work) }()
	}
	wg.Wait()
	stopProgress()
	<-progressDone
	var failed []error
	for i, err := range errs {
		if err != nil {
			failed = append(failed, fmt.Errorf("partition %d: %w", run[i].keys.Partition(), err))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d partitions not rebuilt (run `processor rebuild` again to resume them): %w",
			len(failed), len(run), errors.Join(failed...))
	}
	var replayed int64
	cancelled := 0
	for _, b := range run {
		replayed += b.replayed.Load()
		if b.cancelled.Load() {
			cancelled++
		}
	}
	if cancelled > 0 {
		fmt.Fprintf(out, "rebuild: cancelled: %d of %d partitions discarded the generation they were building; the others had switched already\n",
			cancelled, len(run))
		return nil
	}
	took := time.Since(began)
	fmt.Fprintf(out, "rebuild: done: all %d partitions rebuilt and switched; this run replayed %d entries in %v (%.0f entries/s)\n",
		len(run), replayed, took.Round(time.Millisecond), float64(replayed)/max(took.Seconds(), 1e-9))
	return nil
}

// RunAllLock is the lock one RunAll holds over all partitions: the namespace's own
// rebuild lock, the name one partition's lock has.
func RunAllLock(l events.Layout) string { return events.NewKeys(l.Namespace()).RebuildLock() }

// unfinished returns the Rebuilders of the partitions whose last rebuild is unfinished
// (building, switching, failed, or switched and not yet cleaned up), or all of them
// when none is.
func unfinished(ctx context.Context, builders []*Rebuilder) ([]*Rebuilder, error) {
	var out []*Rebuilder
	for _, b := range builders {
		st, cur, err := b.readState(ctx)
		if err != nil {
			return nil, err
		}
		if st.Unfinished(cur) || st.State == events.RebuildStateCleanup {
			out = append(out, b)
		}
	}
	if len(out) == 0 {
		return builders, nil
	}
	return out, nil
}

// progressAll prints one line at once and then every second over all partitions being
// rebuilt: how many have switched, entries applied against the streams' lengths, the
// rate and the time left.
func progressAll(ctx context.Context, run []*Rebuilder, mu *sync.Mutex, out io.Writer) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last, lastAt := int64(-1), time.Now()
	for first := true; ; first = false {
		if !first {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		var applied, length int64
		switched, finished := 0, 0
		for _, b := range run {
			applied += b.appliedBefore.Load() + b.replayed.Load()
			length += b.length.Load()
			if b.switched.Load() {
				switched++
			}
			if b.finished.Load() {
				finished++
			}
		}
		now := time.Now()
		rate, eta := "?", "?"
		if last >= 0 {
			r := float64(applied-last) / now.Sub(lastAt).Seconds()
			rate = fmt.Sprintf("%.0f", r)
			if r > 0 && length >= applied {
				eta = (time.Duration(float64(length-applied)/r) * time.Second).Round(time.Second).String()
			}
		}
		last, lastAt = applied, now
		mu.Lock()
		fmt.Fprintf(out, "rebuild: %d partitions: %d switched, %d done; %d applied, streams %d, %s entries/s, eta %s\n",
			len(run), switched, finished, applied, length, rate, eta)
		mu.Unlock()
	}
}

// CancelAll is `processor rebuild --cancel` over every partition of l: each partition's
// unfinished rebuild is discarded (a running one asked to stop first), as Cancel does
// with one partition.
func CancelAll(ctx context.Context, rdb redis.UniversalClient, l events.Layout, cfg Config, out io.Writer, logger *slog.Logger) error {
	if l.Count() == 1 {
		return New(rdb, l.Partition(0), cfg, out, logger).Cancel(ctx)
	}
	var mu sync.Mutex
	errs := make([]error, l.Count())
	var wg sync.WaitGroup
	for p, k := range l.Partitions() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := New(rdb, k, cfg, &prefixed{mu: &mu, w: out, prefix: fmt.Sprintf("partition %d: ", p)}, logger.With("partition", p))
			if err := b.Cancel(ctx); err != nil {
				errs[p] = fmt.Errorf("partition %d: %w", p, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// prefixed writes each line with a prefix, one writer at a time.
type prefixed struct {
	mu     *sync.Mutex
	w      io.Writer
	prefix string
}

func (p *prefixed) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := io.WriteString(p.w, p.prefix); err != nil {
		return 0, err
	}
	return p.w.Write(b)
}
