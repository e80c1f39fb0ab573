package events

import "strconv"

// Keys names every Redis key the pipeline uses. All of them carry the same hash tag,
// {namespace}, because the ingest and apply scripts touch the stream, the dedup markers
// and the aggregates in one call: on Redis Cluster they must live in one slot.
type Keys struct {
	tag string // "{namespace}"
}

// DefaultNamespace is the namespace used when none is configured.
const DefaultNamespace = "cs"

// NewKeys returns the key names for a namespace. Several pipelines can share one Redis
// by using different namespaces (the tests do this).
func NewKeys(namespace string) Keys {
	if namespace == "" {
		namespace = DefaultNamespace
	}
	return Keys{tag: "{" + namespace + "}"}
}

// Stream is the event stream: the source of truth every count is derived from.
func (k Keys) Stream() string { return k.tag + ":events" }

// DeadLetter is the watermill topic (a Redis stream) that receives entries the
// processor could not decode.
func (k Keys) DeadLetter() string { return k.tag + ":deadletter" }

// MarkerPrefix is the prefix of the edge-dedup markers; Marker(id) = MarkerPrefix()+id.
func (k Keys) MarkerPrefix() string { return k.tag + ":seen:" }

// Marker is the key that remembers an event_id for the dedup window.
func (k Keys) Marker(eventID string) string { return k.tag + ":seen:" + eventID }

// Generation is the pointer to the generation of aggregates that queries read and
// processors write. A missing pointer means generation 1.
func (k Keys) Generation() string { return k.tag + ":generation" }

// Gen returns the key names of one generation of aggregates.
func (k Keys) Gen(gen int64) GenKeys {
	g := strconv.FormatInt(gen, 10)
	return GenKeys{
		Number: gen,
		prefix: k.tag + ":g" + g + ":",
		group:  "aggregator-g" + g,
	}
}

// GenKeys names the aggregates and the consumer group of one generation.
type GenKeys struct {
	Number int64
	prefix string
	group  string
}

// Group is the consumer group whose members apply events to this generation.
func (g GenKeys) Group() string { return g.group }

// UserPrefix is the prefix of per-user hashes; User(id) = UserPrefix()+id.
func (g GenKeys) UserPrefix() string { return g.prefix + "u:" }

// User is the hash of one user's counters.
func (g GenKeys) User(id string) string { return g.prefix + "u:" + id }

// ProductPrefix is the prefix of per-product hashes.
func (g GenKeys) ProductPrefix() string { return g.prefix + "p:" }

// Product is the hash of one product's counters.
func (g GenKeys) Product(id string) string { return g.prefix + "p:" + id }

// TopProducts is the sorted set of product ids scored by clicks.
func (g GenKeys) TopProducts() string { return g.prefix + "top" }

// Counter fields of the user and product hashes.
const (
	FieldClicks     = "clicks"
	FieldPageViews  = "page_views"
	FieldDwellMs    = "dwell_ms"
	FieldDwellCount = "dwell_count"
)
