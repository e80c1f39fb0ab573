package main

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/aggregate"
	"github.com/clickstream/pipeline/internal/generations"
	"github.com/clickstream/pipeline/internal/lag"
	"github.com/redis/go-redis/v9"
)

// Consumer is one member of the current generation's consumer group. It follows the
// generation pointer: when a rebuild switches generations, it moves to the new group.
type Consumer struct {
	rdb      redis.UniversalClient
	keys     events.Keys
	name     string
	cfg      Config
	dead     *DeadLetters
	base     *slog.Logger
	cur      atomic.Pointer[generation] // the generation new reads go to
	m        *consumerMetrics
	applied  atomic.Int64
	skipped  atomic.Int64
	deadLets atomic.Int64
	dropped  atomic.Int64
}

// generation is what a consumer needs to work in one generation.
type generation struct {
	keys     events.GenKeys
	appliers chan *aggregate.Applier // a pool: one Applier per batch being applied
	logger   *slog.Logger
}

// genBatch is a batch with the generation it was read from, which is the one it
// must be applied to.
type genBatch struct {
	gen   *generation
	msgs  []redis.XMessage // decoded by the applier, so the reader can read on at once
	epoch string           // the group's claim epoch read just before the batch
}

// NewConsumer returns a consumer named name in gen's group, measured by m.
func NewConsumer(rdb redis.UniversalClient, keys events.Keys, gen events.GenKeys, name string, cfg Config, dead *DeadLetters, m *consumerMetrics, logger *slog.Logger) *Consumer {
	cfg.ApplyConcurrency = max(cfg.ApplyConcurrency, 1)
	c := &Consumer{rdb: rdb, keys: keys, name: name, cfg: cfg, dead: dead, m: m, base: logger}
	c.cur.Store(c.newGeneration(gen))
	return c
}

func (c *Consumer) newGeneration(gen events.GenKeys) *generation {
	// One more than the batches applied at once: the claimer applies too.
	n := c.cfg.ApplyConcurrency + 1
	g := &generation{keys: gen, appliers: make(chan *aggregate.Applier, n),
		logger: c.base.With("stream", c.keys.Stream(), "group", gen.Group())}
	for range n {
		g.appliers <- aggregate.NewApplier(c.rdb, c.keys, gen, c.name, c.cfg.StatsRetention)
	}
	return g
}

// pausePoll is how often a paused consumer looks whether the pause is over.
const pausePoll = 5 * time.Millisecond

// follow reads the pause and the generation pointer before a read. It returns the
// generation to read from, or nil when no read may start now (paused, or Redis
// failed: it has waited already).
func (c *Consumer) follow(stop <-chan struct{}, backoff *backoff) *generation {
	g := c.cur.Load()
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RedisTimeout)
	defer cancel()
	paused, n, err := generations.ReadPointer(ctx, c.rdb, c.keys)
	if err != nil {
		c.m.readErrors.Inc()
		g.logger.Warn("reading the generation pointer failed", "err", err)
		backoff.wait(stop)
		return nil
	}
	if paused {
		wait(stop, pausePoll)
		return nil
	}
	if n == g.keys.Number {
		return g
	}
	// A rebuild switched generations: batches already read from the old group are still
	// applied (and dropped if the old group is gone); new reads go to the new group.
	gen, err := generations.EnsureGroup(ctx, c.rdb, c.keys)
	if err != nil {
		c.m.readErrors.Inc()
		g.logger.Warn("joining the new generation failed", "generation", n, "err", err)
		backoff.wait(stop)
		return nil
	}
	next := c.newGeneration(gen)
	c.cur.Store(next)
	next.logger.Info("switched to the current generation", "generation", gen.Number, "previous_generation", g.keys.Number)
	return next
}

// wait sleeps for d or until stop is closed.
func wait(stop <-chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-stop:
	}
}

// Run reads and applies batches until stop is closed, then finishes the batch in
// flight and returns. Reads are never cancelled half-way (a read cancelled after Redis
// delivered its entries would leave them pending until claimed); instead each read
// blocks for at most cfg.Block and the loop checks stop between reads.
//
// Reading and applying overlap: while batches are applied (cfg.ApplyConcurrency at a
// time, so that one is prepared while Redis runs another), the next one is read. Each
// batch is applied atomically on its own, so their order does not matter.
func (c *Consumer) Run(stop <-chan struct{}) error {
	batches := make(chan genBatch, c.cfg.ApplyConcurrency)
	var wg sync.WaitGroup
	var readErr error
	wg.Go(func() { readErr = c.readLoop(stop, batches) })
	for range c.cfg.ApplyConcurrency {
		wg.Go(func() {
			for b := range batches {
				c.applyWithRetry(stop, b.gen, aggregate.Decode(b.msgs), b.epoch)
			}
		})
	}
	wg.Wait()
	return readErr
}

