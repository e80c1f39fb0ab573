package main

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/redis/go-redis/v9"
)

// Consumer is one member of a generation's consumer group.
type Consumer struct {
	rdb      *redis.Client
	keys     events.Keys
	gen      events.GenKeys
	name     string
	cfg      Config
	dead     *DeadLetters
	logger   *slog.Logger
	applier  *Applier
	applyMu  sync.Mutex // the read loop and the claimer share one Applier
	applied  atomic.Int64
	skipped  atomic.Int64
	deadLets atomic.Int64
}

// NewConsumer returns a consumer named name in gen's group.
func NewConsumer(rdb *redis.Client, keys events.Keys, gen events.GenKeys, name string, cfg Config, dead *DeadLetters, logger *slog.Logger) *Consumer {
	return &Consumer{
		rdb: rdb, keys: keys, gen: gen, name: name, cfg: cfg, dead: dead,
		logger:  logger.With("stream", keys.Stream(), "group", gen.Group()),
		applier: NewApplier(rdb, keys, gen, name),
	}
}

// EnsureGroup creates the consumer group at the start of the stream if it is missing.
func EnsureGroup(ctx context.Context, rdb redis.UniversalClient, stream, group string) error {
	err := rdb.XGroupCreateMkStream(ctx, stream, group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return err
	}
	return nil
}

// Run reads and applies batches until stop is closed, then finishes the batch in
// flight and returns. Reads are never cancelled half-way (a read cancelled after Redis
// delivered its entries would leave them pending until claimed); instead each read
// blocks for at most cfg.Block and the loop checks stop between reads.
//
// Reading and applying overlap: while one batch is applied, the next one is read.
func (c *Consumer) Run(stop <-chan struct{}) error {
	batches := make(chan []Entry, 1)
	readErr := make(chan error, 1)
	go func() { readErr <- c.readLoop(stop, batches) }()
	for batch := range batches {
		c.applyWithRetry(stop, batch)
	}
	return <-readErr
}

func (c *Consumer) readLoop(stop <-chan struct{}, out chan<- []Entry) error {
	defer close(out)
	// First our own pending entries (left by an earlier process with the same name),
	// then new ones.
	start := "0"
	backoff := newBackoff()
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Block+c.cfg.RedisTimeout)
		res, err := c.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group:    c.gen.Group(),
			Consumer: c.name,
			Streams:  []string{c.keys.Stream(), start},
			Count:    int64(c.cfg.Batch),
			Block:    c.cfg.Block,
		}).Result()
		cancel()
		if errors.Is(err, redis.Nil) {
			start = ">"
			continue
		}
		if err != nil {
			if strings.HasPrefix(err.Error(), "NOGROUP") {
				if gerr := EnsureGroup(context.Background(), c.rdb, c.keys.Stream(), c.gen.Group()); gerr != nil {
					err = gerr
				}
			}
			c.logger.Warn("read failed", "err", err)
			backoff.wait(stop)
			continue
		}
		backoff.reset()
		msgs := res[0].Messages
		if start == "0" && len(msgs) == 0 {
			start = ">"
			continue
		}
		if start == "0" {
			// Continue after the last pending entry we got.
			start = msgs[len(msgs)-1].ID
		}
		out <- c.decode(msgs)
	}
}

// decode turns raw messages into entries. An entry trimmed from the stream while it
// was pending comes back with no fields; it has nothing to count and is acked.
func (c *Consumer) decode(msgs []redis.XMessage) []Entry {
	batch := make([]Entry, len(msgs))
	kv := make([]string, 0, 12)
	for i, m := range msgs {
		kv = kv[:0]
		for k, v := range m.Values {
			s, _ := v.(string)
			kv = append(kv, k, s)
		}
		batch[i].ID = m.ID
		batch[i].Event, batch[i].Bad = events.DecodeEntry(kv)
		if batch[i].Bad != nil {
			batch[i].Fields = append([]string(nil), kv...)
		}
	}
	return batch
}

