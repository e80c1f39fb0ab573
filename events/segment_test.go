package events_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
)

var segMapping = events.SegmentMapping{
	Click:        map[string]bool{"Product Clicked": true},
	View:         map[string]bool{"Product Viewed": true},
	Dwell:        map[string]bool{"Product Dwelled": true},
	MaxItemBytes: 400,
	MaxItems:     6,
}

// iso writes a time as the SDKs do.
func iso(t time.Time) string { return t.Format(time.RFC3339Nano) }

func segBatch(items ...string) string {
	return `{"batch":[` + strings.Join(items, ",") + `]}`
}

func TestDecodeSegmentMapping(t *testing.T) {
	ts := now.Add(-time.Hour)
	cases := []struct {
		name string
		item string
		want events.Event
		drop *events.SegmentDrop // Index is checked to be 0
	}{
		{name: "click", item: `{"type":"track","event":"Product Clicked","userId":"u1","properties":{"product_id":"p1"},"messageId":"m-1"}`,
			want: events.Event{UserID: "u1", ProductID: "p1", Type: events.Click, EventID: "m-1"}},
		{name: "view", item: `{"type":"track","event":"Product Viewed","userId":"u1","properties":{"product_id":"p1","price":9.5,"tags":["a",{"b":null}]}}`,
			want: events.Event{UserID: "u1", ProductID: "p1", Type: events.PageView}},
		{name: "dwell", item: `{"type":"track","event":"Product Dwelled","userId":"u1","properties":{"product_id":"p1","duration_ms":1500}}`,
			want: events.Event{UserID: "u1", ProductID: "p1", Type: events.Dwell, DurationMs: 1500}},
		{name: "dwell, duration as 1.5e3", item: `{"type":"track","event":"Product Dwelled","userId":"u1","properties":{"product_id":"p1","duration_ms":1.5e3}}`,
			want: events.Event{UserID: "u1", ProductID: "p1", Type: events.Dwell, DurationMs: 1500}},
		{name: "page", item: `{"type":"page","name":"Shoe","userId":"u1","properties":{"product_id":"p1","url":"https://x/y"}}`,
			want: events.Event{UserID: "u1", ProductID: "p1", Type: events.PageView}},
		{name: "screen, sku", item: `{"type":"screen","userId":"u1","properties":{"sku":"sku-9"}}`,
			want: events.Event{UserID: "u1", ProductID: "sku-9", Type: events.PageView}},
		{name: "product_id before sku", item: `{"type":"page","userId":"u1","properties":{"sku":"s","product_id":"p"}}`,
			want: events.Event{UserID: "u1", ProductID: "p", Type: events.PageView}},
		{name: "empty product_id falls back to sku", item: `{"type":"page","userId":"u1","properties":{"product_id":"","sku":"s"}}`,
			want: events.Event{UserID: "u1", ProductID: "s", Type: events.PageView}},
		{name: "numeric ids", item: `{"type":"page","userId":42,"properties":{"product_id":7}}`,
			want: events.Event{UserID: "42", ProductID: "7", Type: events.PageView}},
		{name: "anonymousId", item: `{"type":"page","anonymousId":"a-1","properties":{"product_id":"p1"}}`,
			want: events.Event{UserID: "anon:a-1", ProductID: "p1", Type: events.PageView}},
		{name: "userId before anonymousId", item: `{"type":"page","anonymousId":"a-1","userId":"u1","properties":{"product_id":"p1"}}`,
			want: events.Event{UserID: "u1", ProductID: "p1", Type: events.PageView}},
		{name: "null and empty userId", item: `{"type":"page","userId":null,"anonymousId":"a","properties":{"product_id":"p1"}}`,
			want: events.Event{UserID: "anon:a", ProductID: "p1", Type: events.PageView}},
		{name: "messageId outside the id alphabet", item: `{"type":"page","userId":"u1","properties":{"product_id":"p1"},"messageId":"ajs-{x y}"}`,
			want: events.Event{UserID: "u1", ProductID: "p1", Type: events.PageView, EventID: events.SegmentEventID("ajs-{x y}")}},
		{name: "messageId of 100 characters", item: `{"type":"page","userId":"u1","properties":{"product_id":"p1"},"messageId":"` + strings.Repeat("m", 100) + `"}`,
			want: events.Event{UserID: "u1", ProductID: "p1", Type: events.PageView, EventID: strings.Repeat("m", 100)}},
		{name: "timestamp without sentAt", item: `{"type":"page","userId":"u1","properties":{"product_id":"p1"},"timestamp":"` + iso(ts) + `"}`,
			want: events.Event{UserID: "u1", ProductID: "p1", Type: events.PageView, TS: ts.UnixMilli()}},
		{name: "timestamp corrected by the call's sentAt", item: `{"type":"page","userId":"u1","properties":{"product_id":"p1"},"timestamp":"2020-01-01T00:00:00Z","sentAt":"2020-01-01T00:00:05.5Z"}`,
			want: events.Event{UserID: "u1", ProductID: "p1", Type: events.PageView, TS: nowMs - 5500}},
		{name: "timestamp without a zone is UTC", item: `{"type":"page","userId":"u1","properties":{"product_id":"p1"},"timestamp":"2025-06-01T11:00:00.250"}`,
			want: events.Event{UserID: "u1", ProductID: "p1", Type: events.PageView, TS: nowMs - 3600_000 + 250}},
		{name: "unknown fields and context skipped", item: `{"type":"page","userId":"u1","properties":{"product_id":"p1"},"context":{"library":{"name":"analytics-go","version":"3.3.0"},"ip":"1.2.3.4"},"integrations":{"All":true},"traits":[1,2,{"a":[true,false,null]}],"originalTimestamp":"x"}`,
			want: events.Event{UserID: "u1", ProductID: "p1", Type: events.PageView}},

		{name: "identify", item: `{"type":"identify","userId":"u1","traits":{"email":"a@b"}}`, drop: &events.SegmentDrop{Ignored: true, Reason: "identify"}},
		{name: "group", item: `{"type":"group","userId":"u1","groupId":"g"}`, drop: &events.SegmentDrop{Ignored: true, Reason: "group"}},
		{name: "alias", item: `{"type":"alias","userId":"u1","previousId":"a"}`, drop: &events.SegmentDrop{Ignored: true, Reason: "alias"}},
		{name: "track of another name", item: `{"type":"track","event":"Signed Up","userId":"u1"}`, drop: &events.SegmentDrop{Ignored: true, Reason: "track_name"}},

		{name: "no type", item: `{"userId":"u1","properties":{"product_id":"p1"}}`, drop: &events.SegmentDrop{Reason: "type", Msg: "type: is required"}},
		{name: "unknown type", item: `{"type":"click","userId":"u1","properties":{"product_id":"p1"}}`,
			drop: &events.SegmentDrop{Reason: "type", Msg: "type: must be track, page, screen, identify, group or alias"}},
		{name: "track without event", item: `{"type":"track","userId":"u1","properties":{"product_id":"p1"}}`,
			drop: &events.SegmentDrop{Reason: "event", Msg: "event: is required for a track call"}},
		{name: "no user", item: `{"type":"page","properties":{"product_id":"p1"}}`,
			drop: &events.SegmentDrop{Reason: "user", Msg: "userId or anonymousId: one is required"}},
		{name: "userId with a space", item: `{"type":"page","userId":"u 1","properties":{"product_id":"p1"}}`,
			drop: &events.SegmentDrop{Reason: "user", Msg: "userId or anonymousId: " + events.IDRule + " (an anonymousId becomes anon:<anonymousId>)"}},
		{name: "anonymousId too long with its prefix", item: `{"type":"page","anonymousId":"` + strings.Repeat("a", 124) + `","properties":{"product_id":"p1"}}`,
			drop: &events.SegmentDrop{Reason: "user", Msg: "userId or anonymousId: " + events.IDRule + " (an anonymousId becomes anon:<anonymousId>)"}},
		{name: "userId as an object", item: `{"type":"page","userId":{"id":1},"properties":{"product_id":"p1"}}`,
			drop: &events.SegmentDrop{Reason: "malformed", Msg: "userId: must be a string or an integer"}},
		{name: "userId as a fraction", item: `{"type":"page","userId":1.5,"properties":{"product_id":"p1"}}`,
			drop: &events.SegmentDrop{Reason: "malformed", Msg: "userId: must be a string or an integer"}},
		{name: "no product", item: `{"type":"page","userId":"u1","properties":{"url":"/"}}`,
			drop: &events.SegmentDrop{Reason: "product", Msg: "properties.product_id (or properties.sku): is required"}},
		{name: "no properties", item: `{"type":"track","event":"Product Clicked","userId":"u1"}`,
			drop: &events.SegmentDrop{Reason: "product", Msg: "properties.product_id (or properties.sku): is required"}},
		{name: "product with a brace", item: `{"type":"page","userId":"u1","properties":{"product_id":"p{1}"}}`,
			drop: &events.SegmentDrop{Reason: "product", Msg: "properties.product_id (or properties.sku): " + events.IDRule}},
		{name: "properties as a string", item: `{"type":"page","userId":"u1","properties":"p1"}`,
			drop: &events.SegmentDrop{Reason: "malformed", Msg: "properties: must be an object"}},
		{name: "dwell without duration", item: `{"type":"track","event":"Product Dwelled","userId":"u1","properties":{"product_id":"p1"}}`,
			drop: &events.SegmentDrop{Reason: "duration", Msg: "properties.duration_ms: must be an integer from 1 to 86400000"}},
		{name: "dwell of 0 ms", item: `{"type":"track","event":"Product Dwelled","userId":"u1","properties":{"product_id":"p1","duration_ms":0}}`,
			drop: &events.SegmentDrop{Reason: "duration", Msg: "properties.duration_ms: must be an integer from 1 to 86400000"}},
		{name: "dwell of 1.5 ms", item: `{"type":"track","event":"Product Dwelled","userId":"u1","properties":{"product_id":"p1","duration_ms":1.5}}`,
			drop: &events.SegmentDrop{Reason: "duration", Msg: "properties.duration_ms: must be an integer from 1 to 86400000"}},
		{name: "dwell as a string", item: `{"type":"track","event":"Product Dwelled","userId":"u1","properties":{"product_id":"p1","duration_ms":"1500"}}`,
			drop: &events.SegmentDrop{Reason: "duration", Msg: "properties.duration_ms: must be an integer from 1 to 86400000"}},
		{name: "dwell over a day", item: `{"type":"track","event":"Product Dwelled","userId":"u1","properties":{"product_id":"p1","duration_ms":1e300}}`,
			drop: &events.SegmentDrop{Reason: "duration", Msg: "properties.duration_ms: must be an integer from 1 to 86400000"}},
		{name: "messageId of 101 characters", item: `{"type":"page","userId":"u1","properties":{"product_id":"p1"},"messageId":"` + strings.Repeat("m", 101) + `"}`,
			drop: &events.SegmentDrop{Reason: "message_id", Msg: "messageId: must be at most 100 characters"}},
		{name: "messageId as a number", item: `{"type":"page","userId":"u1","properties":{"product_id":"p1"},"messageId":12}`,
			drop: &events.SegmentDrop{Reason: "malformed", Msg: "messageId: must be a string"}},
		{name: "timestamp not a time", item: `{"type":"page","userId":"u1","properties":{"product_id":"p1"},"timestamp":"yesterday"}`,
			drop: &events.SegmentDrop{Reason: "timestamp", Msg: "timestamp: must be an ISO 8601 time"}},
		{name: "timestamp 31 days old", item: `{"type":"page","userId":"u1","properties":{"product_id":"p1"},"timestamp":"` + iso(now.Add(-31*24*time.Hour)) + `"}`,
			drop: &events.SegmentDrop{Reason: "timestamp", Msg: "timestamp: is more than 30 days in the past (after correcting for the client's clock with sentAt)"}},
		{name: "timestamp 2 h ahead once corrected", item: `{"type":"page","userId":"u1","properties":{"product_id":"p1"},"timestamp":"2020-01-01T02:00:00Z","sentAt":"2020-01-01T00:00:00Z"}`,
			drop: &events.SegmentDrop{Reason: "timestamp", Msg: "timestamp: is more than 1h in the future (after correcting for the client's clock with sentAt)"}},
		{name: "call over MaxItemBytes", item: `{"type":"page","userId":"u1","properties":{"product_id":"p1","x":"` + strings.Repeat("x", 400) + `"}}`,
			drop: &events.SegmentDrop{Reason: "too_large", Msg: "call larger than 400 bytes"}},
		{name: "call not an object", item: `["page"]`, drop: &events.SegmentDrop{Reason: "malformed", Msg: "a call must be a JSON object"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The call under test is the second of a batch, between two valid ones.
			valid := `{"type":"track","event":"Product Clicked","userId":"v","properties":{"product_id":"p"}}`
			validEv := events.Event{UserID: "v", ProductID: "p", Type: events.Click}
			res, err := events.DecodeSegment([]byte(segBatch(valid, tc.item, valid)), events.SegmentBatch, &segMapping, now)
			if err != nil {
				t.Fatalf("error %v", err)
			}
			want := []events.Event{validEv, tc.want, validEv}
			var drops []events.SegmentDrop
			rejected := 0
			if tc.drop != nil {
				want = []events.Event{validEv, validEv}
				d := *tc.drop
				d.Index = 1
				drops = []events.SegmentDrop{d}
				if !d.Ignored {
					rejected = 1
				}
			}
			if !slices.Equal(res.Events, want) {
				t.Errorf("events\n got %+v\nwant %+v", res.Events, want)
			}
			if !slices.Equal(res.Drops, drops) || res.Rejected != rejected || res.Ignored() != len(drops)-rejected {
				t.Errorf("drops %+v (rejected %d), want %+v (rejected %d)", res.Drops, res.Rejected, drops, rejected)
			}
		})
	}
}

