package aggregate

import (
	"strconv"
	"time"

	"github.com/clickstream/pipeline/events"
)

// Increments sums the increments of a batch of events per key of one namespace of
// aggregates (a generation, or the checkpoint), and encodes the sums as script
// arguments.
//
// All-time counters: a user's go to its hash; a product's go to its hash, except its
// clicks, which are only its score in the ranking (see events.GenKeys.Product).
//
// The time dimension, by event time (see events.Event.Time), in UTC buckets: global
// counters per minute, hour and day (events.GenKeys.Stats), the users of each of those
// buckets (a HyperLogLog, Uniques), per-product counters per hour and day (clicks and
// page views as scores in the bucket's rankings TopClicks and TopViews, dwell in
// ProductStats), and the active users' last-seen times (Active). A bucket key expires
// at its end plus its retention; an event whose bucket has already expired skips that
// bucket only, so a late event is counted in the coarser buckets that still exist.
//
// A hash field is written only for a counter that is not zero, a ranking only for a
// product with a count, so that every path that counts the same events writes the same
// keys.
//
// An Increments is used by one goroutine at a time; Reset lets it be reused for the
// next batch without allocating again.
type Increments struct {
	ns   events.GenKeys
	keep events.Retention
	now  int64 // Unix ms: which buckets still exist, and who is active

	users, products map[string]int32 // id -> index into sums
	sums            []sum
	keys            []string // every key the increments name; see the key* constants

	buckets  map[events.Bucket]int32 // global bucket -> index into bsums
	bsums    []bucketSum
	pbuckets map[events.Bucket]int32 // product bucket -> index into rsums
	rsums    []rankSum               // per-product buckets
	pstats   map[uint64]int32        // rsums index << 32 | product's sums index -> index into psums
	psums    []productSum

	// The bucket of the previous event per resolution (an index into bsums, rsums; -1
	// when none): in a stream in time order, the next event's bucket nearly always.
	lastGlobal, lastRank [len(events.Resolutions)]int32
}

// The keys every batch names first, at fixed positions.
const (
	keyRanking = iota
	keyActive
	fixedKeys
)

// ActiveWindow is how far back the active users reach: older last-seen times are
// trimmed by every apply, and older events do not touch the set.
const ActiveWindow = time.Hour

type sum struct {
	Totals
	key     int32 // index in keys of its hash
	product bool  // the hash is a product's: its clicks go to the ranking
	// For a user: the global bucket (index into bsums) per resolution whose users it was
	// last added to. For a product: its productSum (index into psums) per resolution of
	// its latest event. -1 when none. Both spare a map lookup per event and resolution.
	last [len(events.Resolutions)]int32
	// seen is a user's latest event time within ActiveWindow (0: none).
	seen int64
}

type bucketSum struct {
	bucket            events.Bucket
	statsKey, uniqKey int32
	events            int64
	t                 Totals
	users             []string // added once per run of events in the bucket; PFADD ignores repeats
	expireAt          int64
}

type rankSum struct {
	bucket              events.Bucket
	clicksKey, viewsKey int32   // -1 until the bucket has a click (a page view)
	products            []int32 // indices into psums
	expireAt            int64
}

type productSum struct {
	product  string
	rank     int32 // index into rsums
	statsKey int32 // -1 until the product has a dwell in the bucket
	t        Totals
}

// NewIncrements returns empty increments of the namespace ns, whose time buckets are
// kept for keep.
func NewIncrements(ns events.GenKeys, keep events.Retention) *Increments {
	in := &Increments{ns: ns, keep: keep,
		users: map[string]int32{}, products: map[string]int32{},
		buckets: map[events.Bucket]int32{}, pbuckets: map[events.Bucket]int32{}, pstats: map[uint64]int32{}}
	in.Reset(0)
	return in
}

// Reset empties the increments, keeping their memory, for a batch applied at now (Unix
// ms): buckets that have expired by then are skipped.
func (in *Increments) Reset(now int64) {
	in.now = now
	clear(in.users)
	clear(in.products)
	clear(in.buckets)
	clear(in.pbuckets)
	clear(in.pstats)
	in.sums = in.sums[:0]
	for i := range in.bsums {
		in.bsums[i].users = in.bsums[i].users[:0]
	}
	in.bsums = in.bsums[:0]
	for i := range in.rsums {
		in.rsums[i].products = in.rsums[i].products[:0]
	}
	in.rsums = in.rsums[:0]
	in.psums = in.psums[:0]
	for r := range in.lastGlobal {
		in.lastGlobal[r], in.lastRank[r] = -1, -1
	}
	in.keys = append(in.keys[:0], in.ns.TopProducts(), in.ns.Active())
}