// applyWithRetry applies a batch, retrying until it succeeds or stop is closed. A retry
// is always safe (see Apply). Entries that cannot be decoded are first published to the
// dead-letter stream, then acked by the same apply.
func (c *Consumer) applyWithRetry(stop <-chan struct{}, batch []Entry) {
	backoff := newBackoff()
	published := false
	for {
		err := c.apply(batch, &published)
		if err == nil {
			return
		}
		c.logger.Error("apply failed; will retry", "first_id", batch[0].ID, "last_id", batch[len(batch)-1].ID, "entries", len(batch), "err", err)
		select {
		case <-stop:
			// Entries stay pending; they are claimed by another consumer, or read again
			// by this one after a restart under the same name.
			c.logger.Warn("stopping with a batch unapplied; it stays pending", "first_id", batch[0].ID, "entries", len(batch))
			return
		default:
		}
		backoff.wait(stop)
	}
}

func (c *Consumer) apply(batch []Entry, published *bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RedisTimeout)
	defer cancel()
	if !*published {
		for i := range batch {
			if batch[i].Bad != nil {
				if err := c.dead.Publish(ctx, batch[i]); err != nil {
					return err
				}
				c.deadLets.Add(1)
				c.logger.Warn("entry dead-lettered", "id", batch[i].ID, "reason", batch[i].Bad)
			}
		}
		*published = true
	}
	c.applyMu.Lock()
	applied, skipped, err := c.applier.Apply(ctx, batch)
	c.applyMu.Unlock()
	if err != nil {
		return err
	}
	c.applied.Add(applied)
	c.skipped.Add(skipped)
	if skipped > 0 {
		c.logger.Info("entries already applied by another consumer were skipped", "skipped", skipped, "first_id", batch[0].ID)
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
		if err := c.claimOnce(stop); err != nil {
			c.logger.Warn("claim failed", "err", err)
		}
	}
}

func (c *Consumer) claimOnce(stop <-chan struct{}) error {
	start := "0-0"
	for {
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RedisTimeout)
		msgs, next, err := c.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
			Stream:   c.keys.Stream(),
			Group:    c.gen.Group(),
			Consumer: c.name,
			MinIdle:  c.cfg.ClaimMinIdle,
			Start:    start,
			Count:    int64(c.cfg.Batch),
		}).Result()
		cancel()
		if err != nil {
			return err
		}
		if len(msgs) > 0 {
			c.logger.Info("claimed entries left pending by another consumer", "entries", len(msgs), "first_id", msgs[0].ID)
			c.applyWithRetry(stop, c.decode(msgs))
		}
		if next == "0-0" || next == "" {
			return nil
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
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RedisTimeout)
		consumers, err := c.rdb.XInfoConsumers(ctx, c.keys.Stream(), c.gen.Group()).Result()
		if err != nil {
			cancel()
			c.logger.Warn("list consumers failed", "err", err)
			continue
		}
		for _, ci := range consumers {
			if ci.Name == c.name || ci.Pending > 0 || ci.Idle < c.cfg.ConsumerExpiry {
				continue
			}
			n, err := reapScript.Run(ctx, c.rdb, []string{c.keys.Stream()}, c.gen.Group(), ci.Name).Int()
			if err != nil {
				c.logger.Warn("remove idle consumer failed", "idle_consumer", ci.Name, "err", err)
			} else if n > 0 {
				c.logger.Info("removed idle consumer that held nothing", "idle_consumer", ci.Name, "idle", ci.Idle)
			}
		}
		cancel()
	}
}

type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{d: 50 * time.Millisecond} }

func (b *backoff) reset() { b.d = 50 * time.Millisecond }

func (b *backoff) wait(stop <-chan struct{}) {
	t := time.NewTimer(b.d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-stop:
	}
	if b.d < 2*time.Second {
		b.d *= 2
	}
}
