package events

import (
	"strconv"
	"time"
)

// Resolution is the width of a statistics bucket. Buckets are aligned in UTC: a minute
// bucket starts on a whole minute, an hour bucket on a whole hour, a day bucket at
// 00:00 UTC. A bucket is named by its start in Unix milliseconds.
type Resolution uint8

// The resolutions, finest first.
const (
	Minute Resolution = iota
	Hour
	Day
)

// Resolutions lists every resolution, finest first.
var Resolutions = [...]Resolution{Minute, Hour, Day}

// Millis is the bucket width in milliseconds.
func (r Resolution) Millis() int64 {
	switch r {
	case Minute:
		return 60_000
	case Hour:
		return 3_600_000
	default:
		return 86_400_000
	}
}

// String is the resolution's name in the query API ("minute", "hour", "day").
func (r Resolution) String() string {
	switch r {
	case Minute:
		return "minute"
	case Hour:
		return "hour"
	default:
		return "day"
	}
}

// code is the resolution's letter in key names.
func (r Resolution) code() string {
	switch r {
	case Minute:
		return "m"
	case Hour:
		return "h"
	default:
		return "d"
	}
}

// ParseResolution reads a resolution's name.
func ParseResolution(s string) (Resolution, bool) {
	for _, r := range Resolutions {
		if r.String() == s {
			return r, true
		}
	}
	return 0, false
}

// Start is the start of the bucket that holds the time ms (Unix milliseconds).
func (r Resolution) Start(ms int64) int64 {
	w := r.Millis()
	s := ms - ms%w
	if ms < 0 && ms%w != 0 {
		s -= w
	}
	return s
}

// Bucket is one statistics bucket: a resolution and a start time.
type Bucket struct {
	Res   Resolution
	Start int64 // Unix ms, aligned to Res
}

// End is the first millisecond after the bucket.
func (b Bucket) End() int64 { return b.Start + b.Res.Millis() }

func (b Bucket) suffix() string { return b.Res.code() + ":" + strconv.FormatInt(b.Start, 10) }

// Retention is how long buckets are kept after their own end, per resolution and for
// the global and the per-product buckets. A bucket's keys expire at its end plus its
// retention (EXPIREAT), never at "now plus a TTL", so a late event cannot keep an old
// bucket alive; an event whose bucket has already expired skips that resolution only.
type Retention struct {
	Minute, Hour, Day       time.Duration // global counters and unique users
	ProductHour, ProductDay time.Duration // per-product counters and rankings
}

// DefaultRetention is the retention when none is configured.
var DefaultRetention = Retention{
	Minute:      48 * time.Hour,
	Hour:        90 * 24 * time.Hour,
	Day:         5 * 365 * 24 * time.Hour,
	ProductHour: 14 * 24 * time.Hour,
	ProductDay:  365 * 24 * time.Hour,
}

// Global is how long the global buckets of resolution r are kept.
func (rt Retention) Global(r Resolution) time.Duration {
	switch r {
	case Minute:
		return rt.Minute
	case Hour:
		return rt.Hour
	default:
		return rt.Day
	}
}

// Product is how long the per-product buckets of resolution r are kept; there are no
// per-product minute buckets (0).
func (rt Retention) Product(r Resolution) time.Duration {
	switch r {
	case Hour:
		return rt.ProductHour
	case Day:
		return rt.ProductDay
	default:
		return 0
	}
}

// ExpireAt is when bucket b's keys expire under retention keep, in Unix ms.
func ExpireAt(b Bucket, keep time.Duration) int64 { return b.End() + keep.Milliseconds() }

// Live reports whether bucket b, kept for keep, still exists at now (Unix ms).
func Live(b Bucket, keep time.Duration, now int64) bool {
	return keep > 0 && ExpireAt(b, keep) > now
}

// Tiling is a time range covered by buckets: the fewest buckets, coarsest first where
// they fit, that exist for the whole range.
type Tiling struct {
	Buckets  []Bucket
	From, To int64 // the range the buckets cover: the asked range, widened where its edges fall inside a bucket that could not be split
	// Gaps is true when part of the range is older than every retained bucket, so the
	// buckets cover less than [From, To).
	Gaps bool
	// Finest is the finest resolution used (Day when none was used).
	Finest Resolution
}

// Tile covers [from, to) (Unix ms) with buckets. At each point it takes the coarsest
// bucket that starts there, ends by to, and is live (live reports whether a bucket is
// still kept). Where no such bucket exists, because the point is not aligned to any
// live resolution, it takes the finest live bucket that holds the point, which widens
// the covered range; where no bucket at all is live, it records a gap and moves on a
// day. So a 30-day range costs about 30 day buckets plus the hours and minutes at its
// edges, not 43,200 minute buckets.
func Tile(from, to int64, live func(Bucket) bool) Tiling {
	t := Tiling{From: from, To: to, Finest: Day}
	cursor := from
	for cursor < to {
		var pick Bucket
		found := false
		for i := len(Resolutions) - 1; i >= 0; i-- {
			b := Bucket{Resolutions[i], cursor}
			if b.Res.Start(cursor) == cursor && b.End() <= to && live(b) {
				pick, found = b, true
				break
			}
		}
		if !found {
			for _, r := range Resolutions {
				b := Bucket{r, r.Start(cursor)}
				if live(b) {
					pick, found = b, true
					break
				}
			}
		}
		if !found {
			t.Gaps = true
			cursor = Day.Start(cursor) + Day.Millis()
			continue
		}
		t.Buckets = append(t.Buckets, pick)
		t.From = min(t.From, pick.Start)
		t.To = max(t.To, pick.End())
		t.Finest = min(t.Finest, pick.Res)
		cursor = pick.End()
	}
	return t
}
