// Package workload is the traffic that the fault tests and the soak program send
// through the pipeline, and the answer they check it against: events that all carry an
// event_id, posted to ingest in batches and retried until they get a 202; the totals
// those 202 answers imply; and an exact comparison of every user's and product's
// counters in queryapi with those totals.
//
// Because every event has an event_id, a retry after a 503, a reset connection or a
// timeout is exact (ingest stores the event once), and an event counts once in the
// expected totals however many times it was accepted.
package workload

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
)

// Event is an event as a client posts it. Source always sets EventID; an event built
// without one is posted without the field, and ingest stores it each time it accepts it.
type Event struct {
	UserID     string `json:"user_id"`
	ProductID  string `json:"product_id"`
	Type       string `json:"type"`
	DurationMs int64  `json:"duration_ms,omitempty"`
	EventID    string `json:"event_id,omitempty"`
}

// Source generates events for a fixed set of users and products. It is not safe for
// concurrent use.
type Source struct {
	rng      *rand.Rand
	prefix   string // of event ids, so that runs sharing a namespace never collide
	users    int
	products int
	next     int
}

// NewSource returns a deterministic source for seed. Event ids are prefix + a number.
func NewSource(seed uint64, prefix string, users, products int) *Source {
	return &Source{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), prefix: prefix, users: users, products: products}
}

// UserID and ProductID name the i-th user and product.
func UserID(i int) string    { return fmt.Sprintf("user-%04d", i) }
func ProductID(i int) string { return fmt.Sprintf("prod-%03d", i) }

// UserIDs are every user the source may name, whether or not it has yet.
func (s *Source) UserIDs() []string { return ids(s.users, UserID) }

// ProductIDs are every product the source may name.
func (s *Source) ProductIDs() []string { return ids(s.products, ProductID) }

func ids(n int, name func(int) string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = name(i)
	}
	return out
}

// Next returns a new event, drawn as Random draws it, with the next event_id.
func (s *Source) Next() Event {
	ev := Random(s.rng, s.users, s.products)
	ev.EventID = fmt.Sprintf("%s%08d", s.prefix, s.next)
	s.next++
	return ev
}

// Random returns an event without event_id, drawn from rng, for one of the first users
// users and products products: half clicks, a third page views, the rest dwells of up
// to two minutes; products skewed so that a few get most of the traffic.
func Random(rng *rand.Rand, users, products int) Event {
	ev := Event{
		UserID:    UserID(rng.IntN(users)),
		ProductID: ProductID(int(float64(products) * math.Pow(rng.Float64(), 2))),
	}
	switch r := rng.Float64(); {
	case r < 0.5:
		ev.Type = "click"
	case r < 0.85:
		ev.Type = "page_view"
	default:
		ev.Type = "dwell"
		ev.DurationMs = 1 + rng.Int64N(120_000)
	}
	return ev
}

// Batch returns n new events.
func (s *Source) Batch(n int) []Event {
	evs := make([]Event, n)
	for i := range evs {
		evs[i] = s.Next()
	}
	return evs
}

// Batches returns events in batches of lo to hi events each (both inclusive; the last
// batch may be smaller).
func (s *Source) Batches(events, lo, hi int) [][]Event {
	var out [][]Event
	for events > 0 {
		n := min(events, lo+s.rng.IntN(hi-lo+1))
		out = append(out, s.Batch(n))
		events -= n
	}
	return out
}

// Body encodes a batch as a JSON array, or as NDJSON (one object per line).
func Body(evs []Event, ndjson bool) (contentType string, body []byte) {
	var buf bytes.Buffer
	if ndjson {
		enc := json.NewEncoder(&buf)
		for i := range evs {
			enc.Encode(&evs[i])
		}
		return "application/x-ndjson", buf.Bytes()
	}
	b, _ := json.Marshal(evs)
	return "application/json", b
}

// Counters are one user's or product's totals, in queryapi's JSON shape.
type Counters struct {
	UserID     string `json:"user_id,omitempty"`
	ProductID  string `json:"product_id,omitempty"`
	Clicks     int64  `json:"clicks"`
	PageViews  int64  `json:"page_views"`
	DwellMs    int64  `json:"dwell_ms"`
	DwellCount int64  `json:"dwell_count"`
}

func (c *Counters) count(ev *Event) {
	switch ev.Type {
	case "click":
		c.Clicks++
	case "page_view":
		c.PageViews++
	case "dwell":
		c.DwellMs += ev.DurationMs
		c.DwellCount++
	}
}

func (c *Counters) add(o Counters) {
	c.Clicks += o.Clicks
	c.PageViews += o.PageViews
	c.DwellMs += o.DwellMs
	c.DwellCount += o.DwellCount
}

// Expected are the totals the 202 answers imply: the events of every request that got
// a 202 count, each event_id once, and an event without event_id each time, as ingest
// stores it. It is safe for concurrent use.
type Expected struct {
	mu        sync.Mutex
	seen      map[string]bool
	anonymous int // events without event_id accepted, each time counted
	users     map[string]Counters
	products  map[string]Counters
}

// NewExpected returns empty totals.
func NewExpected() *Expected {
	return &Expected{seen: map[string]bool{}, users: map[string]Counters{}, products: map[string]Counters{}}
}

// Add counts the events of a request that got a 202.
func (e *Expected) Add(evs []Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := range evs {
		ev := &evs[i]
		switch {
		case ev.EventID == "":
			e.anonymous++
		case e.seen[ev.EventID]:
			continue
		default:
			e.seen[ev.EventID] = true
		}
		u, p := e.users[ev.UserID], e.products[ev.ProductID]
		u.count(ev)
		p.count(ev)
		e.users[ev.UserID], e.products[ev.ProductID] = u, p
	}
}

// Distinct is the number of events accepted, each event_id once: the stream length to
// expect.
func (e *Expected) Distinct() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.seen) + e.anonymous
}

// EventIDs returns every event_id accepted.
func (e *Expected) EventIDs() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	ids := make([]string, 0, len(e.seen))
	for id := range e.seen {
		ids = append(ids, id)
	}
	return ids
}

// activeUsers is the number of users with at least one event.
func (e *Expected) activeUsers() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.users)
}

// User and Product are the expected counters of one user or product, id included.
func (e *Expected) User(id string) Counters {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.users[id]
	c.UserID = id
	return c
}

func (e *Expected) Product(id string) Counters {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.products[id]
	c.ProductID = id
	return c
}

// ids returns every user and product id that has expected counts.
func (e *Expected) ids() (users, products []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for id := range e.users {
		users = append(users, id)
	}
	for id := range e.products {
		products = append(products, id)
	}
	return users, products
}
