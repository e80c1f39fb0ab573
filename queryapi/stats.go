package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/server"
	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"
)

// The statistics endpoints read the time buckets the processor writes (see
// events.Bucket): every answer is a fixed set of key reads in one MULTI/EXEC with the
// generation pointer, never a scan.

// UniqueUsersError is the standard error of Redis's HyperLogLog (0.81 %): unique-user
// counts are estimates, exact only for small sets.
const UniqueUsersError = 0.0081

// maxBuckets bounds a time series, and so the work of one request.
const maxBuckets = 10_000

// namedRanges are the ranges a query can name instead of giving from and to; each ends
// at the end of the current minute.
var namedRanges = map[string]time.Duration{
	"1h":  time.Hour,
	"24h": 24 * time.Hour,
	"7d":  7 * 24 * time.Hour,
	"30d": 30 * 24 * time.Hour,
}

// span is a query's time range [from, to), in Unix ms.
type span struct{ from, to int64 }

// parseSpan reads from/to (RFC 3339 or Unix ms) or range=1h|24h|7d|30d|today; the
// default is the last 24 hours. A named range ends at the end of the current minute, so
// that the minute in progress is included and the range is whole minutes.
func parseSpan(c echo.Context, now time.Time) (span, error) {
	name, fromS, toS := c.QueryParam("range"), c.QueryParam("from"), c.QueryParam("to")
	end := events.Minute.Start(now.UnixMilli()) + events.Minute.Millis()
	if name != "" {
		if fromS != "" || toS != "" {
			return span{}, server.BadRequest("range: give range, or from and to, not both")
		}
		if name == "today" {
			return span{events.Day.Start(now.UnixMilli()), end}, nil
		}
		d, ok := namedRanges[name]
		if !ok {
			return span{}, server.BadRequest("range: must be 1h, 24h, 7d, 30d or today")
		}
		return span{end - d.Milliseconds(), end}, nil
	}
	s := span{end - 24*time.Hour.Milliseconds(), end}
	var err error
	if fromS != "" {
		if s.from, err = parseTime("from", fromS); err != nil {
			return span{}, err
		}
	}
	if toS != "" {
		if s.to, err = parseTime("to", toS); err != nil {
			return span{}, err
		}
	} else if fromS != "" {
		s.to = max(end, s.from+1)
	}
	if s.from >= s.to {
		return span{}, server.BadRequest("from: must be before to")
	}
	return s, nil
}

// parseTime reads an RFC 3339 time or Unix milliseconds, as the events' ts.
func parseTime(field, v string) (int64, error) {
	if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
		if ms < 0 || ms > 1<<53 {
			return 0, server.BadRequest(field + ": Unix milliseconds out of range")
		}
		return ms, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return 0, server.BadRequest(field + ": must be an RFC 3339 time or Unix milliseconds")
	}
	return t.UnixMilli(), nil
}

// atGeneration queues reads of every partition's current generation through queue and
// runs them, one round trip per node, again from a partition's new generation if a
// rebuild moved its pointer since the last read (see partitions.Reader). queue may be
// called more than once for a partition; only its last call's commands hold the answer.
func (h *handler) atGeneration(ctx context.Context, queue func(pipe redis.Pipeliner, k events.Keys, gen events.GenKeys)) error {
	if err := h.parts.Read(ctx, h.parts.All(), queue); err != nil {
		h.redisErrors.Inc()
		return err
	}
	return nil
}

// liveGlobal and liveProduct report whether a global or a per-product bucket is still
// retained at now.
func (h *handler) liveGlobal(now int64) func(events.Bucket) bool {
	return func(b events.Bucket) bool { return events.Live(b, h.retention.Global(b.Res), now) }
}

func (h *handler) liveProduct(now int64) func(events.Bucket) bool {
	return func(b events.Bucket) bool { return events.Live(b, h.retention.Product(b.Res), now) }
}

