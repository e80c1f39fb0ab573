package main

import (
	"context"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/partitions"
	"github.com/redis/go-redis/v9"
)

// topAcross returns the exact all-time top k products when their clicks are partial
// sums over partitions (each partition's ranking counts its own users' clicks), with
// TPUT, the three-phase uniform threshold algorithm (Cao and Wang, 2004), each phase one
// pipelined round trip per node:
//
//  1. every partition's top k. Summing what came back gives each product seen a lower
//     bound on its total; τ1 is the k-th highest of those bounds, so the true k-th
//     total is at least τ1.
//  2. from every partition, each product with at least m = ⌈τ1/P⌉ clicks. A product
//     that reaches τ1 in total must reach τ1/P in some partition, so every product
//     that can be in the top k is seen now. A product's total is at least the sum of
//     its scores seen so far, and at most that plus m−1 for each partition it was not
//     seen in; τ2 is the k-th highest lower bound. Only products whose upper bound
//     reaches τ2 can be in the top k: every other product's total is below the k-th.
//  3. the exact clicks of those candidates from every partition (ZMSCORE), whence the
//     top k, ties ordered as ZREVRANGE orders them (by id, descending).
//
// Why TPUT: it is exact, its rounds are bounded (three) whatever the data, and each
// moves little: k entries, then those above a threshold that the skew of real traffic
// makes high, then a few candidates. The alternatives are worse here: reading every
// partition's whole ranking is exact but moves every product on every request; one
// global ranking cannot be kept by the apply, whose script may touch its partition's
// slot only; Fagin's threshold algorithm needs a round trip per step. Under concurrent
// applies the phases see counts a few milliseconds apart, as any read of several
// partitions does; with no applies in between, the answer is exact.
func topAcross(ctx context.Context, parts *partitions.Reader, k int64) ([]redis.Z, error) {
	l := parts.Layout()
	n := l.Count()
	all := parts.All()
	known := make([]map[string]int64, n) // per partition: the product scores seen
	for p := range known {
		known[p] = map[string]int64{}
	}
	record := func(p int, zs []redis.Z) {
		for _, z := range zs {
			known[p][z.Member.(string)] = int64(math.Round(z.Score))
		}
	}
	sums := func() map[string]int64 {
		s := map[string]int64{}
		for p := range known {
			for id, c := range known[p] {
				s[id] += c
			}
		}
		return s
	}

	// Phase 1.
	first := make([]*redis.ZSliceCmd, n)
	if err := parts.Read(ctx, all, func(pipe redis.Pipeliner, keys events.Keys, gen events.GenKeys) {
		first[keys.Partition()] = pipe.ZRevRangeWithScores(ctx, gen.TopProducts(), 0, k-1)
	}); err != nil {
		return nil, err
	}
	complete := true // every partition returned all it holds
	for p, c := range first {
		zs, err := c.Result()
		if err != nil {
			return nil, err
		}
		record(p, zs)
		complete = complete && int64(len(zs)) < k
	}
	if complete {
		return ranked(sums(), nil, k), nil
	}

	// Phase 2.
	tau1 := kth(sums(), k)
	m := max((tau1+int64(n)-1)/int64(n), 1)
	second := make([]*redis.ZSliceCmd, n)
	if err := parts.Read(ctx, all, func(pipe redis.Pipeliner, keys events.Keys, gen events.GenKeys) {
		second[keys.Partition()] = pipe.ZRevRangeByScoreWithScores(ctx, gen.TopProducts(),
			&redis.ZRangeBy{Max: "+inf", Min: strconv.FormatInt(m, 10)})
	}); err != nil {
		return nil, err
	}
	for p, c := range second {
		zs, err := c.Result()
		if err != nil {
			return nil, err
		}
		record(p, zs)
	}
	lower := sums()
	tau2 := kth(lower, k)
	var candidates []string
	for id, lo := range lower {
		hi := lo
		for p := range known {
			if _, ok := known[p][id]; !ok {
				hi += m - 1
			}
		}
		if hi >= tau2 {
			candidates = append(candidates, id)
		}
	}
	slices.Sort(candidates)

	// Phase 3: only for candidates some partition has not told yet.
	var unsure []string
	for _, id := range candidates {
		for p := range known {
			if _, ok := known[p][id]; !ok {
				unsure = append(unsure, id)
				break
			}
		}
	}
	if len(unsure) > 0 {
		third := make([]*redis.FloatSliceCmd, n)
		if err := parts.Read(ctx, all, func(pipe redis.Pipeliner, keys events.Keys, gen events.GenKeys) {
			third[keys.Partition()] = pipe.ZMScore(ctx, gen.TopProducts(), unsure...)
		}); err != nil {
			return nil, err
		}
		for p, c := range third {
			scores, err := c.Result()
			if err != nil {
				return nil, err
			}
			for i, id := range unsure {
				known[p][id] = int64(math.Round(scores[i])) // a member not there scores 0
			}
		}
	}
	exact := sums()
	return ranked(exact, candidates, k), nil
}

// kth returns the k-th highest value of sums, or 0 when there are fewer than k.
func kth(sums map[string]int64, k int64) int64 {
	if int64(len(sums)) < k {
		return 0
	}
	vals := make([]int64, 0, len(sums))
	for _, v := range sums {
		vals = append(vals, v)
	}
	slices.SortFunc(vals, func(a, b int64) int { return int(min(max(b-a, -1), 1)) })
	return vals[k-1]
}

// ranked returns the top k of totals (only of ids, when given), most first, ties by
// id descending, as ZREVRANGE orders members of equal score.
func ranked(totals map[string]int64, ids []string, k int64) []redis.Z {
	if ids == nil {
		for id := range totals {
			ids = append(ids, id)
		}
	}
	zs := make([]redis.Z, 0, len(ids))
	for _, id := range ids {
		if c := totals[id]; c > 0 {
			zs = append(zs, redis.Z{Member: id, Score: float64(c)})
		}
	}
	slices.SortFunc(zs, func(a, b redis.Z) int {
		if a.Score != b.Score {
			if a.Score > b.Score {
				return -1
			}
			return 1
		}
		return -strings.Compare(a.Member.(string), b.Member.(string))
	})
	return zs[:min(int64(len(zs)), k)]
}