// A batch's sentAt corrects the calls without their own, wherever it stands in the
// body; the batch's context and other fields are read past; writeKey is returned.
func TestDecodeSegmentBatchFields(t *testing.T) {
	body := `{"messageId":"b-1","batch":[` +
		`{"type":"page","userId":"u1","properties":{"product_id":"p1"},"timestamp":"2020-01-01T00:00:00Z"},` +
		`{"type":"page","userId":"u1","properties":{"product_id":"p1"},"timestamp":"2020-01-01T00:00:00Z","sentAt":"2020-01-01T00:00:01Z"},` +
		`{"type":"page","userId":"u1","properties":{"product_id":"p1"}}` +
		`],"context":{"library":{"name":"analytics-node"}},"integrations":{},"writeKey":"wk_1","sentAt":"2020-01-01T00:00:10Z"}`
	res, err := events.DecodeSegment([]byte(body), events.SegmentBatch, &segMapping, now)
	if err != nil {
		t.Fatal(err)
	}
	pv := events.Event{UserID: "u1", ProductID: "p1", Type: events.PageView}
	want := []events.Event{pv, pv, pv}
	want[0].TS = nowMs - 10_000
	want[1].TS = nowMs - 1000
	if !slices.Equal(res.Events, want) || len(res.Drops) != 0 {
		t.Errorf("events %+v drops %+v, want %+v", res.Events, res.Drops, want)
	}
	if res.WriteKey != "wk_1" {
		t.Errorf("WriteKey %q, want wk_1", res.WriteKey)
	}

	empty, err := events.DecodeSegment([]byte(` {"batch":[]} `), events.SegmentBatch, &segMapping, now)
	if err != nil || len(empty.Events) != 0 || len(empty.Drops) != 0 {
		t.Errorf("empty batch: %+v, %v; want nothing and no error", empty, err)
	}
}