// Add adds the increments of one event whose time (events.Event.Time) is at.
func (in *Increments) Add(e *events.Event, at int64) {
	u := in.slot(in.users, e.UserID, false)
	p := in.slot(in.products, e.ProductID, true)
	in.sums[u].Add(e)
	in.sums[p].Add(e)
	for r, res := range events.Resolutions {
		b := events.Bucket{Res: res, Start: res.Start(at)}
		if keep := in.keep.Global(res); events.Live(b, keep, in.now) {
			in.addGlobal(r, b, keep, e, u)
		}
		if keep := in.keep.Product(res); events.Live(b, keep, in.now) {
			in.addProduct(r, b, keep, e, p)
		}
	}
	if at > in.now-ActiveWindow.Milliseconds() {
		at = min(at, in.now) // a clock ahead of ours does not keep a user active longer
		in.sums[u].seen = max(in.sums[u].seen, at)
	}
}

// name adds a key and returns its index.
func (in *Increments) name(key string) int32 {
	in.keys = append(in.keys, key)
	return int32(len(in.keys) - 1)
}

// slot returns the index in sums of the hash of a user or product, adding it when the
// batch has not named it yet: a key's name is built once per batch, not per event.
func (in *Increments) slot(index map[string]int32, id string, product bool) int32 {
	if i, ok := index[id]; ok {
		return i
	}
	i := int32(len(in.sums))
	index[id] = i
	key := in.ns.User(id)
	if product {
		key = in.ns.Product(id)
	}
	in.sums = append(in.sums, sum{product: product, key: in.name(key), last: [...]int32{-1, -1, -1}})
	return i
}

// addGlobal counts e, of user u, in the global bucket b of the r-th resolution.
func (in *Increments) addGlobal(r int, b events.Bucket, keep time.Duration, e *events.Event, u int32) {
	i := in.lastGlobal[r]
	if i < 0 || in.bsums[i].bucket != b {
		var ok bool
		if i, ok = in.buckets[b]; !ok {
			i = int32(len(in.bsums))
			in.buckets[b] = i
			if len(in.bsums) < cap(in.bsums) {
				in.bsums = in.bsums[:i+1] // keeps the users slice's memory
			} else {
				in.bsums = append(in.bsums, bucketSum{})
			}
			in.bsums[i] = bucketSum{bucket: b, statsKey: in.name(in.ns.Stats(b)), uniqKey: in.name(in.ns.Uniques(b)),
				users: in.bsums[i].users[:0], expireAt: events.ExpireAt(b, keep)}
		}
		in.lastGlobal[r] = i
	}
	s := &in.bsums[i]
	s.events++
	s.t.Add(e)
	if in.sums[u].last[r] != i {
		in.sums[u].last[r] = i
		s.users = append(s.users, e.UserID)
	}
}

// addProduct counts e, of product p, in the per-product bucket b of the r-th resolution.
func (in *Increments) addProduct(r int, b events.Bucket, keep time.Duration, e *events.Event, p int32) {
	i := in.lastRank[r]
	if i < 0 || in.rsums[i].bucket != b {
		var ok bool
		if i, ok = in.pbuckets[b]; !ok {
			i = int32(len(in.rsums))
			in.pbuckets[b] = i
			if len(in.rsums) < cap(in.rsums) {
				in.rsums = in.rsums[:i+1]
			} else {
				in.rsums = append(in.rsums, rankSum{})
			}
			in.rsums[i] = rankSum{bucket: b, clicksKey: -1, viewsKey: -1, products: in.rsums[i].products[:0],
				expireAt: events.ExpireAt(b, keep)}
		}
		in.lastRank[r] = i
	}
	rk := &in.rsums[i]
	j := in.sums[p].last[r]
	if j < 0 || in.psums[j].rank != i {
		var ok bool
		key := uint64(i)<<32 | uint64(p)
		if j, ok = in.pstats[key]; !ok {
			j = int32(len(in.psums))
			in.pstats[key] = j
			in.psums = append(in.psums, productSum{product: e.ProductID, rank: i, statsKey: -1})
			rk.products = append(rk.products, j)
		}
		in.sums[p].last[r] = j
	}
	ps := &in.psums[j]
	ps.t.Add(e)
	switch {
	case e.Type == events.Click && rk.clicksKey < 0:
		rk.clicksKey = in.name(in.ns.TopClicks(b))
	case e.Type == events.PageView && rk.viewsKey < 0:
		rk.viewsKey = in.name(in.ns.TopViews(b))
	case e.Type == events.Dwell && ps.statsKey < 0:
		ps.statsKey = in.name(in.ns.ProductStats(b, e.ProductID))
	}
}

// Keys are the keys the arguments of AppendArgs name, in order: pass them to the
// script as KEYS from the index given to AppendArgs. They are valid until Reset.
func (in *Increments) Keys() []string { return in.keys }

// Hash fields and operations of the encoding, boxed once for argv.
var (
	argClicks     any = events.FieldClicks
	argPageViews  any = events.FieldPageViews
	argDwellMs    any = events.FieldDwellMs
	argDwellCount any = events.FieldDwellCount
	argEvents     any = events.FieldEvents
	argNegInf     any = "-inf"

	opHincrby   any = "HINCRBY"
	opZincrby   any = "ZINCRBY"
	opPfadd     any = "PFADD"
	opZaddGT    any = "ZADDGT"
	opZremrange any = "ZREMRANGEBYSCORE"
	opPexpireat any = "PEXPIREAT"
)

