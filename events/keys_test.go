package events_test

import (
	"strings"
	"testing"

	"github.com/clickstream/pipeline/events"
)

// hashTag returns the part of key Redis Cluster hashes: the text between the first '{'
// and the first '}' after it, when that is not empty; otherwise the whole key.
func hashTag(key string) string {
	open := strings.IndexByte(key, '{')
	if open < 0 {
		return key
	}
	end := strings.IndexByte(key[open+1:], '}')
	if end <= 0 {
		return key
	}
	return key[open+1 : open+1+end]
}

// allKeys lists every key name of a namespace for the given generations and ids.
func allKeys(ns string, gens []int64, ids []string) []string {
	k := events.NewKeys(ns)
	out := []string{k.Stream(), k.DeadLetter(), k.Generation()}
	for _, id := range ids {
		out = append(out, k.Marker(id))
	}
	for _, gen := range gens {
		g := k.Gen(gen)
		out = append(out, g.TopProducts())
		for _, id := range ids {
			out = append(out, g.User(id), g.Product(id))
		}
	}
	return out
}

// TestKeyNames pins the names: they are the storage layout, and a change strands every
// key already written.
func TestKeyNames(t *testing.T) {
	k := events.NewKeys("cs")
	g := k.Gen(1)
	for got, want := range map[string]string{
		k.Stream():          "{cs}:events",
		k.DeadLetter():      "{cs}:deadletter",
		k.Generation():      "{cs}:generation",
		k.Marker("e1"):      "{cs}:seen:e1",
		g.User("u1"):        "{cs}:g1:u:u1",
		g.UserPrefix():      "{cs}:g1:u:",
		g.Product("p1"):     "{cs}:g1:p:p1",
		g.ProductPrefix():   "{cs}:g1:p:",
		g.TopProducts():     "{cs}:g1:top",
		g.Group():           "aggregator-g1",
		k.Gen(12).Group():   "aggregator-g12",
		k.Gen(12).User("x"): "{cs}:g12:u:x",
	} {
		if got != want {
			t.Errorf("key %q, want %q", got, want)
		}
	}
	if g.Number != 1 || k.Gen(7).Number != 7 {
		t.Errorf("Gen(1).Number = %d, Gen(7).Number = %d", g.Number, k.Gen(7).Number)
	}
	if events.NewKeys("") != events.NewKeys(events.DefaultNamespace) || events.DefaultNamespace != "cs" {
		t.Errorf("the empty namespace is not the default namespace cs")
	}
}

func TestKeyPrefixes(t *testing.T) {
	k := events.NewKeys("ns")
	g := k.Gen(3)
	for _, id := range []string{"a", "top", "u:x", id128} {
		if got, want := g.User(id), g.UserPrefix()+id; got != want {
			t.Errorf("User(%q) = %q, want UserPrefix()+id = %q", id, got, want)
		}
		if got, want := g.Product(id), g.ProductPrefix()+id; got != want {
			t.Errorf("Product(%q) = %q, want ProductPrefix()+id = %q", id, got, want)
		}
	}
}

// TestKeysShareHashTag checks that every key of a namespace hashes to the same cluster
// slot, whatever the ids, because the Lua scripts touch them in one call.
func TestKeysShareHashTag(t *testing.T) {
	// Braces are not valid in ids; they are here to show that even so the namespace's
	// tag, coming first, decides the slot.
	ids := []string{"a", "top", "u:1", "p:1", "x}y", "{", "}", "{z}", id128}
	for _, ns := range []string{"cs", "prod", "t-Test-1", "a.b_c"} {
		for _, key := range allKeys(ns, []int64{1, 2, 10}, ids) {
			if got := hashTag(key); got != ns {
				t.Errorf("key %q hashes on %q, want %q", key, got, ns)
			}
			if !strings.HasPrefix(key, "{"+ns+"}:") {
				t.Errorf("key %q does not start with {%s}:", key, ns)
			}
		}
		g := events.NewKeys(ns).Gen(1)
		for _, p := range []string{g.UserPrefix(), g.ProductPrefix()} {
			if got := hashTag(p); got != ns {
				t.Errorf("prefix %q hashes on %q, want %q", p, got, ns)
			}
		}
	}
}

// TestKeysNeverCollide checks that no two (namespace, generation, role, id) map to the
// same key, including ids chosen to look like other keys' suffixes.
func TestKeysNeverCollide(t *testing.T) {
	namespaces := []string{"cs", "a", "b", "ab", "a.b", "a-b", "a_b", "A", "cs1", "g1"}
	gens := []int64{1, 2, 10, 11, 100}
	ids := []string{"a", "1", "top", "u", "p", "u:a", "p:a", "g1:u:a", "events", "seen:a", "generation", "deadletter", id128}
	seen := map[string]string{}
	for _, ns := range namespaces {
		k := events.NewKeys(ns)
		add := func(role, key string) {
			if prev, dup := seen[key]; dup {
				t.Errorf("key %q is both %s and %s", key, prev, role)
			}
			seen[key] = role
		}
		add(ns+" stream", k.Stream())
		add(ns+" deadletter", k.DeadLetter())
		add(ns+" generation", k.Generation())
		for _, id := range ids {
			add(ns+" marker "+id, k.Marker(id))
		}
		for _, gen := range gens {
			g := k.Gen(gen)
			tag := ns + " g" + g.Group()
			add(tag+" top", g.TopProducts())
			for _, id := range ids {
				add(tag+" user "+id, g.User(id))
				add(tag+" product "+id, g.Product(id))
			}
		}
	}
	want := len(namespaces) * (3 + len(ids) + len(gens)*(1+2*len(ids)))
	if len(seen) != want {
		t.Fatalf("%d distinct keys, want %d", len(seen), want)
	}

	// The consumer group is per generation (groups live inside the stream, which is
	// already per namespace).
	groups := map[string]bool{}
	for _, gen := range gens {
		groups[events.NewKeys("cs").Gen(gen).Group()] = true
	}
	if len(groups) != len(gens) {
		t.Fatalf("%d distinct groups for %d generations", len(groups), len(gens))
	}
}