// A single call: the endpoint gives the type, writeKey sits beside the call's fields.
func TestDecodeSegmentSingle(t *testing.T) {
	body := `{"writeKey":"wk","event":"Product Dwelled","userId":"u1","properties":{"product_id":"p1","duration_ms":20},"messageId":"m1","timestamp":"2020-01-01T00:00:00Z","sentAt":"2020-01-01T00:00:02Z"}`
	res, err := events.DecodeSegment([]byte(body), events.SegmentTrack, &segMapping, now)
	if err != nil {
		t.Fatal(err)
	}
	want := []events.Event{{UserID: "u1", ProductID: "p1", Type: events.Dwell, DurationMs: 20, EventID: "m1", TS: nowMs - 2000}}
	if !slices.Equal(res.Events, want) || res.WriteKey != "wk" {
		t.Errorf("got %+v key %q, want %+v key wk", res.Events, res.WriteKey, want)
	}
	for _, c := range []struct {
		call events.SegmentCall
		want events.SegmentDrop
	}{
		{events.SegmentIdentify, events.SegmentDrop{Ignored: true, Reason: "identify"}},
		{events.SegmentGroup, events.SegmentDrop{Ignored: true, Reason: "group"}},
		{events.SegmentAlias, events.SegmentDrop{Ignored: true, Reason: "alias"}},
	} {
		res, err := events.DecodeSegment([]byte(body), c.call, &segMapping, now)
		if err != nil || len(res.Events) != 0 || !slices.Equal(res.Drops, []events.SegmentDrop{c.want}) {
			t.Errorf("call %d: %+v, %v; want only %+v", c.call, res, err, c.want)
		}
	}
	page, err := events.DecodeSegment([]byte(`{"anonymousId":"a1","properties":{"sku":"s1"},"type":"identify"}`), events.SegmentScreen, &segMapping, now)
	if err != nil || !slices.Equal(page.Events, []events.Event{{UserID: "anon:a1", ProductID: "s1", Type: events.PageView}}) {
		t.Errorf("screen: %+v, %v", page, err)
	}
}