// readLoop reads batches from the current generation's group. Before each read it
// reads the pause and the generation pointer (one round trip): while a rebuild is
// switching it starts no read, and after a switch it reads from the new group.
func (c *Consumer) readLoop(stop <-chan struct{}, out chan<- genBatch) error {
	defer close(out)
	// First our own pending entries (left by an earlier process with the same name),
	// then new ones.
	start := "0"
	var g *generation
	var lastRepair time.Time
	backoff := newBackoff()
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		next := c.follow(stop, backoff)
		if next == nil {
			continue
		}
		if next != g {
			g, start = next, "0"
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Block+c.cfg.RedisTimeout)
		msgs, epoch, err := readBatch(ctx, c.rdb, g.keys, &redis.XReadGroupArgs{
			Group:    g.keys.Group(),
			Consumer: c.name,
			Streams:  []string{c.keys.Stream(), start},
			Count:    int64(c.cfg.Batch),
			Block:    c.cfg.Block,
		})
		cancel()
		if start == ">" && (errors.Is(err, redis.Nil) || err == nil && len(msgs) < c.cfg.Batch) {
			c.repairLag(g, &lastRepair)
		}
		if errors.Is(err, redis.Nil) {
			start = ">"
			continue
		}
		if err != nil {
			if generations.IsNoGroup(err) {
				// Either a switch destroyed the group (the next pointer read moves to the new
				// one) or the group is gone for another reason (the stream was deleted): the
				// script recreates it only if the pointer still names this generation.
				gctx, gcancel := context.WithTimeout(context.Background(), c.cfg.RedisTimeout)
				_, gerr := generations.EnsureGroup(gctx, c.rdb, c.keys)
				gcancel()
				if gerr == nil {
					continue
				}
				err = gerr
			}
			c.m.readErrors.Inc()
			g.logger.Warn("read failed", "start_id", start, "err", err)
			backoff.wait(stop)
			continue
		}
		backoff.reset()
		if start != ">" && len(msgs) == 0 {
			// No more entries pending for this name: on to new ones.
			start = ">"
			continue
		}
		if start != ">" {
			// Entries already pending for this name may also be held by another process
			// that runs under the same name by mistake: only the checked path is safe.
			epoch = ""
			// Continue after the last pending entry we got.
			start = msgs[len(msgs)-1].ID
		}
		out <- genBatch{gen: g, msgs: msgs, epoch: epoch}
	}
}

// lagRepairEvery bounds how often a processor tries to repair its group's entries-read
// counter: a try is a round trip, and a caught-up processor reads often.
const lagRepairEvery = time.Second

// repairLag sets Redis's entries-read counter of g's group right if Redis lost it in a
// restart from the AOF (see lag.Repair). It is called after a read that came back short
// or empty: the group had been delivered every entry then, the one moment the right
// value is known, and under load the only moments there are. The lag shown everywhere
// is then exact again, not just an upper bound, while the group is behind.
func (c *Consumer) repairLag(g *generation, last *time.Time) {
	if time.Since(*last) < lagRepairEvery {
		return
	}
	*last = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RedisTimeout)
	defer cancel()
	ok, was, now, err := lag.Repair(ctx, c.rdb, c.keys.Stream(), g.keys.Group())
	switch {
	case err != nil:
		g.logger.Warn("repairing the group's entries-read counter failed", "err", err)
	case ok:
		g.logger.Info("repaired the group's entries-read counter, which Redis lost in a restart from its AOF",
			"entries_read_was", was, "entries_read", now)
	}
}

// applyWithRetry applies a batch to the generation it was read from, retrying until it
// succeeds or stop is closed. Entries that cannot be decoded are first published to the
// dead-letter stream, then acked by the same apply.
//
// epoch is the claim epoch read before the batch ("" when unknown). Only the first
// attempt may use it: an attempt that failed on the way back (a timeout) may have been
// applied, and then the batch is no longer pending, which only the checked path sees.
// A retry on the checked path is always safe (see aggregate.Applier.Apply).
//
// A batch whose group is gone was read from a generation that a rebuild has replaced:
// the switch happened only once the new generation had counted every entry the old
// group had delivered, so the batch is dropped, not applied.
func (c *Consumer) applyWithRetry(stop <-chan struct{}, g *generation, batch []aggregate.Entry, epoch string) {
	backoff := newBackoff()
	published := false
	for {
		err := c.apply(g, batch, &published, epoch)
		epoch = ""
		if err == nil {
			return
		}
		if generations.IsNoGroup(err) {
			c.dropped.Add(int64(len(batch)))
			g.logger.Info("batch dropped: its generation was replaced, and the new one has counted it",
				"first_id", batch[0].ID, "last_id", batch[len(batch)-1].ID, "entries", len(batch))
			return
		}
		c.m.applyErrors.Inc()
		g.logger.Error("apply failed; will retry", "first_id", batch[0].ID, "last_id", batch[len(batch)-1].ID, "entries", len(batch), "err", err)
		select {
		case <-stop:
			// Entries stay pending; they are claimed by another consumer, or read again
			// by this one after a restart under the same name.
			g.logger.Warn("stopping with a batch unapplied; it stays pending", "first_id", batch[0].ID, "last_id", batch[len(batch)-1].ID, "entries", len(batch))
			return
		default:
		}
		backoff.wait(stop)
	}
}

