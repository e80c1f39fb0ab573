// Package lag tells how many entries of a stream a consumer group has yet to be
// delivered, from what XINFO STREAM and XINFO GROUPS report, and stays right where
// Redis's own number does not.
//
// Redis computes a group's lag as entries-added minus the group's entries-read counter.
// Redis 7.0 loses that counter in a restart from the AOF (redis/redis#10569): a group's
// reads are written to the AOF as XCLAIM … LASTID, which moves the group's position but
// not its counter, so after a restart the counter is the one of the last AOF rewrite
// (or unknown), and XINFO GROUPS reports a lag that stays wrong, by every entry read
// since that rewrite, however caught up the group is. Every place that shows or acts on
// a lag (ingest's MAX_LAG, /v1/pipeline, consumer_group_lag, a rebuild's progress)
// goes through Of, and the processors put the counter right with Repair.
package lag

import (
	"context"
	"errors"
	"fmt"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/generations"
	"github.com/redis/go-redis/v9"
)

// Stream is the part of XINFO STREAM that a lag depends on.
type Stream struct {
	Length       int64
	FirstID      string // the oldest entry the stream holds; "" when it holds none
	LastID       string // last-generated-id: the newest entry ever added, even if deleted since
	EntriesAdded int64  // entries ever added
}

// Group is what XINFO GROUPS says about one consumer group. Redis reports entries-read
// and lag as nil when it cannot tell them; they are -1 here then.
type Group struct {
	Name            string
	Consumers       int64
	Pending         int64
	LastDeliveredID string
	EntriesRead     int64 // Redis's counter of entries delivered to the group; -1: unknown
	RedisLag        int64 // XINFO GROUPS's lag; -1: unknown
}

// Of returns how many entries of s have not been delivered to g, or -1 when that
// cannot be told. It never trusts Redis's number where the ids tell the answer:
//
//   - the group has been delivered the newest entry ever added: 0, exactly;
//   - the stream is empty: 0;
//   - the group's position is before the oldest entry the stream holds: every entry
//     is undelivered, the stream's length, exactly;
//   - otherwise the group is somewhere inside the stream, and the oldest entry at
//     least is delivered: Redis's lag (or, where Redis gives none but knows the
//     counter, entries-added minus entries-read), capped at length-1.
//
// In the last case Redis's number can only be too high, never too low: a counter lost
// in a restart is behind (it misses the reads since the last AOF rewrite), and an entry
// deleted after the group's position is still counted as added. It is exact again once
// Repair has run. Counting the entries after the position instead would cost a walk
// of the stream, O(lag), on every check; a bound that errs on the side of "behind" and
// is repaired at the next moment the group is caught up is the cheap and safe choice.
// Unknown (-1) remains only when Redis knows neither lag nor counter: the group has
// not read since an entry after its position was deleted.
func Of(s Stream, g Group) int64 {
	if s.LastID == "" || events.CompareIDs(g.LastDeliveredID, s.LastID) >= 0 || s.Length == 0 {
		return 0
	}
	if events.CompareIDs(g.LastDeliveredID, s.FirstID) < 0 {
		return s.Length
	}
	bound := g.RedisLag
	if bound < 0 && g.EntriesRead >= 0 {
		bound = s.EntriesAdded - g.EntriesRead
	}
	if bound < 0 {
		return -1
	}
	return min(bound, s.Length-1)
}

// Repairable reports that Redis's counter of g is wrong (or unknown) at a moment when
// its right value is known: the group has been delivered the newest entry, so it has
// read every entry ever added. Repair sets it.
func Repairable(s Stream, g Group) bool {
	return s.LastID != "" && g.LastDeliveredID == s.LastID && g.EntriesRead != s.EntriesAdded
}

// Cmds are the two XINFO calls Queue added to a pipeline.
type Cmds struct {
	stream *redis.XInfoStreamCmd
	groups *redis.Cmd
}

// Queue adds XINFO STREAM and XINFO GROUPS of stream to pipe, so that a caller reads
// them in the same round trip as whatever else it needs; Result reads them after Exec.
func Queue(ctx context.Context, pipe redis.Pipeliner, stream string) *Cmds {
	return &Cmds{stream: pipe.XInfoStream(ctx, stream), groups: pipe.Do(ctx, "XINFO", "GROUPS", stream)}
}

// Result returns the stream and its groups. A stream that does not exist yet (no
// event so far) is an empty stream without groups, not an error.
func (c *Cmds) Result() (Stream, []Group, error) {
	if err := c.stream.Err(); err != nil {
		if generations.IsNoStream(err) {
			return Stream{}, nil, nil
		}
		return Stream{}, nil, fmt.Errorf("XINFO STREAM: %w", err)
	}
	info := c.stream.Val()
	if info == nil { // the pipeline failed before it was sent
		return Stream{}, nil, errors.New("XINFO STREAM: no reply")
	}
	s := Stream{Length: info.Length, FirstID: info.FirstEntry.ID, LastID: info.LastGeneratedID, EntriesAdded: info.EntriesAdded}
	if s.Length == 0 {
		s.FirstID = ""
	}
	if err := c.groups.Err(); err != nil {
		if generations.IsNoStream(err) { // deleted between the two calls
			return Stream{}, nil, nil
		}
		return Stream{}, nil, fmt.Errorf("XINFO GROUPS: %w", err)
	}
	groups, err := parseGroups(c.groups.Val())
	return s, groups, err
}

// Read reads the stream and its groups in one round trip.
func Read(ctx context.Context, rdb redis.UniversalClient, stream string) (Stream, []Group, error) {
	pipe := rdb.Pipeline()
	c := Queue(ctx, pipe, stream)
	if _, err := pipe.Exec(ctx); err != nil && !generations.IsNoStream(err) {
		return Stream{}, nil, err
	}
	return c.Result()
}

// parseGroups reads XINFO GROUPS raw: go-redis turns a nil entries-read into 0, which
// would make a group whose counter Redis lost look like one that never read anything.
func parseGroups(v any) ([]Group, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("XINFO GROUPS: unexpected reply %T", v)
	}
	groups := make([]Group, 0, len(list))
	for _, raw := range list {
		fields := map[any]any{}
		switch f := raw.(type) {
		case []any: // RESP2, which config.Reader.Redis selects
			for i := 0; i+1 < len(f); i += 2 {
				fields[f[i]] = f[i+1]
			}
		case map[any]any: // RESP3
			fields = f
		default:
			return nil, fmt.Errorf("XINFO GROUPS: unexpected group %T", raw)
		}
		g := Group{EntriesRead: -1, RedisLag: -1}
		g.Name, _ = fields["name"].(string)
		g.LastDeliveredID, _ = fields["last-delivered-id"].(string)
		g.Consumers, _ = fields["consumers"].(int64)
		g.Pending, _ = fields["pending"].(int64)
		if n, ok := fields["entries-read"].(int64); ok {
			g.EntriesRead = n
		}
		if n, ok := fields["lag"].(int64); ok {
			g.RedisLag = n
		}
		groups = append(groups, g)
	}
	return groups, nil
}
