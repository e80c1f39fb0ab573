package events_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/clickstream/pipeline/events"
)

// The browser endpoint's body: the envelope with the key, and every shape
// DecodeRequest takes, with DecodeRequest's errors.
func TestDecodeCollect(t *testing.T) {
	view := events.Event{UserID: "anon:1f", ProductID: "sku-1", Type: events.PageView, EventID: "e1"}
	dwell := events.Event{UserID: "anon:1f", ProductID: "sku-1", Type: events.Dwell, DurationMs: 1500, EventID: "e2"}
	const viewObj = `{"user_id":"anon:1f","product_id":"sku-1","type":"page_view","event_id":"e1"}`
	const dwellObj = `{"user_id":"anon:1f","product_id":"sku-1","type":"dwell","duration_ms":1500,"event_id":"e2"}`
	ok := []struct {
		name   string
		body   string
		format events.Format
		key    string
		want   []events.Event
	}{
		{"envelope", `{"writeKey":"wk-1","events":[` + viewObj + `,` + dwellObj + `]}`, events.JSON, "wk-1", []events.Event{view, dwell}},
		{"envelope, events first", ` {"events":[` + viewObj + `] , "writeKey":"wk-1"} `, events.JSON, "wk-1", []events.Event{view}},
		{"envelope without key", `{"events":[` + viewObj + `]}`, events.JSON, "", []events.Event{view}},
		{"escaped key", `{"writeKey":"w\u006b","events":[` + viewObj + `]}`, events.JSON, "wk", []events.Event{view}},
		{"one event", viewObj, events.JSON, "", []events.Event{view}},
		{"array", `[` + viewObj + `,` + dwellObj + `]`, events.JSON, "", []events.Event{view, dwell}},
		{"ndjson", viewObj + "\n" + dwellObj + "\n", events.NDJSON, "", []events.Event{view, dwell}},
	}
	for _, c := range ok {
		t.Run(c.name, func(t *testing.T) {
			got, err := events.DecodeCollect([]byte(c.body), c.format, 10, now)
			if err != nil {
				t.Fatalf("DecodeCollect(%q): %v", c.body, err)
			}
			if got.WriteKey != c.key || !slices.Equal(got.Events, c.want) {
				t.Fatalf("DecodeCollect(%q)\n got %q %+v\nwant %q %+v", c.body, got.WriteKey, got.Events, c.key, c.want)
			}
		})
	}

	bad := []struct {
		name   string
		body   string
		format events.Format
		key    string // the WriteKey that must still be read
		want   events.Error
	}{
		{"invalid event", `{"writeKey":"wk","events":[` + viewObj + `,{"user_id":"u1"}]}`, events.JSON, "wk",
			events.Error{Index: 1, Field: "product_id", Msg: "is required"}},
		{"key after the invalid event", `{"events":[{"user_id":"u 1","product_id":"p1"}],"writeKey":"wk"}`, events.JSON, "wk",
			events.Error{Index: 0, Field: "user_id", Msg: events.IDRule}},
		{"unknown field in an event", `{"writeKey":"wk","events":[{"user_id":"u1","product_id":"p1","writeKey":"wk"}]}`, events.JSON, "wk",
			events.Error{Index: 0, Field: `"writeKey"`, Msg: "unknown field"}},
		{"unknown envelope field", `{"writeKey":"wk","events":[` + viewObj + `],"sentAt":1}`, events.JSON, "wk",
			events.Error{Index: -1, Field: `"sentAt"`, Msg: `unknown field; a body with writeKey or events is {"writeKey":"…","events":[…]}`}},
		{"no events", `{"writeKey":"wk"}`, events.JSON, "wk", events.Error{Index: -1, Field: "events", Msg: "is required"}},
		{"empty events", `{"writeKey":"wk","events":[]}`, events.JSON, "wk", events.Error{Index: -1, Msg: "no events in request"}},
		{"events not an array", `{"writeKey":"wk","events":{}}`, events.JSON, "wk", events.Error{Index: -1, Field: "events", Msg: "must be an array of event objects"}},
		{"key not a string", `{"writeKey":7,"events":[` + viewObj + `]}`, events.JSON, "", events.Error{Index: -1, Field: "writeKey", Msg: "must be a string"}},
		{"key twice", `{"writeKey":"wk","writeKey":"wk","events":[` + viewObj + `]}`, events.JSON, "wk", events.Error{Index: -1, Field: "writeKey", Msg: "appears more than once"}},
		{"events twice", `{"writeKey":"wk","events":[` + viewObj + `],"events":[` + viewObj + `]}`, events.JSON, "wk", events.Error{Index: -1, Field: "events", Msg: "appears more than once"}},
		{"data after the envelope", `{"writeKey":"wk","events":[` + viewObj + `]}x`, events.JSON, "wk", events.Error{Index: -1, Msg: "unexpected data after JSON value at byte 106"}},
		{"an event's rules without envelope", `{"user_id":"u1","product_id":"p1","type":"dwell"}`, events.JSON, "", events.Error{Index: 0, Field: "duration_ms", Msg: "is required for type dwell"}},
		{"an envelope is no NDJSON line", `{"writeKey":"wk","events":[` + viewObj + `]}`, events.NDJSON, "", events.Error{Index: 0, Field: `"writeKey"`, Msg: "unknown field"}},
		{"not JSON", `writeKey=wk`, events.JSON, "", events.Error{Index: -1, Msg: "body must be a JSON object or an array of objects at byte 0"}},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			got, err := events.DecodeCollect([]byte(c.body), c.format, 10, now)
			var e *events.Error
			if !errors.As(err, &e) {
				t.Fatalf("DecodeCollect(%q) error %v, want %#v", c.body, err, c.want)
			}
			if *e != c.want {
				t.Fatalf("DecodeCollect(%q) error\n got %#v\nwant %#v", c.body, *e, c.want)
			}
			if got.Events != nil || got.WriteKey != c.key {
				t.Fatalf("DecodeCollect(%q) with its error returned key %q and events %+v; want key %q and none", c.body, got.WriteKey, got.Events, c.key)
			}
		})
	}

	t.Run("too many", func(t *testing.T) {
		body := `{"writeKey":"wk","events":[` + strings.Repeat(viewObj+",", 3) + viewObj + `]}`
		got, err := events.DecodeCollect([]byte(body), events.JSON, 3, now)
		if err != events.ErrTooMany || got.Events != nil || got.WriteKey != "wk" {
			t.Fatalf("4 events, at most 3: %q %+v, %v; want the key, no events, ErrTooMany", got.WriteKey, got.Events, err)
		}
		if got, err := events.DecodeCollect([]byte(body), events.JSON, 4, now); err != nil || len(got.Events) != 4 {
			t.Fatalf("4 events, at most 4: %+v, %v", got.Events, err)
		}
	})
}

