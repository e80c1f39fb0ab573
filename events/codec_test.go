package events_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/clickstream/pipeline/events"
)

// strs turns AppendFields' output into what XREADGROUP gives back: strings.
func strs(t *testing.T, f []any) []string {
	t.Helper()
	out := make([]string, len(f))
	for i, v := range f {
		s, ok := v.(string)
		if !ok {
			t.Fatalf("field %d is %T %v, want a string", i, v, v)
		}
		out[i] = s
	}
	return out
}

func TestCodecRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		ev   events.Event
		kv   []string // the exact entry AppendFields writes
	}{
		{"click", events.Event{UserID: "u1", ProductID: "p1"},
			[]string{"u", "u1", "p", "p1", "k", "c"}},
		{"click ts", events.Event{UserID: "u1", ProductID: "p1", TS: nowMs},
			[]string{"u", "u1", "p", "p1", "k", "c", "t", "1748779200000"}},
		{"click event id", events.Event{UserID: "u1", ProductID: "p1", EventID: "e-1"},
			[]string{"u", "u1", "p", "p1", "k", "c", "e", "e-1"}},
		{"click ts event id", events.Event{UserID: "u1", ProductID: "p1", TS: 1, EventID: "e-1"},
			[]string{"u", "u1", "p", "p1", "k", "c", "t", "1", "e", "e-1"}},
		{"page view", events.Event{UserID: "u1", ProductID: "p1", Type: events.PageView},
			[]string{"u", "u1", "p", "p1", "k", "v"}},
		{"page view ts", events.Event{UserID: "u1", ProductID: "p1", Type: events.PageView, TS: nowMs},
			[]string{"u", "u1", "p", "p1", "k", "v", "t", "1748779200000"}},
		{"page view event id", events.Event{UserID: "u1", ProductID: "p1", Type: events.PageView, EventID: "e:2"},
			[]string{"u", "u1", "p", "p1", "k", "v", "e", "e:2"}},
		{"page view ts event id", events.Event{UserID: "u1", ProductID: "p1", Type: events.PageView, TS: nowMs, EventID: "e:2"},
			[]string{"u", "u1", "p", "p1", "k", "v", "t", "1748779200000", "e", "e:2"}},
		{"dwell", events.Event{UserID: "u1", ProductID: "p1", Type: events.Dwell, DurationMs: 1500},
			[]string{"u", "u1", "p", "p1", "k", "d", "d", "1500"}},
		{"dwell ts", events.Event{UserID: "u1", ProductID: "p1", Type: events.Dwell, DurationMs: 1, TS: nowMs},
			[]string{"u", "u1", "p", "p1", "k", "d", "d", "1", "t", "1748779200000"}},
		{"dwell event id", events.Event{UserID: "u1", ProductID: "p1", Type: events.Dwell, DurationMs: 86_400_000, EventID: "e@3"},
			[]string{"u", "u1", "p", "p1", "k", "d", "d", "86400000", "e", "e@3"}},
		{"dwell ts event id", events.Event{UserID: id128, ProductID: "AZaz09._:@-", Type: events.Dwell, DurationMs: 42, TS: nowMs, EventID: id128},
			[]string{"u", id128, "p", "AZaz09._:@-", "k", "d", "d", "42", "t", "1748779200000", "e", id128}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kv := strs(t, tc.ev.AppendFields(nil))
			if !slices.Equal(kv, tc.kv) {
				t.Fatalf("AppendFields = %q, want %q", kv, tc.kv)
			}
			got, err := events.DecodeEntry(kv)
			if err != nil || got != tc.ev {
				t.Fatalf("DecodeEntry(%q) = %+v, %v; want %+v", kv, got, err, tc.ev)
			}

			// AppendFields appends: what dst held stays in front.
			dst := tc.ev.AppendFields([]any{"x", "y"})
			if dst[0] != "x" || dst[1] != "y" || !slices.Equal(strs(t, dst[2:]), tc.kv) {
				t.Fatalf("AppendFields(dst) = %v", dst)
			}
		})
	}
}

// TestDecodeEntryDotIDs checks that an entry whose ids are "." or "..", which ingest
// accepted before it refused them, is still counted: such an id is harmless inside a
// key, and the stream must replay into the same totals it was counted into.
func TestDecodeEntryDotIDs(t *testing.T) {
	kv := []string{"u", ".", "p", "..", "k", "c", "e", ".."}
	want := events.Event{UserID: ".", ProductID: "..", EventID: ".."}
	got, err := events.DecodeEntry(kv)
	if err != nil || got != want {
		t.Fatalf("DecodeEntry(%q) = %+v, %v; want %+v", kv, got, err, want)
	}
}

// TestDecodeEntryOrder checks that field order in an entry does not matter.
func TestDecodeEntryOrder(t *testing.T) {
	kv := []string{"e", "e1", "t", "5", "d", "100", "k", "d", "p", "p1", "u", "u1"}
	want := events.Event{UserID: "u1", ProductID: "p1", Type: events.Dwell, DurationMs: 100, EventID: "e1", TS: 5}
	got, err := events.DecodeEntry(kv)
	if err != nil || got != want {
		t.Fatalf("DecodeEntry(%q) = %+v, %v; want %+v", kv, got, err, want)
	}
}

