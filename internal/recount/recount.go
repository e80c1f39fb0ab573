// Package recount is `processor recount`: it counts a window of the stream straight
// from the entries, through the same aggregate.Totals as every other path, and prints
// the totals per event type, overall, for one user or product, and per bucket of event
// time. It writes nothing, so it can audit what the aggregates and the statistics API
// say.
package recount

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/aggregate"
	"github.com/redis/go-redis/v9"
)

// Query is what to count.
type Query struct {
	// From and To select entries by the time ingest received them, as stream ids (see
	// ParseBound): From is inclusive, To exclusive; "" leaves that end open.
	From, To string
	User     string             // also count this user's events; "" for none
	Product  string             // also count this product's events; "" for none
	Interval *events.Resolution // also count per bucket of event time (of the User's or Product's events, when given)
}

// Run counts the entries of keys' stream that q selects and prints the totals to w.
// timeout bounds each Redis call. Entries trimmed by retention are only in the
// checkpoint, which has no times, so Run counts what the stream still holds, and
// says so when the window reaches back past the checkpoint.
func Run(ctx context.Context, rdb redis.UniversalClient, keys events.Keys, q Query, timeout time.Duration, w io.Writer) error {
	return run(ctx, rdb, []events.Keys{keys}, keys.Stream(), q, timeout, w)
}

// RunLayout is Run over every partition of l (over the partition of q.User's events
// only, when q.User is given): one count of all their entries, as if they were one
// stream. With one partition it is Run.
func RunLayout(ctx context.Context, rdb redis.UniversalClient, l events.Layout, q Query, timeout time.Duration, w io.Writer) error {
	if l.Count() == 1 {
		return Run(ctx, rdb, l.Partition(0), q, timeout, w)
	}
	if q.User != "" {
		k := l.ForUser(q.User)
		return run(ctx, rdb, []events.Keys{k}, fmt.Sprintf("%s (partition %d of %d: user %s's)", k.Stream(), k.Partition(), l.Count(), q.User), q, timeout, w)
	}
	return run(ctx, rdb, l.Partitions(), fmt.Sprintf("the %d partitions' streams", l.Count()), q, timeout, w)
}

func run(ctx context.Context, rdb redis.UniversalClient, parts []events.Keys, name string, q Query, timeout time.Duration, w io.Writer) error {
	start, end := "-", "+"
	if q.From != "" {
		start = q.From
	}
	if q.To != "" {
		end = "(" + q.To
	}
	rc := recount{user: q.User, product: q.Product, interval: q.Interval}
	if q.Interval != nil {
		rc.buckets = map[int64]*bucketCount{}
	}
	began := time.Now()
	for _, k := range parts {
		if err := rc.count(ctx, rdb, k.Stream(), start, end, timeout); err != nil {
			return err
		}
	}
	if err := rc.print(w, name, start, end, time.Since(began)); err != nil {
		return err
	}
	var trimmed int64
	var before string
	for _, k := range parts {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		ck, err := rdb.HGetAll(cctx, k.CheckpointInfo()).Result()
		cancel()
		if err != nil {
			return err
		}
		if pos := ck[events.CheckpointFieldPosition]; pos != "" && (start == "-" || events.CompareIDs(start, pos) <= 0) {
			n, _ := strconv.ParseInt(ck[events.CheckpointFieldEntries], 10, 64)
			trimmed += n
			if next := events.NextID(pos); before == "" || events.CompareIDs(next, before) > 0 {
				before = next
			}
		}
	}
	if before != "" {
		fmt.Fprintf(w, "note: the window reaches before %s: %d entries up to there were trimmed by retention and are not in this count (the checkpoint holds their totals)\n",
			before, trimmed)
	}
	return nil
}

var streamID = regexp.MustCompile(`^[0-9]{1,20}(-[0-9]{1,20})?$`)

// ParseBound turns an RFC 3339 time or a stream id into a stream id, for a Query's
// From or To: a time is the first id of its millisecond.
func ParseBound(v string) (string, error) {
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
			if rc.first == "" || events.CompareIDs(e.ID, rc.first) < 0 {
				rc.first = e.ID
			}
			if rc.last == "" || events.CompareIDs(e.ID, rc.last) > 0 {
				rc.last = e.ID
			}
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

func (rc *recount) print(w io.Writer, stream, start, end string, took time.Duration) error {
	from, to := "the oldest entry", "the newest"
	if start != "-" {
		from = start
	}
	if end != "+" {
		to = "before " + end[1:]
	}
	fmt.Fprintf(w, "recount of %s from %s to %s: %d entries (%d undecodable, not counted) in %v\n",
		stream, from, to, rc.entries, rc.bad, took.Round(time.Millisecond))
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