// Summary is the answer of /v1/stats/summary.
type Summary struct {
	// From and To are the range the numbers cover (Unix ms). They are the asked range,
	// widened to bucket edges where an edge falls in a minute (or hour) whose buckets
	// have expired; Resolution names the finest buckets used.
	From       int64  `json:"from"`
	To         int64  `json:"to"`
	Resolution string `json:"resolution"`
	// Complete is false when part of the range is older than every retained bucket:
	// the numbers then cover less than [from, to).
	Complete         bool     `json:"complete"`
	Events           int64    `json:"events"`
	Clicks           int64    `json:"clicks"`
	PageViews        int64    `json:"page_views"`
	DwellMs          int64    `json:"dwell_ms"`
	DwellCount       int64    `json:"dwell_count"`
	AvgDwellMs       *float64 `json:"avg_dwell_ms"`       // null without dwells
	UniqueUsers      int64    `json:"unique_users"`       // the union over the range, an estimate
	UniqueUsersError float64  `json:"unique_users_error"` // its standard error
	ClickThroughRate *float64 `json:"click_through_rate"` // clicks / page views; null without page views
}

// statsFields are the fields of a global bucket hash, in Summary's order.
var statsFields = []string{events.FieldEvents, events.FieldClicks, events.FieldPageViews, events.FieldDwellMs, events.FieldDwellCount}

func (h *handler) summary(c echo.Context) error {
	now := h.now()
	s, err := parseSpan(c, now)
	if err != nil {
		return err
	}
	key := "summary " + strconv.FormatInt(s.from, 10) + " " + strconv.FormatInt(s.to, 10)
	sum, err := coalesce(h.shared, c.Request().Context(), key, func(ctx context.Context) (Summary, error) {
		return h.readSummary(ctx, s, now.UnixMilli())
	})
	if err != nil {
		return err
	}
	return writeStats(c, sum)
}

// readSummary sums the buckets that tile s and counts the union of their users, in one
// round trip.
func (h *handler) readSummary(ctx context.Context, s span, now int64) (Summary, error) {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	tl := events.Tile(s.from, s.to, h.liveGlobal(now))
	r := newSummaryRead(tl, h.layout.Count())
	err := h.atGeneration(ctx, func(pipe redis.Pipeliner, k events.Keys, gen events.GenKeys) {
		r.queue(ctx, pipe, k, gen)
	})
	if err != nil {
		return Summary{}, err
	}
	return r.result()
}

// summaryRead is the reads of one Summary queued on a pipeline, per partition: the
// hashes of the buckets that tile its range, and one PFCOUNT over all their users (a
// union).
type summaryRead struct {
	tl    events.Tiling
	parts []summaryPart // by partition
}

type summaryPart struct {
	hm []*redis.SliceCmd
	uu *redis.IntCmd
}

func newSummaryRead(tl events.Tiling, partitions int) *summaryRead {
	return &summaryRead{tl: tl, parts: make([]summaryPart, partitions)}
}

// queue queues the reads of partition k at generation gen on pipe. Queued again for a
// partition (atGeneration's read again after a rebuild's switch), it replaces that
// partition's reads.
func (r *summaryRead) queue(ctx context.Context, pipe redis.Pipeliner, k events.Keys, gen events.GenKeys) {
	p := summaryPart{hm: make([]*redis.SliceCmd, 0, len(r.tl.Buckets))}
	keys := make([]string, 0, len(r.tl.Buckets))
	for _, b := range r.tl.Buckets {
		p.hm = append(p.hm, pipe.HMGet(ctx, gen.Stats(b), statsFields...))
		keys = append(keys, gen.Uniques(b))
	}
	if len(keys) > 0 {
		p.uu = pipe.PFCount(ctx, keys...)
	}
	r.parts[k.Partition()] = p
}

// result sums the reads once the pipeline has run.
func (r *summaryRead) result() (Summary, error) {
	tl := r.tl
	sum := Summary{From: tl.From, To: tl.To, Resolution: tl.Finest.String(), Complete: !tl.Gaps, UniqueUsersError: UniqueUsersError}
	for _, p := range r.parts {
		for _, cmd := range p.hm {
			if err := cmd.Err(); err != nil {
				return Summary{}, err
			}
			for i, dst := range []*int64{&sum.Events, &sum.Clicks, &sum.PageViews, &sum.DwellMs, &sum.DwellCount} {
				*dst += intField(cmd.Val()[i])
			}
		}
		// A user's events are all in one partition, so the partitions' users are
		// disjoint: the union over partitions is the sum of their unions.
		if p.uu != nil {
			c, err := p.uu.Result()
			if err != nil {
				return Summary{}, err
			}
			sum.UniqueUsers += c
		}
	}
	sum.AvgDwellMs = ratio(sum.DwellMs, sum.DwellCount)
	sum.ClickThroughRate = ratio(sum.Clicks, sum.PageViews)
	return sum, nil
}

