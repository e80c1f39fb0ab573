package aggregate

import "github.com/clickstream/pipeline/events"

// Increments sums the increments of a batch of events per key of one namespace of
// aggregates (a generation, or the checkpoint), and encodes the sums as script
// arguments. A user's counters go to its hash; a product's go to its hash, except its
// clicks, which are only its score in the ranking (see events.GenKeys.Product). A hash
// field is written only for a counter that is not zero, and the ranking only for a
// product with clicks.
//
// An Increments is used by one goroutine at a time; Reset lets it be reused for the
// next batch without allocating again.
type Increments struct {
	ns              events.GenKeys
	users, products map[string]int32 // id -> index into sums
	sums            []sum
	keys            []string // keys[0] is the ranking; keys[i+1] is sums[i]'s hash
}

type sum struct {
	Totals
	product bool // the hash is a product's: its clicks go to the ranking
}

// NewIncrements returns empty increments of the namespace ns.
func NewIncrements(ns events.GenKeys) *Increments {
	return &Increments{ns: ns, users: map[string]int32{}, products: map[string]int32{},
		keys: []string{ns.TopProducts()}}
}

// Reset empties the increments, keeping their memory.
func (in *Increments) Reset() {
	clear(in.users)
	clear(in.products)
	in.sums = in.sums[:0]
	in.keys = in.keys[:1]
}

// Add adds one event's increments.
func (in *Increments) Add(e *events.Event) {
	in.sums[in.slot(in.users, e.UserID, false)].Add(e)
	in.sums[in.slot(in.products, e.ProductID, true)].Add(e)
}

// slot returns the index in sums of the hash of a user or product, adding it when the
// batch has not named it yet: a key's name is built once per batch, not per event.
func (in *Increments) slot(index map[string]int32, id string, product bool) int32 {
	if i, ok := index[id]; ok {
		return i
	}
	i := int32(len(in.sums))
	index[id] = i
	in.sums = append(in.sums, sum{product: product})
	if product {
		in.keys = append(in.keys, in.ns.Product(id))
	} else {
		in.keys = append(in.keys, in.ns.User(id))
	}
	return i
}

// Keys are the keys the arguments of AppendArgs name, in order: pass them to the
// script as KEYS from the index given to AppendArgs. They are valid until Reset.
func (in *Increments) Keys() []string { return in.keys }

// fieldArgs are the hash fields in the order of fieldValues, boxed once for argv.
var fieldArgs = [...]any{events.FieldClicks, events.FieldPageViews, events.FieldDwellMs, events.FieldDwellCount}

// Operations of the encoding, boxed once for argv.
var (
	opHincrby any = "HINCRBY"
	opZincrby any = "ZINCRBY"
)

// AppendArgs appends the increments to argv in the encoding that apply_increments
// reads (see the package comment); they must be the script's last arguments.
// firstKey is the index in the script's KEYS of Keys()[0].
func (in *Increments) AppendArgs(argv []any, firstKey int) []any {
	// The hashes: one group per hash with a counter that is not zero.
	argv = append(argv, opHincrby, 0)
	section, groups := len(argv)-2, 0
	for i := range in.sums {
		s := &in.sums[i]
		clicks := s.Clicks
		if s.product {
			clicks = 0 // counted in the ranking below
		}
		group := len(argv)
		argv = append(argv, firstKey+1+i, 0)
		m := 0
		for f, n := range [...]int64{clicks, s.PageViews, s.DwellMs, s.DwellCount} {
			if n != 0 {
				argv = append(argv, fieldArgs[f], n)
				m++
			}
		}
		if m == 0 {
			argv = argv[:group]
			continue
		}
		argv[group+1] = m
		groups++
	}
	if groups == 0 {
		argv = argv[:section]
	} else {
		argv[section+1] = groups
	}

	// The ranking: one group, the products with clicks.
	argv = append(argv, opZincrby, 1, firstKey, 0)
	section, m := len(argv)-4, 0
	for id, i := range in.products {
		if n := in.sums[i].Clicks; n != 0 {
			argv = append(argv, n, id)
			m++
		}
	}
	if m == 0 {
		argv = argv[:section]
	} else {
		argv[section+3] = m
	}
	return argv
}
