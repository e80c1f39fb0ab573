package main

import "github.com/clickstream/pipeline/events"

// totals are the four counters of a user, a product, or a whole window of events.
type totals struct {
	Clicks, PageViews, DwellMs, DwellCount int64
}

func (t *totals) add(e *events.Event) {
	switch e.Type {
	case events.Click:
		t.Clicks++
	case events.PageView:
		t.PageViews++
	case events.Dwell:
		t.DwellMs += e.DurationMs
		t.DwellCount++
	}
}

// tally sums events per aggregate key of one namespace, with the same result as the
// Applier: a hash field only for a counter that is not zero, a top-products member only
// for a product with clicks. The checkpoint is built with it, and a rebuild's replay
// must match the checkpoint key for key.
type tally struct {
	ns      events.GenKeys
	index   map[string]int // key -> index into keys and sums
	keys    []string
	sums    []totals
	product []bool           // keys[i] is a product's: its clicks go to the ranking only
	top     map[string]int64 // product id -> clicks
}

func newTally(ns events.GenKeys) *tally {
	return &tally{ns: ns, index: map[string]int{}, top: map[string]int64{}}
}

func (t *tally) add(e *events.Event) {
	for j, key := range [2]string{t.ns.User(e.UserID), t.ns.Product(e.ProductID)} {
		i, ok := t.index[key]
		if !ok {
			i = len(t.keys)
			t.index[key] = i
			t.keys = append(t.keys, key)
			t.sums = append(t.sums, totals{})
			t.product = append(t.product, j == 1)
		}
		t.sums[i].add(e)
	}
	if e.Type == events.Click {
		t.top[e.ProductID]++
	}
}

// appendArgs appends the increments as script arguments: triples (key index, field,
// amount), where key index is firstKey plus the key's position in t.keys, then "top",
// then pairs (clicks, product id).
func (t *tally) appendArgs(argv []any, firstKey int) []any {
	for i, s := range t.sums {
		if t.product[i] {
			s.Clicks = 0 // counted in the ranking below
		}
		for _, f := range [...]struct {
			name string
			n    int64
		}{{events.FieldClicks, s.Clicks}, {events.FieldPageViews, s.PageViews}, {events.FieldDwellMs, s.DwellMs}, {events.FieldDwellCount, s.DwellCount}} {
			if f.n != 0 {
				argv = append(argv, firstKey+i, f.name, f.n)
			}
		}
	}
	argv = append(argv, "top")
	for id, n := range t.top {
		argv = append(argv, n, id)
	}
	return argv
}