var collectSeeds = []string{
	`{"writeKey":"wk","events":[{"user_id":"anon:1","product_id":"p1","type":"page_view","event_id":"e1"}]}`,
	`{"events":[{"user_id":"u1","product_id":"p1","type":"dwell","duration_ms":5}],"writeKey":"wk"}`,
	`{"events":[{"user_id":"u1","product_id":"p1"},{"user_id":"u1"}],"writeKey":"wk"}`,
	`{"writeKey":"wk","events":[],"x":1}`,
	`{"user_id":"u1","product_id":"p1"}`,
	`[{"user_id":"u1","product_id":"p1"}]`,
	`{"writeKey":"a","writeKey":"b","events":[{"user_id":"u1","product_id":"p1"}]}`,
	`{"a":[{"b":"c"}],"events":[{"user_id":"u1","product_id":"p1"}]}`,
}

// FuzzDecodeCollect checks the browser endpoint's decoder: it never panics, fails
// only with an *Error and no events, and what it accepts is what encoding/json reads
// (the envelope) and DecodeRequest accepts (the events).
func FuzzDecodeCollect(f *testing.F) {
	for i, s := range collectSeeds {
		f.Add([]byte(s), i%3 == 2)
	}
	f.Fuzz(func(t *testing.T, body []byte, ndjson bool) {
		format := events.JSON
		if ndjson {
			format = events.NDJSON
		}
		input := slices.Clone(body)
		c, err := events.DecodeCollect(input, format, fuzzMaxEvents, now)
		if err != nil {
			var e *events.Error
			if !errors.As(err, &e) || e.Error() == "" {
				t.Fatalf("error %T %v is not an *events.Error with a message", err, err)
			}
			if c.Events != nil {
				t.Fatalf("events %+v returned with error %v", c.Events, err)
			}
			return
		}
		for i := range input {
			input[i] = 0 // the result must not alias the body, which ingest reuses
		}
		var env struct {
			WriteKey *string         `json:"writeKey"`
			Events   json.RawMessage `json:"events"`
		}
		raw := body
		if format == events.JSON && json.Unmarshal(body, &env) == nil && (env.WriteKey != nil || env.Events != nil) {
			if env.WriteKey != nil && *env.WriteKey != c.WriteKey {
				t.Fatalf("body %q: writeKey %q, encoding/json reads %q", body, c.WriteKey, *env.WriteKey)
			}
			raw = env.Events
		} else if c.WriteKey != "" {
			t.Fatalf("body %q is no envelope to encoding/json, yet writeKey %q was read", body, c.WriteKey)
		}
		want, err := events.DecodeRequest(raw, format, fuzzMaxEvents, now)
		if err != nil || !slices.Equal(want, c.Events) {
			t.Fatalf("body %q: events %+v; DecodeRequest of its events %+v, %v", body, c.Events, want, err)
		}
	})
}
