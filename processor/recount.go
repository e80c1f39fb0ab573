package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/aggregate"
	"github.com/clickstream/pipeline/internal/config"
	"github.com/redis/go-redis/v9"
)

// runRecount is `processor recount`: it counts a window of the stream straight from
// the entries and prints the totals per event type, overall and for one user or
// product. It writes nothing.
func runRecount(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("processor recount", flag.ContinueOnError)
	fs.SetOutput(stderr)
	from := fs.String("from", "", "start of the window, inclusive: an RFC 3339 time or a stream id (default: the oldest entry)")
	to := fs.String("to", "", "end of the window, exclusive: an RFC 3339 time or a stream id (default: the newest entry, included)")
	user := fs.String("user", "", "also show this user's totals")
	product := fs.String("product", "", "also show this product's totals")
	interval := fs.String("interval", "", "also print totals per minute, hour or day bucket of event time (of the --user's or --product's events when given), as the statistics API reports them")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("recount: unexpected argument %q", fs.Arg(0))
	}
	start, end := "-", "+"
	if *from != "" {
		id, err := windowBound(*from)
		if err != nil {
			return fmt.Errorf("recount: --from: %w", err)
		}
		start = id
	}
	if *to != "" {
		id, err := windowBound(*to)
		if err != nil {
			return fmt.Errorf("recount: --to: %w", err)
		}
		end = "(" + id
	}
	for _, f := range []struct{ name, v string }{{"--user", *user}, {"--product", *product}} {
		if f.v != "" && !events.ValidID(f.v) {
			return fmt.Errorf("recount: %s: %s", f.name, events.IDRule)
		}
	}
	rc := recount{user: *user, product: *product}
	if *interval != "" {
		res, ok := events.ParseResolution(*interval)
		if !ok {
			return fmt.Errorf("recount: --interval: must be minute, hour or day")
		}
		rc.interval, rc.buckets = &res, map[int64]*bucketCount{}
	}

	r := config.NewReader(getenv)
	cfg := readConfig(r)
	ropt := r.Redis()
	if err := r.Err(); err != nil {
		return err
	}
	ropt.ReadTimeout = cfg.RedisTimeout
	rdb := redis.NewUniversalClient(ropt)
	defer rdb.Close()
	keys := events.NewKeys(cfg.Namespace)

	began := time.Now()
	if err := rc.count(ctx, rdb, keys.Stream(), start, end, cfg.RedisTimeout); err != nil {
		return err
	}
	if err := rc.print(stdout, keys, start, end, time.Since(began)); err != nil {
		return err
	}
	// Entries that retention trimmed are only in the checkpoint, which has no times.
	cctx, cancel := context.WithTimeout(ctx, cfg.RedisTimeout)
	defer cancel()
	ck, err := rdb.HGetAll(cctx, keys.CheckpointInfo()).Result()
	if err != nil {
		return err
	}
	if pos := ck[events.CheckpointFieldPosition]; pos != "" && (start == "-" || events.CompareIDs(start, pos) <= 0) {
		fmt.Fprintf(stdout, "note: the window reaches before %s: %s entries up to there were trimmed by retention and are not in this count (the checkpoint holds their totals)\n",
			events.NextID(pos), ck[events.CheckpointFieldEntries])
	}
	return nil
}

var streamID = regexp.MustCompile(`^[0-9]{1,20}(-[0-9]{1,20})?$`)

// windowBound turns an RFC 3339 time or a stream id into a stream id: a time is the
// first id of its millisecond.
func windowBound(v string) (string, error) {
	if streamID.MatchString(v) {
		if !strings.Contains(v, "-") {
			v += "-0"
		}
		if ms, seq, _ := strings.Cut(v, "-"); !fitsUint64(ms) || !fitsUint64(seq) {
			return "", fmt.Errorf("%q: stream id out of range", v)
		}
		return v, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return "", fmt.Errorf("%q is neither an RFC 3339 time (2006-01-02T15:04:05Z) nor a stream id (1712345678901-0)", v)
	}
	if t.UnixMilli() < 0 {
		return "", fmt.Errorf("%q is before 1970", v)
	}
	return strconv.FormatInt(t.UnixMilli(), 10) + "-0", nil
}

func fitsUint64(s string) bool {
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil
}