func (c *Consumer) apply(g *generation, batch []aggregate.Entry, published *bool, epoch string) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RedisTimeout)
	defer cancel()
	if !*published {
		for i := range batch {
			if batch[i].Bad != nil {
				if err := c.dead.Publish(ctx, batch[i]); err != nil {
					return err
				}
				c.deadLets.Add(1)
				g.logger.Warn("entry dead-lettered", "id", batch[i].ID, "reason", batch[i].Bad)
			}
		}
		*published = true
	}
	a := <-g.appliers
	start := time.Now()
	applied, skipped, err := a.ApplyAt(ctx, batch, epoch)
	took := time.Since(start)
	g.appliers <- a
	if err != nil {
		return err
	}
	c.m.applySeconds.Observe(took.Seconds())
	c.m.batchSize.Observe(float64(len(batch)))
	c.applied.Add(applied)
	c.skipped.Add(skipped)
	if skipped > 0 {
		g.logger.Info("entries already applied by another consumer were skipped", "skipped", skipped,
			"first_id", batch[0].ID, "last_id", batch[len(batch)-1].ID)
	}
	return nil
}

// Claim takes over entries that other consumers left pending for longer than
// cfg.ClaimMinIdle (a consumer that died mid-batch) and applies them. It runs until
// stop is closed.
func (c *Consumer) Claim(stop <-chan struct{}) {
	t := time.NewTicker(c.cfg.ClaimInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		g := c.cur.Load()
		if at, err := c.claimOnce(stop, g); err != nil && !generations.IsNoGroup(err) { // NOGROUP: a switch; the read loop moves on
			c.m.claimErrors.Inc()
			g.logger.Warn("claim failed", "start_id", at, "err", err)
		}
	}
}

// claimOnce claims and applies, in batches, every entry pending longer than
// cfg.ClaimMinIdle. On an error it returns the id the failed claim started from.
func (c *Consumer) claimOnce(stop <-chan struct{}, g *generation) (string, error) {
	start := "0-0"
	for {
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RedisTimeout)
		// Through claimPending, never a bare XAUTOCLAIM: the claim must bump the epoch
		// that lets other batches skip the ownership check (see aggregate's apply.lua).
		msgs, next, err := claimPending(ctx, c.rdb, g.keys, c.keys.Stream(), c.name, c.cfg.ClaimMinIdle, start, c.cfg.Batch)
		cancel()
		if err != nil {
			return start, err
		}
		if len(msgs) > 0 {
			g.logger.Info("claimed entries left pending by another consumer", "entries", len(msgs),
				"first_id", msgs[0].ID, "last_id", msgs[len(msgs)-1].ID)
			c.applyWithRetry(stop, g, aggregate.Decode(msgs), "")
		}
		if next == "0-0" || next == "" {
			return "", nil
		}
		start = next
	}
}

// reapScript deletes a consumer only if it holds no pending entries, checked in the
// same atomic step: deleting a consumer drops its pending entries from the group, so a
// consumer that read a batch between a check and a delete would lose that batch.
var reapScript = redis.NewScript(`#!lua
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p > 0 then return 0 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) + 1
`)

// Reap removes consumers that have been idle longer than cfg.ConsumerExpiry and hold
// nothing. A consumer that is in fact alive and just idle is recreated by its next
// read, so this is always safe.
func (c *Consumer) Reap(stop <-chan struct{}) {
	t := time.NewTicker(c.cfg.ReapInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		g := c.cur.Load()
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RedisTimeout)
		consumers, err := c.rdb.XInfoConsumers(ctx, c.keys.Stream(), g.keys.Group()).Result()
		if err != nil {
			cancel()
			if !generations.IsNoGroup(err) {
				c.m.reapErrors.Inc()
				g.logger.Warn("list consumers failed", "err", err)
			}
			continue
		}
		for _, ci := range consumers {
			if ci.Name == c.name || ci.Pending > 0 || ci.Idle < c.cfg.ConsumerExpiry {
				continue
			}
			n, err := reapScript.Run(ctx, c.rdb, []string{c.keys.Stream()}, g.keys.Group(), ci.Name).Int()
			if err != nil {
				c.m.reapErrors.Inc()
				g.logger.Warn("remove idle consumer failed", "idle_consumer", ci.Name, "err", err)
			} else if n > 0 {
				g.logger.Info("removed idle consumer that held nothing", "idle_consumer", ci.Name, "idle", ci.Idle)
			}
		}
		cancel()
	}
}

type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{d: 50 * time.Millisecond} }

func (b *backoff) reset() { b.d = 50 * time.Millisecond }

func (b *backoff) wait(stop <-chan struct{}) {
	wait(stop, b.d)
	if b.d < 2*time.Second {
		b.d *= 2
	}
}