// A body that is not a Segment call fails as a whole, naming what is wrong.
func TestDecodeSegmentRequestErrors(t *testing.T) {
	item := `{"type":"page","userId":"u1","properties":{"product_id":"p1"}}`
	deep := strings.Repeat(`{"a":`, 300) + "1" + strings.Repeat("}", 300)
	cases := []struct {
		name, body string
		call       events.SegmentCall
		msg        string
	}{
		{"empty", "", events.SegmentBatch, "empty body"},
		{"array", "[" + item + "]", events.SegmentBatch, "body must be a JSON object at byte 0"},
		{"no batch", `{"sentAt":"2020-01-01T00:00:00Z"}`, events.SegmentBatch, "batch: is required: an array of calls"},
		{"batch not an array", `{"batch":{}}`, events.SegmentBatch, "batch: must be an array of calls"},
		{"batch twice", `{"batch":[],"batch":[]}`, events.SegmentBatch, "batch: appears more than once"},
		{"trailing data", segBatch(item) + "x", events.SegmentBatch, "unexpected data after JSON value at byte 74"},
		{"unterminated", `{"batch":[` + item, events.SegmentBatch, "unexpected end of JSON array at byte 72"},
		{"invalid UTF-8 in a skipped field", "{\"batch\":[{\"type\":\"page\",\"x\":\"\xff\"}]}", events.SegmentBatch, "invalid UTF-8 in string at byte 30"},
		{"bare word", `{"batch":[{"type":"page","x":nope}]}`, events.SegmentBatch, "invalid JSON value at byte 29"},
		{"nested too deep", segBatch(`{"type":"page","properties":` + deep + `}`), events.SegmentBatch, "JSON nested more than 256 levels at byte 1308"},
		{"batch sentAt not a time", `{"batch":[],"sentAt":"soon"}`, events.SegmentBatch, "sentAt: must be an ISO 8601 time"},
		{"writeKey not a string", `{"batch":[],"writeKey":1}`, events.SegmentBatch, "expected a string at byte 23"},
		{"single call not an object", `"track"`, events.SegmentTrack, "body must be a JSON object at byte 0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := events.DecodeSegment([]byte(tc.body), tc.call, &segMapping, now)
			var e *events.Error
			if !errors.As(err, &e) {
				t.Fatalf("got %+v, %v; want an *events.Error", res, err)
			}
			if e.Error() != tc.msg {
				t.Errorf("error %q (index %d), want %q", e.Error(), e.Index, tc.msg)
			}
			if len(res.Events) != 0 || len(res.Drops) != 0 {
				t.Errorf("result %+v returned with the error", res)
			}
		})
	}
	tooMany := segBatch(slices.Repeat([]string{item}, segMapping.MaxItems+1)...)
	res, err := events.DecodeSegment([]byte(`{"writeKey":"k",`+tooMany[1:]), events.SegmentBatch, &segMapping, now)
	if err != events.ErrTooMany || res.WriteKey != "k" {
		t.Errorf("%d calls: %+v, %v; want ErrTooMany and the writeKey", segMapping.MaxItems+1, res, err)
	}
	if res, err := events.DecodeSegment([]byte(segBatch(slices.Repeat([]string{item}, segMapping.MaxItems)...)), events.SegmentBatch, &segMapping, now); err != nil || len(res.Events) != segMapping.MaxItems {
		t.Errorf("%d calls: %d events, %v; want all", segMapping.MaxItems, len(res.Events), err)
	}
}

// A messageId outside the id alphabet maps to a stable id that is valid.
func TestSegmentEventID(t *testing.T) {
	for _, id := range []string{"", "m-1", "550e8400-e29b-41d4-a716-446655440000", "node-next-1700000000000-a1b2"} {
		if got := events.SegmentEventID(id); got != id {
			t.Errorf("SegmentEventID(%q) = %q, want it unchanged", id, got)
		}
	}
	for _, id := range []string{"{ajs}", "a b", "..", "é", strings.Repeat("x", 129)} {
		got := events.SegmentEventID(id)
		if !events.ValidID(got) || !strings.HasPrefix(got, "h:") || len(got) != 34 {
			t.Errorf("SegmentEventID(%q) = %q, want h: and 32 hex digits", id, got)
		}
		if again := events.SegmentEventID(id); again != got {
			t.Errorf("SegmentEventID(%q) not stable: %q then %q", id, got, again)
		}
	}
	if events.SegmentEventID("a b") == events.SegmentEventID("a  b") {
		t.Error("two messageIds map to one event_id")
	}
}