// recount holds the totals of a window.
type recount struct {
	user, product string

	entries, bad      int64
	first, last       string
	all, users, prods aggregate.Totals

	interval *events.Resolution     // --interval, when given
	buckets  map[int64]*bucketCount // bucket start -> counts of the events the filters keep
}

// bucketCount is one bucket of `recount --interval`: its totals and its distinct users,
// counted exactly.
type bucketCount struct {
	events int64
	t      aggregate.Totals
	users  map[string]bool
}

// recountChunk is how many entries one XRANGE returns.
const recountChunk = 10_000

func (rc *recount) count(ctx context.Context, rdb redis.UniversalClient, stream, start, end string, timeout time.Duration) error {
	for {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		msgs, err := rdb.XRangeN(cctx, stream, start, end, recountChunk).Result()
		cancel()
		if err != nil {
			return fmt.Errorf("XRANGE %s %s %s: %w", stream, start, end, err)
		}
		for _, e := range aggregate.Decode(msgs) {
			rc.entries++
			if rc.first == "" {
				rc.first = e.ID
			}
			rc.last = e.ID
			if e.Bad != nil {
				rc.bad++
				continue
			}
			rc.all.Add(&e.Event)
			if rc.user != "" && e.Event.UserID == rc.user {
				rc.users.Add(&e.Event)
			}
			if rc.product != "" && e.Event.ProductID == rc.product {
				rc.prods.Add(&e.Event)
			}
			if rc.interval != nil && (rc.user == "" || e.Event.UserID == rc.user) && (rc.product == "" || e.Event.ProductID == rc.product) {
				start := rc.interval.Start(e.Event.Time(e.ID))
				b := rc.buckets[start]
				if b == nil {
					b = &bucketCount{users: map[string]bool{}}
					rc.buckets[start] = b
				}
				b.events++
				b.t.Add(&e.Event)
				b.users[e.Event.UserID] = true
			}
		}
		if len(msgs) < recountChunk {
			return nil
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
}

func (rc *recount) print(w io.Writer, keys events.Keys, start, end string, took time.Duration) error {
	from, to := "the oldest entry", "the newest"
	if start != "-" {
		from = start
	}
	if end != "+" {
		to = "before " + end[1:]
	}
	fmt.Fprintf(w, "recount of %s from %s to %s: %d entries (%d undecodable, not counted) in %v\n",
		keys.Stream(), from, to, rc.entries, rc.bad, took.Round(time.Millisecond))
	if rc.entries > 0 {
		fmt.Fprintf(w, "first entry %s, last entry %s\n", rc.first, rc.last)
	}
	name := 3
	for _, id := range []string{"user " + rc.user, "product " + rc.product} {
		name = max(name, len(id))
	}
	fmt.Fprintf(w, "%-*s %10s %10s %10s %10s %14s\n", name, "", "events", "clicks", "page_views", "dwells", "dwell_ms")
	row := func(label string, t aggregate.Totals) {
		fmt.Fprintf(w, "%-*s %10d %10d %10d %10d %14d\n", name, label, t.Clicks+t.PageViews+t.DwellCount, t.Clicks, t.PageViews, t.DwellCount, t.DwellMs)
	}
	row("all", rc.all)
	if rc.user != "" {
		row("user "+rc.user, rc.users)
	}
	if rc.product != "" {
		row("product "+rc.product, rc.prods)
	}
	if rc.interval == nil {
		return nil
	}
	of := "all events"
	switch {
	case rc.user != "" && rc.product != "":
		of = "the events of user " + rc.user + " and product " + rc.product
	case rc.user != "":
		of = "the events of user " + rc.user
	case rc.product != "":
		of = "the events of product " + rc.product
	}
	fmt.Fprintf(w, "per %s of event time (UTC), %s in the window; users are counted exactly\n", rc.interval, of)
	fmt.Fprintf(w, "%-20s %10s %10s %10s %10s %14s %10s\n", "bucket", "events", "clicks", "page_views", "dwells", "dwell_ms", "users")
	starts := make([]int64, 0, len(rc.buckets))
	for s := range rc.buckets {
		starts = append(starts, s)
	}
	slices.Sort(starts)
	for _, s := range starts {
		b := rc.buckets[s]
		fmt.Fprintf(w, "%-20s %10d %10d %10d %10d %14d %10d\n", time.UnixMilli(s).UTC().Format(time.RFC3339),
			b.events, b.t.Clicks, b.t.PageViews, b.t.DwellCount, b.t.DwellMs, len(b.users))
	}
	return nil
}