// encoder appends sections to argv; see the package comment for the encoding.
type encoder struct {
	argv     []any
	firstKey int
	section  int // position of the open section's group count
	groups   int
	group    int // position of the open group's item count
	items    int
}

func (w *encoder) open(op any) {
	w.argv = append(w.argv, op, 0)
	w.section, w.groups = len(w.argv)-1, 0
}

// close drops the section if it has no groups.
func (w *encoder) close() {
	if w.groups == 0 {
		w.argv = w.argv[:w.section-1]
		return
	}
	w.argv[w.section] = w.groups
}

func (w *encoder) begin(key int32) {
	w.argv = append(w.argv, w.firstKey+int(key), 0)
	w.group, w.items = len(w.argv)-1, 0
}

func (w *encoder) item(args ...any) {
	w.argv = append(w.argv, args...)
	w.items++
}

// end drops the group if it has no items.
func (w *encoder) end() {
	if w.items == 0 {
		w.argv = w.argv[:w.group-1]
		return
	}
	w.argv[w.group] = w.items
	w.groups++
}

// counters adds the (field, amount) items of the counters that are not zero.
func (w *encoder) counters(t Totals, clicks bool) {
	if clicks && t.Clicks != 0 {
		w.item(argClicks, t.Clicks)
	}
	if t.PageViews != 0 {
		w.item(argPageViews, t.PageViews)
	}
	if t.DwellMs != 0 {
		w.item(argDwellMs, t.DwellMs)
	}
	if t.DwellCount != 0 {
		w.item(argDwellCount, t.DwellCount)
	}
}

// AppendArgs appends the increments to argv in the encoding that apply_increments
// reads (see the package comment); they must be the script's last arguments.
// firstKey is the index in the script's KEYS of Keys()[0].
func (in *Increments) AppendArgs(argv []any, firstKey int) []any {
	w := encoder{argv: argv, firstKey: firstKey}

	w.open(opHincrby)
	for i := range in.sums {
		s := &in.sums[i]
		w.begin(s.key)
		w.counters(s.Totals, !s.product) // a product's clicks: in the ranking below
		w.end()
	}
	for i := range in.bsums {
		s := &in.bsums[i]
		w.begin(s.statsKey)
		w.item(argEvents, s.events)
		w.counters(s.t, true)
		w.end()
	}
	for i := range in.rsums {
		for _, j := range in.rsums[i].products {
			if p := &in.psums[j]; p.statsKey >= 0 {
				w.begin(p.statsKey)
				w.counters(Totals{DwellMs: p.t.DwellMs, DwellCount: p.t.DwellCount}, false)
				w.end()
			}
		}
	}
	w.close()

	w.open(opZincrby)
	w.begin(keyRanking)
	for id, i := range in.products {
		if n := in.sums[i].Clicks; n != 0 {
			w.item(n, id)
		}
	}
	w.end()
	for i := range in.rsums {
		r := &in.rsums[i]
		for _, rank := range [...]struct {
			key    int32
			clicks bool
		}{{r.clicksKey, true}, {r.viewsKey, false}} {
			if rank.key < 0 {
				continue
			}
			w.begin(rank.key)
			for _, j := range r.products {
				p := &in.psums[j]
				if n := p.t.PageViews; !rank.clicks && n != 0 {
					w.item(n, p.product)
				} else if n := p.t.Clicks; rank.clicks && n != 0 {
					w.item(n, p.product)
				}
			}
			w.end()
		}
	}
	w.close()

	w.open(opPfadd)
	for i := range in.bsums {
		s := &in.bsums[i]
		w.begin(s.uniqKey)
		for _, u := range s.users {
			w.item(u)
		}
		w.end()
	}
	w.close()

	w.open(opZaddGT)
	w.begin(keyActive)
	for id, u := range in.users {
		if at := in.sums[u].seen; at != 0 {
			w.item(at, id)
		}
	}
	w.end()
	w.close()

	// Trimmed by every batch, also one with no recent events, so that the set holds
	// about an hour of users.
	w.open(opZremrange)
	w.begin(keyActive)
	w.item(argNegInf, "("+strconv.FormatInt(in.now-ActiveWindow.Milliseconds(), 10))
	w.end()
	w.close()

	// Last: PEXPIREAT on a key that does not exist yet would do nothing.
	w.open(opPexpireat)
	for i := range in.bsums {
		s := &in.bsums[i]
		for _, k := range [...]int32{s.statsKey, s.uniqKey} {
			w.begin(k)
			w.item(s.expireAt)
			w.end()
		}
	}
	for i := range in.rsums {
		r := &in.rsums[i]
		for _, k := range [...]int32{r.clicksKey, r.viewsKey} {
			if k >= 0 {
				w.begin(k)
				w.item(r.expireAt)
				w.end()
			}
		}
		for _, j := range r.products {
			if k := in.psums[j].statsKey; k >= 0 {
				w.begin(k)
				w.item(r.expireAt)
				w.end()
			}
		}
	}
	w.close()
	return w.argv
}