func TestDecodeEntryMalformed(t *testing.T) {
	ok := []string{"u", "u1", "p", "p1"}
	with := func(kv ...string) []string { return append(slices.Clone(ok), kv...) }
	for _, tc := range []struct {
		name string
		kv   []string
		msg  string
	}{
		{"nil", nil, `bad kind ""`},
		{"empty", []string{}, `bad kind ""`},
		{"odd count", []string{"u", "u1", "p"}, "odd number of fields"},
		{"one field", []string{"u"}, "odd number of fields"},
		{"odd count with kind", with("k", "c", "e"), "odd number of fields"},
		{"unknown field", with("k", "c", "x", "1"), `unknown field "x"`},
		{"long field name", with("k", "c", "user", "u1"), `unknown field "user"`},
		{"empty field name", with("k", "c", "", ""), `unknown field ""`},
		{"missing kind", ok, `bad kind ""`},
		{"bad kind", with("k", "z"), `bad kind "z"`},
		{"long kind", with("k", "click"), `bad kind "click"`},
		{"missing user", []string{"p", "p1", "k", "c"}, `bad user id ""`},
		{"bad user", []string{"u", "u 1", "p", "p1", "k", "c"}, `bad user id "u 1"`},
		{"user with hash tag", []string{"u", "{x}", "p", "p1", "k", "c"}, `bad user id "{x}"`},
		{"user 129", []string{"u", id129, "p", "p1", "k", "c"}, `bad user id "` + id129 + `"`},
		{"missing product", []string{"u", "u1", "k", "c"}, `bad product id ""`},
		{"bad product", []string{"u", "u1", "p", "p\x00", "k", "c"}, `bad product id "p\x00"`},
		{"bad event id", with("k", "c", "e", "e 1"), `bad event id "e 1"`},
		{"event id 129", with("k", "c", "e", id129), `bad event id "` + id129 + `"`},
		{"dwell without duration", with("k", "d"), `bad duration ""`},
		{"duration 0", with("k", "d", "d", "0"), `bad duration "0"`},
		{"duration negative", with("k", "d", "d", "-5"), `bad duration "-5"`},
		{"duration too long", with("k", "d", "d", "86400001"), `bad duration "86400001"`},
		{"duration fraction", with("k", "d", "d", "1.5"), `bad duration "1.5"`},
		{"duration word", with("k", "d", "d", "abc"), `bad duration "abc"`},
		{"duration overflow", with("k", "d", "d", "99999999999999999999"), `bad duration "99999999999999999999"`},
		{"duration on click", with("k", "c", "d", "100"), "duration on a non-dwell entry"},
		{"duration on page view", with("k", "v", "d", "100"), "duration on a non-dwell entry"},
		{"ts 0", with("k", "c", "t", "0"), `bad ts "0"`},
		{"ts negative", with("k", "c", "t", "-1"), `bad ts "-1"`},
		{"ts word", with("k", "c", "t", "now"), `bad ts "now"`},
		{"ts empty", with("k", "c", "t", ""), `bad ts ""`},
		{"ts RFC 3339", with("k", "c", "t", "2025-06-01T12:00:00Z"), `bad ts "2025-06-01T12:00:00Z"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := events.DecodeEntry(tc.kv)
			if err == nil {
				t.Fatalf("DecodeEntry(%q) = %+v, nil; want an error", tc.kv, ev)
			}
			if !errors.Is(err, events.ErrMalformed) {
				t.Fatalf("DecodeEntry(%q) error %v does not wrap ErrMalformed", tc.kv, err)
			}
			if got, want := err.Error(), "malformed stream entry: "+tc.msg; got != want {
				t.Fatalf("DecodeEntry(%q) error = %q, want %q", tc.kv, got, want)
			}
		})
	}
}

// TestDecodeEntryNeverPanics feeds every short sequence built from a small alphabet of
// field names and values.
func TestDecodeEntryNeverPanics(t *testing.T) {
	alphabet := []string{"", "u", "p", "k", "d", "t", "e", "c", "v", "1", "-1", "x y", strings.Repeat("9", 30)}
	var walk func(kv []string, depth int)
	walk = func(kv []string, depth int) {
		ev, err := events.DecodeEntry(kv)
		if err != nil && !errors.Is(err, events.ErrMalformed) {
			t.Fatalf("DecodeEntry(%q) error %v does not wrap ErrMalformed", kv, err)
		}
		if err == nil && (!events.ValidID(ev.UserID) || !events.ValidID(ev.ProductID)) {
			t.Fatalf("DecodeEntry(%q) accepted %+v", kv, ev)
		}
		if depth == 0 {
			return
		}
		for _, s := range alphabet {
			walk(append(kv, s), depth-1)
		}
	}
	walk(nil, 4)
}

// TestCompareIDs checks that entry ids order as numbers, milliseconds first, as Redis
// orders them, and not as strings.
func TestCompareIDs(t *testing.T) {
	const max = "18446744073709551615"
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"1-1", "1-1", 0},
		{"1-9", "1-10", -1},
		{"9-0", "10-0", -1},
		{"1-100", "2-0", -1},
		{"1748779200000-0", "1748779200000-1", -1},
		{"1748779200001-0", "1748779200000-99", 1},
		{"0-1", "0-0", 1},
		{"5", "5-0", 0},
		{"5", "5-1", -1},
		{max + "-" + max, max + "-0", 1},
		{max + "-0", "1-0", 1},
		{"", "0-0", 0},
		{"x", "0-0", 0},
		{"", "0-1", -1},
	} {
		if got := events.CompareIDs(tc.a, tc.b); got != tc.want {
			t.Errorf("CompareIDs(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := events.CompareIDs(tc.b, tc.a); got != -tc.want {
			t.Errorf("CompareIDs(%q, %q) = %d, want %d", tc.b, tc.a, got, -tc.want)
		}
	}
}