// ratio is a/b, or nil when b is 0.
func ratio(a, b int64) *float64 {
	if b == 0 {
		return nil
	}
	r := float64(a) / float64(b)
	return &r
}

// intField reads one HMGET value; a missing field is 0.
func intField(v any) int64 {
	s, _ := v.(string)
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// Series is the answer of /v1/stats/timeseries: one point [bucket start in Unix ms,
// value] per bucket that overlaps [from, to), every bucket present. A bucket with no
// events is 0; one past its retention is null.
type Series struct {
	Metric    string   `json:"metric"`
	Interval  string   `json:"interval"`
	Product   string   `json:"product,omitempty"`
	From      int64    `json:"from"`
	To        int64    `json:"to"`
	Points    [][2]any `json:"points"`
	Estimated bool     `json:"estimated,omitempty"` // unique_users: HyperLogLog estimates
}

// seriesMetrics are the metrics of the global series; productMetrics, of a product's.
var (
	seriesMetrics  = []string{events.FieldEvents, events.FieldClicks, events.FieldPageViews, events.FieldDwellMs, events.FieldDwellCount, "unique_users"}
	productMetrics = []string{events.FieldClicks, events.FieldPageViews, events.FieldDwellMs, events.FieldDwellCount}
)

func (h *handler) timeseries(c echo.Context) error {
	if c.QueryParam("format") == "csv" {
		return h.timeseriesCSV(c) // takes a list of metrics
	}
	now := h.now()
	s, err := parseSpan(c, now)
	if err != nil {
		return err
	}
	q, err := parseSeriesQuery(c)
	if err != nil {
		return err
	}
	key := fmt.Sprintf("series %s %d %q %d %d", q.metric, q.interval, q.product, s.from, s.to)
	out, err := coalesce(h.shared, c.Request().Context(), key, func(ctx context.Context) (Series, error) {
		return h.readSeries(ctx, q, s, now.UnixMilli())
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

// seriesQuery is what a time series is of.
type seriesQuery struct {
	metric   string
	interval events.Resolution
	product  string // "" for the global series
}

func parseSeriesQuery(c echo.Context) (seriesQuery, error) {
	return newSeriesQuery(c.QueryParam("metric"), c.QueryParam("interval"), c.QueryParam("product"), c.QueryParams().Has("product"))
}

// newSeriesQuery checks a series' metric, interval and product (hasProduct: the
// parameter was given, even empty).
func newSeriesQuery(metric, iv, product string, hasProduct bool) (seriesQuery, error) {
	q := seriesQuery{metric: metric, product: product}
	if iv == "" {
		iv = "hour"
	}
	var ok bool
	if q.interval, ok = events.ParseResolution(iv); !ok {
		return q, server.BadRequest("interval: must be minute, hour or day")
	}
	if hasProduct {
		if !events.ValidID(q.product) {
			return q, server.BadRequest("product: " + events.IDRule)
		}
		if q.interval == events.Minute {
			return q, server.BadRequest("interval: a product's series is kept per hour and per day")
		}
		if !slices.Contains(productMetrics, q.metric) {
			return q, server.BadRequest("metric: with product, must be one of " + strings.Join(productMetrics, ", "))
		}
		return q, nil
	}
	if !slices.Contains(seriesMetrics, q.metric) {
		return q, server.BadRequest("metric: must be one of " + strings.Join(seriesMetrics, ", "))
	}
	return q, nil
}

// readSeries reads one value per bucket of q.interval that overlaps s, in one round trip.
func (h *handler) readSeries(ctx context.Context, q seriesQuery, s span, now int64) (Series, error) {
	first := q.interval.Start(s.from)
	n := (s.to - first + q.interval.Millis() - 1) / q.interval.Millis()
	if n > maxBuckets {
		return Series{}, server.BadRequest("the range holds " + strconv.FormatInt(n, 10) + " " + q.interval.String() +
			" buckets; at most " + strconv.Itoa(maxBuckets) + ": use a coarser interval or a shorter range")
	}
	live := h.liveGlobal(now)
	if q.product != "" {
		live = h.liveProduct(now)
	}
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	buckets := make([]events.Bucket, n)
	for i := range buckets {
		buckets[i] = events.Bucket{Res: q.interval, Start: first + int64(i)*q.interval.Millis()}
	}
	cmds := make([][]redis.Cmder, h.layout.Count())
	err := h.atGeneration(ctx, func(pipe redis.Pipeliner, k events.Keys, gen events.GenKeys) {
		p := k.Partition()
		cmds[p] = make([]redis.Cmder, n)
		for i, b := range buckets {
			if !live(b) {
				continue
			}
			cmds[p][i] = seriesRead(ctx, pipe, gen, q, b)
		}
	})
	if err != nil {
		return Series{}, err
	}
	out := Series{Metric: q.metric, Interval: q.interval.String(), Product: q.product, From: s.from, To: s.to,
		Points: make([][2]any, n), Estimated: q.metric == "unique_users"}
	for i := range buckets {
		var v any // null: past retention
		if live(buckets[i]) {
			// A bucket's value is the sum of the partitions' (unique users too: a user's
			// events are all in one partition).
			var sum int64
			for p := range cmds {
				x, err := cmdInt(cmds[p][i])
				if err != nil {
					return Series{}, err
				}
				sum += x
			}
			v = sum
		}
		out.Points[i] = [2]any{buckets[i].Start, v}
	}
	return out, nil
}

// seriesRead queues the read of one bucket's value of q.metric.
func seriesRead(ctx context.Context, pipe redis.Pipeliner, gen events.GenKeys, q seriesQuery, b events.Bucket) redis.Cmder {
	switch {
	case q.product == "" && q.metric == "unique_users":
		return pipe.PFCount(ctx, gen.Uniques(b))
	case q.product == "":
		return pipe.HGet(ctx, gen.Stats(b), q.metric)
	case q.metric == events.FieldClicks:
		return pipe.ZScore(ctx, gen.TopClicks(b), q.product)
	case q.metric == events.FieldPageViews:
		return pipe.ZScore(ctx, gen.TopViews(b), q.product)
	default:
		return pipe.HGet(ctx, gen.ProductStats(b, q.product), q.metric)
	}
}

// cmdInt reads the integer answer of a seriesRead command; a missing key or field is 0.
func cmdInt(cmd redis.Cmder) (int64, error) {
	if err := cmd.Err(); err != nil {
		if errors.Is(err, redis.Nil) {
			return 0, nil
		}
		return 0, err
	}
	switch c := cmd.(type) {
	case *redis.IntCmd:
		return c.Val(), nil
	case *redis.StringCmd:
		return strconv.ParseInt(c.Val(), 10, 64)
	case *redis.FloatCmd:
		return int64(math.Round(c.Val())), nil
	}
	return 0, errors.New("unexpected reply type")
}

// ProductStats is one row of /v1/stats/top-products.
type ProductStats struct {
	ProductID string `json:"product_id"`
	Clicks    int64  `json:"clicks"`
	PageViews int64  `json:"page_views"`
}

// TopProducts is the answer of /v1/stats/top-products.
type TopProducts struct {
	From       int64          `json:"from"`
	To         int64          `json:"to"`
	Resolution string         `json:"resolution"`
	Complete   bool           `json:"complete"`
	By         string         `json:"by"`
	Products   []ProductStats `json:"products"`
}

func (h *handler) statsTopProducts(c echo.Context) error {
	now := h.now()
	s, err := parseSpan(c, now)
	if err != nil {
		return err
	}
	limit, err := parseLimit(c)
	if err != nil {
		return err
	}
	by := c.QueryParam("by")
	if by == "" {
		by = events.FieldClicks
	}
	if by != events.FieldClicks && by != events.FieldPageViews {
		return server.BadRequest("by: must be clicks or page_views")
	}
	key := fmt.Sprintf("top %s %d %d %d", by, limit, s.from, s.to)
	out, err := coalesce(h.shared, c.Request().Context(), key, func(ctx context.Context) (TopProducts, error) {
		return h.readTopProducts(ctx, s, now.UnixMilli(), by, limit)
	})
	if err != nil {
		return err
	}
	return writeStats(c, out)
}

// readTopProducts ranks the products of s by the sum of their per-bucket scores, most
// first, ties by id. The per-bucket rankings of the buckets that tile s are summed by
// ZUNION inside Redis, in one round trip; the union of a range holds every product
// active in it, which the per-product buckets' retention bounds.
func (h *handler) readTopProducts(ctx context.Context, s span, now int64, by string, limit int) (TopProducts, error) {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	tl := events.Tile(s.from, s.to, h.liveProduct(now))
	out := TopProducts{From: tl.From, To: tl.To, Resolution: tl.Finest.String(), Complete: !tl.Gaps, By: by, Products: []ProductStats{}}
	if len(tl.Buckets) == 0 {
		return out, nil
	}
	n := h.layout.Count()
	clicks, views := make([]*redis.ZSliceCmd, n), make([]*redis.ZSliceCmd, n)
	err := h.atGeneration(ctx, func(pipe redis.Pipeliner, k events.Keys, gen events.GenKeys) {
		ck, vk := make([]string, len(tl.Buckets)), make([]string, len(tl.Buckets))
		for i, b := range tl.Buckets {
			ck[i], vk[i] = gen.TopClicks(b), gen.TopViews(b)
		}
		clicks[k.Partition()] = pipe.ZUnionWithScores(ctx, redis.ZStore{Keys: ck})
		views[k.Partition()] = pipe.ZUnionWithScores(ctx, redis.ZStore{Keys: vk})
	})
	if err != nil {
		return TopProducts{}, err
	}
	// Each partition's union holds every product its users were active on, with its
	// partial sums; the sums over partitions are exact.
	rows := map[string]*ProductStats{}
	for p := range n {
		for _, z := range [2]*redis.ZSliceCmd{clicks[p], views[p]} {
			if err := z.Err(); err != nil {
				return TopProducts{}, err
			}
			for _, m := range z.Val() {
				id := m.Member.(string)
				r := rows[id]
				if r == nil {
					r = &ProductStats{ProductID: id}
					rows[id] = r
				}
				if z == clicks[p] {
					r.Clicks += int64(math.Round(m.Score))
				} else {
					r.PageViews += int64(math.Round(m.Score))
				}
			}
		}
	}
	all := make([]ProductStats, 0, len(rows))
	for _, r := range rows {
		all = append(all, *r)
	}
	key := func(p ProductStats) int64 {
		if by == events.FieldPageViews {
			return p.PageViews
		}
		return p.Clicks
	}
	slices.SortFunc(all, func(a, b ProductStats) int {
		if ka, kb := key(a), key(b); ka != kb {
			if ka > kb {
				return -1
			}
			return 1
		}
		return strings.Compare(a.ProductID, b.ProductID)
	})
	out.Products = all[:min(limit, len(all))]
	return out, nil
}

// parseLimit reads limit (1-100, default 10).
func parseLimit(c echo.Context) (int, error) {
	s := c.QueryParam("limit")
	if s == "" {
		return 10, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 100 {
		return 0, server.BadRequest("limit: must be an integer from 1 to 100")
	}
	return n, nil
}

// Active is the answer of /v1/stats/active.
type Active struct {
	WindowSeconds int64 `json:"window_seconds"`
	ActiveUsers   int64 `json:"active_users"`
}

// maxActiveWindow is how far back the active-users set reaches (the processor trims it).
const maxActiveWindow = time.Hour

func (h *handler) active(c echo.Context) error {
	window := 5 * time.Minute
	if s := c.QueryParam("window"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < time.Minute || d > maxActiveWindow || d%time.Second != 0 {
			return server.BadRequest("window: must be a duration from 1m to 60m, such as 5m")
		}
		window = d
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), h.timeout)
	defer cancel()
	since := strconv.FormatInt(h.now().Add(-window).UnixMilli(), 10)
	counts := make([]*redis.IntCmd, h.layout.Count())
	err := h.atGeneration(ctx, func(pipe redis.Pipeliner, k events.Keys, gen events.GenKeys) {
		counts[k.Partition()] = pipe.ZCount(ctx, gen.Active(), since, "+inf")
	})
	if err != nil {
		return err
	}
	var n int64 // the partitions' users are disjoint
	for _, c := range counts {
		n += c.Val()
	}
	return writeStats(c, Active{WindowSeconds: int64(window / time.Second), ActiveUsers: n})
}
