package events

import "hash/crc32"

// MaxPartitions bounds STREAM_PARTITIONS: enough to spread a stream over hundreds of
// masters, few enough that every partition's slot can lie well inside its share of the
// slots (see Layout).
const MaxPartitions = 1024

// Layout is how a namespace's events are split into partitions (STREAM_PARTITIONS):
// each partition is a stream with its own dedup markers, consumer groups, generation
// pointer and aggregates, all under one hash tag, so that on Redis Cluster a partition
// lives in one slot and every script touches one slot only. An event goes to the
// partition of its user (PartitionOf), so a user's events, totals and dedup markers are
// all in one partition, and the users of two partitions are disjoint.
//
// With one partition, the default, the layout is the single stream and keys of a
// pipeline that has never been partitioned: Partition(0) is NewKeys(namespace).
//
// The layout is part of what is stored: a namespace's partition count cannot change
// once it holds events (CountKey records it).
type Layout struct {
	namespace string
	parts     []Keys
}

// NewLayout returns the layout of namespace with n partitions, 1 ≤ n ≤ MaxPartitions.
func NewLayout(namespace string, n int) Layout {
	if namespace == "" {
		namespace = DefaultNamespace
	}
	n = min(max(n, 1), MaxPartitions)
	l := Layout{namespace: namespace, parts: make([]Keys, n)}
	for p := range n {
		l.parts[p] = Keys{tag: "{" + PartitionTag(namespace, p, n) + "}", partition: p}
	}
	return l
}

// Namespace is the layout's namespace.
func (l Layout) Namespace() string { return l.namespace }

// Count is the number of partitions.
func (l Layout) Count() int { return len(l.parts) }

// Partition returns the keys of partition p.
func (l Layout) Partition(p int) Keys { return l.parts[p] }

// Partitions returns the keys of every partition, in order.
func (l Layout) Partitions() []Keys { return l.parts }

// PartitionOf returns the partition of a user's events: the CRC-32 (IEEE) of the user
// id modulo the partition count. It is part of the storage layout: a user's events,
// totals and dedup markers are where it says.
func (l Layout) PartitionOf(userID string) int {
	if len(l.parts) == 1 {
		return 0
	}
	return int(crc32.ChecksumIEEE([]byte(userID)) % uint32(len(l.parts)))
}

// ForUser returns the keys of the partition of userID's events.
func (l Layout) ForUser(userID string) Keys { return l.parts[l.PartitionOf(userID)] }
