package main

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/aggregate"
	"github.com/clickstream/pipeline/internal/generations"
	"github.com/clickstream/pipeline/internal/lag"
	"github.com/clickstream/pipeline/internal/partitions"
	"github.com/clickstream/pipeline/internal/server"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

type handler struct {
	rdb         redis.UniversalClient
	reader      *totalsReader
	layout      events.Layout
	parts       *partitions.Reader // reads the current generation of each partition
	timeout     time.Duration
	redisErrors prometheus.Counter // failed round trips of the handlers that call Redis themselves
	retention   events.Retention   // STATS_RETENTION_*: which buckets still exist
	now         func() time.Time
	shared      *coalescer // concurrent identical statistics reads share one
	live        *liveHub   // GET /v1/live
	web         *dashboard // the dashboard's pages and files
}

func (h *handler) ctx(c echo.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.Request().Context(), h.timeout)
}

// pathID returns the :id path parameter, percent-decoded once, if it is a valid id.
// echo routes on the escaped path when the request has one (alice%40example.com, as
// encodeURIComponent sends it), and then hands over the parameter still escaped;
// otherwise the parameter is already decoded and must not be decoded again. What
// decodes to something no id has (a/b from a%2Fb, "." from %2E) is refused like any
// other invalid id.
func pathID(c echo.Context, field string) (string, error) {
	id := c.Param("id")
	if c.Request().URL.RawPath != "" {
		var err error
		if id, err = url.PathUnescape(id); err != nil {
			return "", server.BadRequest(field + ": " + events.IDRule)
		}
	}
	if !events.ValidID(id) {
		return "", server.BadRequest(field + ": " + events.IDRule)
	}
	return id, nil
}

func (h *handler) totals(c echo.Context, kind entity, id string) (aggregate.Totals, error) {
	ctx, cancel := h.ctx(c)
	defer cancel()
	return h.reader.Totals(ctx, kind, id)
}

// writeTotals encodes t by hand: it is the hottest answer, and ids are validated to a
// JSON-safe alphabet, so no escaping is needed.
func writeTotals(c echo.Context, idField, id string, t aggregate.Totals) error {
	b := make([]byte, 0, 128+len(id))
	b = append(b, `{"`...)
	b = append(b, idField...)
	b = append(b, `":"`...)
	b = append(b, id...)
	b = append(b, `","clicks":`...)
	b = strconv.AppendInt(b, t.Clicks, 10)
	b = append(b, `,"page_views":`...)
	b = strconv.AppendInt(b, t.PageViews, 10)
	b = append(b, `,"dwell_ms":`...)
	b = strconv.AppendInt(b, t.DwellMs, 10)
	b = append(b, `,"dwell_count":`...)
	b = strconv.AppendInt(b, t.DwellCount, 10)
	b = append(b, '}')
	return c.JSONBlob(http.StatusOK, b)
}

func (h *handler) user(c echo.Context) error {
	id, err := pathID(c, "user_id")
	if err != nil {
		return err
	}
	t, err := h.totals(c, userEntity, id)
	if err != nil {
		return err
	}
	return writeTotals(c, "user_id", id, t)
}

func (h *handler) product(c echo.Context) error {
	id, err := pathID(c, "product_id")
	if err != nil {
		return err
	}
	t, err := h.totals(c, productEntity, id)
	if err != nil {
		return err
	}
	return writeTotals(c, "product_id", id, t)
}

// userClicks answers the bare click count, as the original article's endpoint did.
func (h *handler) userClicks(c echo.Context) error {
	id, err := pathID(c, "user_id")
	if err != nil {
		return err
	}
	t, err := h.totals(c, userEntity, id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, t.Clicks)
}

// ProductClicks is one row of the top-products ranking.
type ProductClicks struct {
	ProductID string `json:"product_id"`
	Clicks    int64  `json:"clicks"`
}

func (h *handler) topProducts(c echo.Context) error {
	limit, err := parseLimit(c)
	if err != nil {
		return err
	}
	ctx, cancel := h.ctx(c)
	defer cancel()
	zs, err := h.top(ctx, int64(limit))
	if err != nil {
		return err
	}
	out := make([]ProductClicks, len(zs))
	for i, z := range zs {
		out[i] = ProductClicks{ProductID: z.Member.(string), Clicks: int64(z.Score)}
	}
	return c.JSON(http.StatusOK, out)
}

// top reads the all-time ranking of the current generation(s): the limit products
// with the most clicks, most first, ties by id as ZREVRANGE orders them (descending).
func (h *handler) top(ctx context.Context, limit int64) ([]redis.Z, error) {
	if h.layout.Count() == 1 {
		var zs *redis.ZSliceCmd
		err := h.parts.Read(ctx, []int{0}, func(pipe redis.Pipeliner, _ events.Keys, gen events.GenKeys) {
			zs = pipe.ZRevRangeWithScores(ctx, gen.TopProducts(), 0, limit-1)
		})
		if err != nil {
			h.redisErrors.Inc()
			return nil, err
		}
		return zs.Result()
	}
	zs, err := topAcross(ctx, h.parts, limit)
	if err != nil {
		h.redisErrors.Inc()
	}
	return zs, err
}

