package events_test

import (
	"fmt"
	"testing"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/redistest"
)

// With one partition the layout is today's single stream: every key name of partition
// 0 is NewKeys's.
func TestLayoutOnePartitionIsTodays(t *testing.T) {
	l := events.NewLayout("cs", 1)
	if l.Count() != 1 || l.Partition(0) != events.NewKeys("cs") || l.PartitionOf("anyone") != 0 {
		t.Fatalf("NewLayout(cs, 1) = %+v, want exactly NewKeys(cs)", l)
	}
	if got := l.ForUser("u1").Stream(); got != "{cs}:events" {
		t.Errorf("stream %q, want {cs}:events", got)
	}
	if got := l.CountKey(); got != "{cs}:partitions" {
		t.Errorf("CountKey = %q, want {cs}:partitions", got)
	}
}

// TestPartitionNames pins the partitions' tags and the partition of a few users: they
// are the storage layout, and a change strands every key already written.
func TestPartitionNames(t *testing.T) {
	l := events.NewLayout("cs", 6)
	for p, want := range []string{
		"{cs:p0of6:47}:events", "{cs:p1of6:23}:events", "{cs:p2of6:13}:events",
		"{cs:p3of6:0}:events", "{cs:p4of6:0}:events", "{cs:p5of6:1}:events",
	} {
		if got := l.Partition(p).Stream(); got != want {
			t.Errorf("partition %d: stream %q, want %q", p, got, want)
		}
		if l.Partition(p).Partition() != p {
			t.Errorf("partition %d: Partition() = %d", p, l.Partition(p).Partition())
		}
	}
	for user, want := range map[string]int{"u1": 2, "user-0001": 4, "alice@example.com": 3} {
		if got := l.PartitionOf(user); got != want {
			t.Errorf("PartitionOf(%q) = %d, want %d", user, got, want)
		}
		if got := l.ForUser(user); got != l.Partition(want) {
			t.Errorf("ForUser(%q) is partition %d, want %d", user, got.Partition(), want)
		}
	}
	if got := l.Partition(3).Gen(2).User("u1"); got != "{cs:p3of6:0}:g2:u:u1" {
		t.Errorf("a user's key in partition 3: %q", got)
	}
}

// Every key of a partition is in the partition's slot; each partition's slot lies in
// the middle half of its even share of the slots; the partitions' tags are distinct and
// none is a namespace's own tag; users spread evenly over the partitions.
func TestPartitionsSpread(t *testing.T) {
	for _, n := range []int{2, 3, 6, 12, 100, events.MaxPartitions} {
		l := events.NewLayout("ns-1", n)
		tags := map[string]bool{}
		for p, k := range l.Partitions() {
			tag := hashTag(k.Stream())
			if tags[tag] {
				t.Fatalf("n=%d: partition %d has the tag %q of another", n, p, tag)
			}
			tags[tag] = true
			if tag == "ns-1" {
				t.Fatalf("n=%d: partition %d has the namespace's own tag", n, p)
			}
			lo, hi := p*events.SlotCount/n, (p+1)*events.SlotCount/n
			slot := events.Slot(k.Stream())
			if q := (hi - lo) / 4; slot < lo+q || slot >= hi-q {
				t.Errorf("n=%d: partition %d is in slot %d, outside the middle of its share %d-%d", n, p, slot, lo, hi-1)
			}
			for _, key := range []string{k.Marker("e1"), k.Generation(), k.Pause(), k.Gen(3).User("u"), k.Gen(3).TopProducts(),
				k.Checkpoint().User("u"), k.CheckpointInfo(), k.RebuildState(), k.DeadLetter(), k.Gen(1).ClaimEpoch()} {
				if events.Slot(key) != slot {
					t.Fatalf("n=%d: %s is not in its partition's slot %d", n, key, slot)
				}
			}
		}
		if n > 12 {
			continue
		}
		counts := make([]int, n)
		const users = 12_000
		for i := range users {
			counts[l.PartitionOf(fmt.Sprintf("user-%d", i))]++
		}
		for p, c := range counts {
			if mean := users / n; c < mean*9/10 || c > mean*11/10 {
				t.Errorf("n=%d: partition %d has %d of %d users, want about %d", n, p, c, users, mean)
			}
		}
	}
}

// On a cluster of three masters that share the slots as redis-cli shares them, the
// partitions land on every master, evenly: one, two or four per master for 3, 6 or 12.
func TestPartitionsOnEveryMaster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 3)
	for _, n := range []int{3, 6, 12} {
		per := map[string]int{}
		for _, k := range events.NewLayout("cs", n).Partitions() {
			node := c.NodeFor(k.Stream())
			per[node.Addr()]++
		}
		if len(per) != 3 {
			t.Errorf("n=%d: partitions on %d masters, want all 3: %v", n, len(per), per)
		}
		for addr, m := range per {
			if m != n/3 {
				t.Errorf("n=%d: %d partitions on %s, want %d: %v", n, m, addr, n/3, per)
			}
		}
	}
}

// Slot is Redis Cluster's CRC16 of the hash tag, as the cluster specification gives it.
func TestSlot(t *testing.T) {
	for key, want := range map[string]int{
		"123456789":            0x31C3, // the specification's check value
		"{123456789}.x":        0x31C3,
		"{user1000}.following": events.Slot("{user1000}.followers"),
	} {
		if got := events.Slot(key); got != want {
			t.Errorf("Slot(%q) = %d, want %d", key, got, want)
		}
	}
	if events.Slot("foo{}{bar}") == events.Slot("bar") {
		t.Error(`Slot("foo{}{bar}") hashes "bar"; an empty first tag means the whole key`)
	}
}
