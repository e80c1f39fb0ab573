package events

import (
	"fmt"
	"strconv"
)

// Keys names every Redis key of one partition of the pipeline (see Layout; with one
// partition, the default, of the whole pipeline). All of them carry the partition's hash
// tag, {namespace} for the only partition, because the ingest and apply scripts touch
// the stream, the dedup markers and the aggregates in one call: on Redis Cluster they
// must live in one slot.
type Keys struct {
	tag       string // "{namespace}", or a partition's tag (see Layout)
	partition int
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

// Partition is the number of the partition these keys name, from 0.
func (k Keys) Partition() int { return k.partition }

// CountKey is the string that records the namespace's partition count, once a process
// with more than one partition has started on it; a namespace without it has one.
func (l Layout) CountKey() string { return "{" + l.namespace + "}:partitions" }

// PartitionTag is the hash tag (without its braces) of partition p of n in namespace:
// the namespace itself for a single partition; otherwise namespace:p<p>of<n>:<salt>,
// with the smallest salt that puts the tag's slot (Slot) in the middle half of
// partition p's even share of the slots, [p·16384/n, (p+1)·16384/n). A cluster whose
// masters hold even shares of the slots, as redis-cli --cluster create makes them, thus
// holds n/masters partitions on each master, and no partition sits on the edge of a
// share where a rounding of the split could move it. A namespace cannot contain ':', so
// no tag of a partitioned layout is also a namespace's.
func PartitionTag(namespace string, p, n int) string {
	if n <= 1 {
		return namespace
	}
	lo, hi := p*SlotCount/n, (p+1)*SlotCount/n
	q := (hi - lo) / 4
	base := namespace + ":p" + strconv.Itoa(p) + "of" + strconv.Itoa(n) + ":"
	for salt := 0; ; salt++ {
		tag := base + strconv.Itoa(salt)
		if s := int(crc16(tag) % SlotCount); s >= lo+q && s < hi-q {
			return tag
		}
	}
}

// Stream is the event stream: the source of truth every count is derived from.
func (k Keys) Stream() string { return k.tag + ":events" }

// DeadLetter is the watermill topic (a Redis stream) that receives entries the
// processor could not decode.
func (k Keys) DeadLetter() string { return k.tag + ":deadletter" }

// Marker is the key that remembers an event_id for the dedup window.
func (k Keys) Marker(eventID string) string { return k.tag + ":seen:" + eventID }

// WaitFence is a key ingest writes, with WRITE_REPLICAS, before it waits for replicas
// after a flush that found duplicates, so that the wait also covers the first copies,
// written by other connections (see ingest's flush).
func (k Keys) WaitFence() string { return k.tag + ":fence" }

// Generation is the pointer to the generation of aggregates that queries read and
// processors write. A missing pointer means generation 1.
func (k Keys) Generation() string { return k.tag + ":generation" }

// ParseGeneration reads a value of the Generation pointer; "" (no pointer) is
// generation 1.
func ParseGeneration(v string) (int64, error) {
	if v == "" {
		return 1, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("generation pointer holds %q, want a positive integer", v)
	}
	return n, nil
}

// Gen returns the key names of one generation of aggregates.
func (k Keys) Gen(gen int64) GenKeys {
	g := strconv.FormatInt(gen, 10)
	return GenKeys{
		Number: gen,
		prefix: k.tag + ":g" + g + ":",
		group:  "aggregator-g" + g,
	}
}

// Pause, while it exists, tells processors to start no new read. A rebuild sets it,
// with a short expiry, for the moment of its switch, so that the current generation
// stops moving while the new one passes it; a rebuild that dies cannot hold processing
// up for longer than the expiry.
func (k Keys) Pause() string { return k.tag + ":pause" }

// RebuildLock is held by the one rebuild that may run (SET NX with an expiry that the
// holder keeps refreshing); its value names the holder.
func (k Keys) RebuildLock() string { return k.tag + ":rebuild:lock" }

// RebuildState is the hash in which a rebuild records its progress (the Rebuild*
// fields), so that a re-run can resume it and queryapi can report it.
func (k Keys) RebuildState() string { return k.tag + ":rebuild" }

// RetentionLock is held by the one processor that trims the stream at a time.
func (k Keys) RetentionLock() string { return k.tag + ":retention:lock" }

// Checkpoint names the counts folded from the entries that retention trimmed from the
// stream. It has a generation's shape (user and product hashes, top products) and no
// consumer group: a rebuild copies it into its new generation, then replays the
// stream after CheckpointInfo's position.
func (k Keys) Checkpoint() GenKeys {
	return GenKeys{prefix: k.tag + ":ckpt:"}
}

// CheckpointInfo is the hash that records the checkpoint's position (the id of the
// last entry folded into it) and how many entries it holds (the Checkpoint* fields).
func (k Keys) CheckpointInfo() string { return k.tag + ":ckpt" }

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

// Product is the hash of one product's counters, except clicks: a product's clicks are
// its score in TopProducts, kept once so that the apply does one write for them, not two.
func (g GenKeys) Product(id string) string { return g.prefix + "p:" + id }

// TopProducts is the sorted set of product ids scored by clicks.
func (g GenKeys) TopProducts() string { return g.prefix + "top" }

// Stats is the hash of global counters (FieldEvents and the four counter fields) of
// one time bucket.
func (g GenKeys) Stats(b Bucket) string { return g.prefix + "s:" + b.suffix() }

// Uniques is the HyperLogLog of the user ids seen in one time bucket. The unique users
// of a range are the union of its buckets' HyperLogLogs (one PFCOUNT over all of them),
// never a sum of per-bucket counts.
func (g GenKeys) Uniques(b Bucket) string { return g.prefix + "uu:" + b.suffix() }

// ProductStats is the hash of one product's dwell counters in one time bucket (hour or
// day). Its clicks and page views are its scores in TopClicks and TopViews, kept once.
func (g GenKeys) ProductStats(b Bucket, productID string) string {
	return g.prefix + "sp:" + b.suffix() + ":" + productID
}

// TopClicks is the sorted set of product ids scored by clicks within one time bucket
// (hour or day); the top products of a range are the union of its buckets' rankings.
func (g GenKeys) TopClicks(b Bucket) string { return g.prefix + "tc:" + b.suffix() }

// TopViews is TopClicks for page views.
func (g GenKeys) TopViews(b Bucket) string { return g.prefix + "tv:" + b.suffix() }

// Active is the sorted set of user ids scored by the time (Unix ms) of their latest
// event: the users seen in the last N minutes are one ZCOUNT. Members older than an
// hour are trimmed.
func (g GenKeys) Active() string { return g.prefix + "active" }

// Prefix is the start of every key of the generation.
func (g GenKeys) Prefix() string { return g.prefix }

// Pattern matches every key of the generation, for SCAN MATCH in admin commands (never
// on a request path).
func (g GenKeys) Pattern() string { return g.prefix + "*" }

// Counter fields of the user and product hashes.
const (
	FieldEvents     = "events" // time buckets only: events of every type
	FieldClicks     = "clicks"
	FieldPageViews  = "page_views"
	FieldDwellMs    = "dwell_ms"
	FieldDwellCount = "dwell_count"
)

// Fields of the RebuildState hash.
const (
	RebuildFieldState   = "state"      // building, switching, cleanup, done, failed or cancelled
	RebuildFieldTarget  = "generation" // the generation being built
	RebuildFieldFrom    = "from_generation"
	RebuildFieldSeeded  = "seeded" // "1" once the checkpoint is copied and the group created
	RebuildFieldApplied = "applied"
	RebuildFieldLength  = "stream_length"
	RebuildFieldRate    = "rate" // entries applied per second
	RebuildFieldETA     = "eta_seconds"
	RebuildFieldStarted = "started_at" // RFC 3339
	RebuildFieldUpdated = "updated_at" // RFC 3339
	RebuildFieldError   = "error"
	RebuildFieldCancel  = "cancel_requested"
)

// States of a rebuild, in RebuildFieldState.
const (
	RebuildStateBuilding  = "building"
	RebuildStateSwitching = "switching"
	RebuildStateCleanup   = "cleanup"
	RebuildStateDone      = "done"
	RebuildStateFailed    = "failed"
	RebuildStateCancelled = "cancelled"
)

// Fields of the CheckpointInfo hash.
const (
	CheckpointFieldPosition = "position" // id of the last entry folded in
	CheckpointFieldEntries  = "entries"  // entries folded in so far
)

// ClaimEpoch is a counter bumped by every claim of pending entries in this generation's
// group (processors claim through a script that bumps it). Between two bumps no entry
// changes owner, which lets the apply script skip its per-entry ownership check for a
// batch read since the last bump. Anyone who moves pending entries between consumers
// by hand (XCLAIM) must INCR this key too.
func (g GenKeys) ClaimEpoch() string { return g.prefix + "claims" }