// Pipeline is the state of the stream and its consumer groups. With several
// partitions, the top level adds them up (length, dead letters), names the streams
// by a pattern, and lists every partition's groups, each with its stream and
// partition; Partitions has each partition's own state. With one partition those
// fields are absent, and the answer is what it always was.
type Pipeline struct {
	Stream     string      `json:"stream"`
	Length     int64       `json:"length"`
	LastID     string      `json:"last_id"`
	Generation int64       `json:"generation"` // with several partitions, the lowest current one
	Groups     []Group     `json:"groups"`
	DeadLetter DeadLetters `json:"dead_letter"`
	Partitions []Partition `json:"partitions,omitempty"`

	entriesAdded int64 // entries ever added to the stream (every partition's), for the live events/s
}

// Group is one consumer group. Lag is the number of entries not yet delivered to the
// group (see lag.Of; -1 when it cannot be told); Pending, delivered but not yet acked
// (applied).
type Group struct {
	Name            string `json:"name"`
	Stream          string `json:"stream,omitempty"`    // with several partitions
	Partition       *int   `json:"partition,omitempty"` // with several partitions
	Pending         int64  `json:"pending"`
	Lag             int64  `json:"lag"`
	Consumers       int64  `json:"consumers"`
	LastDeliveredID string `json:"last_delivered_id"`
}

// Partition is the state of one partition's stream.
type Partition struct {
	Partition  int         `json:"partition"`
	Stream     string      `json:"stream"`
	Length     int64       `json:"length"`
	LastID     string      `json:"last_id"`
	Generation int64       `json:"generation"`
	Lag        int64       `json:"lag"` // of its current generation's group; -1 when unknown
	DeadLetter DeadLetters `json:"dead_letter"`
}

// DeadLetters is the dead-letter stream's name and length.
type DeadLetters struct {
	Stream string `json:"stream"`
	Length int64  `json:"length"`
}

func (h *handler) pipeline(c echo.Context) error {
	ctx, cancel := h.ctx(c)
	defer cancel()
	pipe := h.rdb.Pipeline()
	read := h.queuePipeline(ctx, pipe)
	p, err := read(pipe.Exec(ctx))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, p)
}

// queuePipeline queues the reads of the pipeline's state, every partition's, on pipe;
// the function it returns takes the error of pipe's Exec and builds the answer.
func (h *handler) queuePipeline(ctx context.Context, pipe redis.Pipeliner) func(cmds []redis.Cmder, err error) (Pipeline, error) {
	parts := h.layout.Partitions()
	infos := make([]*lag.Cmds, len(parts))
	dlens := make([]*redis.IntCmd, len(parts))
	ptrs := make([]*redis.StringCmd, len(parts))
	for i, k := range parts {
		infos[i] = lag.Queue(ctx, pipe, k.Stream())
		dlens[i] = pipe.XLen(ctx, k.DeadLetter())
		ptrs[i] = pipe.Get(ctx, k.Generation())
	}
	return func(_ []redis.Cmder, err error) (Pipeline, error) {
		var p Pipeline
		// Exec returns the first failed command's error; before the first event XINFO's
		// "no such key" and, with no pointer, GET's nil are not failures.
		if err != nil && !generations.IsNoStream(err) && !errors.Is(err, redis.Nil) {
			h.redisErrors.Inc()
			return p, err
		}
		for i, k := range parts {
			s, groups, err := infos[i].Result()
			if err != nil {
				h.redisErrors.Inc()
				return Pipeline{}, err
			}
			gen, err := generations.Current(ptrs[i])
			if err != nil {
				return Pipeline{}, err
			}
			part := Partition{Partition: i, Stream: k.Stream(), Length: s.Length, LastID: s.LastID, Generation: gen, Lag: 0,
				DeadLetter: DeadLetters{Stream: k.DeadLetter(), Length: dlens[i].Val()}}
			for _, g := range groups {
				grp := Group{Name: g.Name, Pending: g.Pending, Lag: lag.Of(s, g), Consumers: g.Consumers, LastDeliveredID: g.LastDeliveredID}
				if len(parts) > 1 {
					grp.Stream, grp.Partition = k.Stream(), &part.Partition
				}
				if g.Name == k.Gen(gen).Group() {
					part.Lag = grp.Lag
				}
				p.Groups = append(p.Groups, grp)
			}
			p.Partitions = append(p.Partitions, part)
			p.entriesAdded += s.EntriesAdded
		}
		if len(parts) == 1 {
			only := p.Partitions[0]
			p = Pipeline{Stream: only.Stream, Length: only.Length, LastID: only.LastID, Generation: only.Generation,
				Groups: p.Groups, DeadLetter: only.DeadLetter, entriesAdded: p.entriesAdded}
		} else {
			p.Stream = "{" + partitionPattern(h.layout) + "}:events"
			p.DeadLetter.Stream = "{" + partitionPattern(h.layout) + "}:deadletter"
			for _, part := range p.Partitions {
				p.Length += part.Length
				p.DeadLetter.Length += part.DeadLetter.Length
				if p.Generation == 0 || part.Generation < p.Generation {
					p.Generation = part.Generation
				}
				if part.LastID != "" && (p.LastID == "" || events.CompareIDs(part.LastID, p.LastID) > 0) {
					p.LastID = part.LastID
				}
			}
		}
		if p.Groups == nil {
			p.Groups = []Group{}
		}
		return p, nil
	}
}

// partitionPattern is a glob of every partition's tag, for /v1/pipeline's top level.
func partitionPattern(l events.Layout) string {
	return l.Namespace() + ":p*of" + strconv.Itoa(l.Count()) + ":*"
}
