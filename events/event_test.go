package events_test

import (
	"strings"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
)

// now is the fixed receive time every test validates against.
var now = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

var nowMs = now.UnixMilli()

const (
	IDRule      = "must be 1-128 characters of A-Z a-z 0-9 . _ : @ -, and not . or .."
	durationMsg = "must be an integer from 1 to 86400000"
	typeMsg     = "must be click, page_view or dwell"
)

var (
	id128 = strings.Repeat("a", 128)
	id129 = strings.Repeat("a", 129)
)

func TestValidID(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want bool
	}{
		{"u1", true},
		{"a", true},
		{id128, true},
		{"AZaz09._:@-", true},
		{"user@example.com", true},
		{"", false},
		{id129, false},
		{"{", false},
		{"}", false},
		{"a{b}", false},
		{"a b", false},
		{"a\tb", false},
		{"a\nb", false},
		{"a\x00b", false},
		{"a\x7fb", false},
		{"é", false},
		{"a/b", false},
		{"a\"b", false},
		{"a\\b", false},
		{"a*b", false},
		{"a%20b", false},
		{"\xff", false},
		// Browsers and curl drop these path segments, so such an id could not be read back.
		{".", false},
		{"..", false},
		{"...", true},
		{".a", true},
		{"a..", true},
		{"..a", true},
	} {
		if got := events.ValidID(tc.id); got != tc.want {
			t.Errorf("ValidID(%q) = %v, want %v", tc.id, got, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	valid := func(f func(*events.Event)) events.Event {
		e := events.Event{UserID: "u1", ProductID: "p1"}
		if f != nil {
			f(&e)
		}
		return e
	}
	for _, tc := range []struct {
		name  string
		ev    events.Event
		field string // "" means valid
		msg   string
	}{
		{name: "click", ev: valid(nil)},
		{name: "page view", ev: valid(func(e *events.Event) { e.Type = events.PageView })},
		{name: "dwell", ev: valid(func(e *events.Event) { e.Type = events.Dwell; e.DurationMs = 1500 })},
		{name: "dwell min", ev: valid(func(e *events.Event) { e.Type = events.Dwell; e.DurationMs = 1 })},
		{name: "dwell max", ev: valid(func(e *events.Event) { e.Type = events.Dwell; e.DurationMs = 86_400_000 })},
		{name: "all fields", ev: events.Event{UserID: id128, ProductID: "AZaz09._:@-", Type: events.Dwell, DurationMs: 5, EventID: id128, TS: nowMs}},

		{name: "user missing", ev: valid(func(e *events.Event) { e.UserID = "" }), field: "user_id", msg: "is required"},
		{name: "user 129", ev: valid(func(e *events.Event) { e.UserID = id129 }), field: "user_id", msg: IDRule},
		{name: "user brace", ev: valid(func(e *events.Event) { e.UserID = "{u}" }), field: "user_id", msg: IDRule},
		{name: "user space", ev: valid(func(e *events.Event) { e.UserID = "u 1" }), field: "user_id", msg: IDRule},
		{name: "user control", ev: valid(func(e *events.Event) { e.UserID = "u\x01" }), field: "user_id", msg: IDRule},
		{name: "user non-ASCII", ev: valid(func(e *events.Event) { e.UserID = "ü" }), field: "user_id", msg: IDRule},
		{name: "user dot", ev: valid(func(e *events.Event) { e.UserID = "." }), field: "user_id", msg: IDRule},
		{name: "user dot dot", ev: valid(func(e *events.Event) { e.UserID = ".." }), field: "user_id", msg: IDRule},
		{name: "product dot dot", ev: valid(func(e *events.Event) { e.ProductID = ".." }), field: "product_id", msg: IDRule},
		{name: "event id dot", ev: valid(func(e *events.Event) { e.EventID = "." }), field: "event_id", msg: IDRule},
		{name: "product missing", ev: valid(func(e *events.Event) { e.ProductID = "" }), field: "product_id", msg: "is required"},
		{name: "product 129", ev: valid(func(e *events.Event) { e.ProductID = id129 }), field: "product_id", msg: IDRule},
		{name: "product close brace", ev: valid(func(e *events.Event) { e.ProductID = "}" }), field: "product_id", msg: IDRule},
		{name: "both missing names user", ev: events.Event{}, field: "user_id", msg: "is required"},

		{name: "unknown type", ev: valid(func(e *events.Event) { e.Type = 3 }), field: "type", msg: typeMsg},
		{name: "dwell without duration", ev: valid(func(e *events.Event) { e.Type = events.Dwell }), field: "duration_ms", msg: "is required for type dwell"},
		{name: "dwell negative", ev: valid(func(e *events.Event) { e.Type = events.Dwell; e.DurationMs = -1 }), field: "duration_ms", msg: durationMsg},
		{name: "dwell too long", ev: valid(func(e *events.Event) { e.Type = events.Dwell; e.DurationMs = 86_400_001 }), field: "duration_ms", msg: durationMsg},
		{name: "click with duration", ev: valid(func(e *events.Event) { e.DurationMs = 5 }), field: "duration_ms", msg: "is only allowed for type dwell"},
		{name: "page view with duration", ev: valid(func(e *events.Event) { e.Type = events.PageView; e.DurationMs = 5 }), field: "duration_ms", msg: "is only allowed for type dwell"},

		{name: "event id bad", ev: valid(func(e *events.Event) { e.EventID = "e 1" }), field: "event_id", msg: IDRule},
		{name: "event id 129", ev: valid(func(e *events.Event) { e.EventID = id129 }), field: "event_id", msg: IDRule},

		{name: "ts now", ev: valid(func(e *events.Event) { e.TS = nowMs })},
		{name: "ts 1h ahead", ev: valid(func(e *events.Event) { e.TS = nowMs + time.Hour.Milliseconds() })},
		{name: "ts 30d ago", ev: valid(func(e *events.Event) { e.TS = nowMs - 30*24*time.Hour.Milliseconds() })},
		{name: "ts 1h1ms ahead", ev: valid(func(e *events.Event) { e.TS = nowMs + time.Hour.Milliseconds() + 1 }), field: "ts", msg: "is more than 1h in the future"},
		{name: "ts 30d1ms ago", ev: valid(func(e *events.Event) { e.TS = nowMs - 30*24*time.Hour.Milliseconds() - 1 }), field: "ts", msg: "is more than 30 days in the past"},
		{name: "ts negative", ev: valid(func(e *events.Event) { e.TS = -1 }), field: "ts", msg: "is more than 30 days in the past"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := tc.ev
			err := ev.Validate(now)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate(%+v) = %v, want nil", ev, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate(%+v) = nil, want %s: %s", ev, tc.field, tc.msg)
			}
			want := events.Error{Index: -1, Field: tc.field, Msg: tc.msg}
			if *err != want {
				t.Fatalf("Validate(%+v) = %#v, want %#v", ev, *err, want)
			}
			if got, want := err.Error(), tc.field+": "+tc.msg; got != want {
				t.Errorf("Error() = %q, want %q", got, want)
			}
		})
	}
}

func TestTypeString(t *testing.T) {
	for typ, want := range map[events.Type]string{
		events.Click:    "click",
		events.PageView: "page_view",
		events.Dwell:    "dwell",
		7:               "unknown(7)",
	} {
		if got := typ.String(); got != want {
			t.Errorf("Type(%d).String() = %q, want %q", uint8(typ), got, want)
		}
	}
}
