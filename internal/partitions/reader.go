package partitions

import (
	"context"
	"errors"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/generations"
	"github.com/redis/go-redis/v9"
)

// Reader reads the current generation of one or more partitions in one round trip per
// Redis node, and follows each partition's generation pointer on its own: a rebuild
// switches the partitions one at a time, each atomically within its slot.
//
// Each partition's pointer is read after that partition's data, on the same connection
// (a node's commands run in the order they were sent), and the read is done again when
// a pointer names another generation than the data came from. Pointers only move
// forwards, from one complete generation to the next, so a pointer that still names the
// generation after the data was read means the data came whole from the generation that
// was current throughout. On a single Redis, or with one partition, the whole read is
// also one MULTI/EXEC, a single snapshot, as it always was; on a cluster the
// partitions of a read are not one snapshot (no command spans slots), but each is
// read from its current generation, so a sum over partitions never goes backwards
// across a rebuild: every partition's new generation has counted at least what the old
// one had when it was replaced.
type Reader struct {
	rdb    redis.UniversalClient
	layout events.Layout
	gens   []*generations.Follower
	tx     bool
}

// NewReader returns a Reader of l's partitions.
func NewReader(rdb redis.UniversalClient, l events.Layout) *Reader {
	_, isCluster := rdb.(*redis.ClusterClient)
	r := &Reader{rdb: rdb, layout: l, tx: l.Count() == 1 || !isCluster}
	for _, k := range l.Partitions() {
		r.gens = append(r.gens, generations.NewFollower(k))
	}
	return r
}

// Layout is the layout the Reader reads.
func (r *Reader) Layout() events.Layout { return r.layout }

// Current returns the generation last seen current in partition p.
func (r *Reader) Current(p int) events.GenKeys { return r.gens[p].Load() }

// All lists every partition, for Read.
func (r *Reader) All() []int {
	ps := make([]int, r.layout.Count())
	for i := range ps {
		ps[i] = i
	}
	return ps
}

// Read queues, through queue, the reads of partitions ps of their current
// generations, and runs them in one round trip per node. queue may be called again for
// a partition (a rebuild switched it meanwhile): only the commands of its last call
// hold the answer, so it must put them where a later call replaces them. The error is
// the round trip's (a missing key is not one), or generations.ErrPointerMoving.
func (r *Reader) Read(ctx context.Context, ps []int, queue func(pipe redis.Pipeliner, k events.Keys, gen events.GenKeys)) error {
	used := make([]events.GenKeys, len(ps))
	for i, p := range ps {
		used[i] = r.gens[p].Load()
	}
	for redo := 0; ; redo++ {
		var pipe redis.Pipeliner
		if r.tx {
			pipe = r.rdb.TxPipeline()
		} else {
			pipe = r.rdb.Pipeline()
		}
		ptrs := make([]*redis.StringCmd, len(ps))
		for i, p := range ps {
			k := r.layout.Partition(p)
			queue(pipe, k, used[i])
			ptrs[i] = pipe.Get(ctx, k.Generation())
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) { // Nil: a pointer is unset
			return err
		}
		moved := false
		for i, p := range ps {
			if err := ptrs[i].Err(); err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
			next, m, err := r.gens[p].Check(used[i], ptrs[i].Val())
			if err != nil {
				return err
			}
			if m {
				used[i], moved = next, true
			}
		}
		if !moved {
			return nil
		}
		if redo == generations.MaxRedo {
			return generations.ErrPointerMoving
		}
	}
}
