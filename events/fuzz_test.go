package events_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
)

const fuzzMaxEvents = 8

// wireEvent is the request contract as encoding/json sees it, for the differential check.
type wireEvent struct {
	UserID     string          `json:"user_id"`
	ProductID  string          `json:"product_id"`
	Type       string          `json:"type"`
	DurationMs int64           `json:"duration_ms"`
	EventID    string          `json:"event_id"`
	TS         json.RawMessage `json:"ts"`
}

// event converts w the way the contract reads it.
func (w wireEvent) event(t *testing.T) events.Event {
	t.Helper()
	ev := events.Event{UserID: w.UserID, ProductID: w.ProductID, DurationMs: w.DurationMs, EventID: w.EventID}
	switch w.Type {
	case "", "click":
		ev.Type = events.Click
	case "page_view":
		ev.Type = events.PageView
	case "dwell":
		ev.Type = events.Dwell
	default:
		t.Fatalf("encoding/json read type %q", w.Type)
	}
	if len(w.TS) > 0 {
		if w.TS[0] == '"' {
			var s string
			if err := json.Unmarshal(w.TS, &s); err != nil {
				t.Fatalf("encoding/json cannot read ts %s: %v", w.TS, err)
			}
			ts, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				t.Fatalf("ts %q is not RFC 3339: %v", s, err)
			}
			ev.TS = ts.UnixMilli()
		} else {
			ms, err := strconv.ParseInt(string(w.TS), 10, 64)
			if err != nil {
				t.Fatalf("ts %s is not an integer: %v", w.TS, err)
			}
			ev.TS = ms
		}
	}
	return ev
}

// stdDecode reads body with encoding/json: one object or an array of objects (JSON), or
// a sequence of objects (NDJSON).
func stdDecode(t *testing.T, body []byte, format events.Format) []events.Event {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var ws []wireEvent
	if format == events.JSON {
		if !json.Valid(body) {
			t.Fatalf("DecodeRequest accepted %q, which encoding/json says is not valid JSON", body)
		}
		trimmed := bytes.TrimLeft(body, " \t\r\n")
		var err error
		if trimmed[0] == '{' {
			var w wireEvent
			err = dec.Decode(&w)
			ws = []wireEvent{w}
		} else {
			err = dec.Decode(&ws)
		}
		if err != nil {
			t.Fatalf("DecodeRequest accepted %q; encoding/json: %v", body, err)
		}
	} else {
		for {
			var w wireEvent
			err := dec.Decode(&w)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("DecodeRequest accepted NDJSON %q; encoding/json: %v", body, err)
			}
			ws = append(ws, w)
		}
	}
	out := make([]events.Event, len(ws))
	for i, w := range ws {
		out[i] = w.event(t)
	}
	return out
}

// fuzzSeeds are representative bodies, valid and not, in the format they are meant for.
var fuzzSeeds = []struct {
	body   string
	ndjson bool
}{
	{`{"user_id":"u1","product_id":"p1"}`, false},
	{`{"user_id":"u1","product_id":"p1","type":"click","event_id":"e-1","ts":"2025-06-01T12:00:00Z"}`, false},
	{`{"user_id":"u1","product_id":"p1","type":"page_view","ts":1748779200000}`, false},
	{`{"user_id":"u1","product_id":"p1","type":"dwell","duration_ms":1500}`, false},
	{`[{"user_id":"a","product_id":"b"},{"user_id":"c","product_id":"d","type":"dwell","duration_ms":86400000}]`, false},
	{" [ {\"user\\u005fid\":\"u\\u0031\", \"product_id\" : \"p:1@x.y-z_\"} ] \n", false},
	{`{"user_id":"u1","product_id":"p1","ts":"2025-06-01T12:00:00.999999999+01:00"}`, false},
	{`[]`, false},
	{``, false},
	{`null`, false},
	{`[[{"user_id":"u1","product_id":"p1"}]]`, false},
	{`{"user_id":"u1","product_id":"p1"} x`, false},
	{`{"user_id":"u1","product_id":"p1","user_id":"u2"}`, false},
	{`{"user_id":"u1","product_id":"p1","foo":1}`, false},
	{`{"user_id":"u1","product_id":"p1","type":"dwell","duration_ms":1e3}`, false},
	{`{"user_id":"u1","product_id":"p1","type":"dwell","duration_ms":"100"}`, false},
	{`{"user_id":"u1","product_id":"p1","type":"dwell","duration_ms":-Infinity}`, false},
	{`{"user_id":"u1","product_id":"p1","duration_ms":5}`, false},
	{`{"user_id":"\ud83d\ude00","product_id":"p1"}`, false},
	{`{"user_id":"\ud83d","product_id":"p1"}`, false},
	{"{\"user_id\":\"\xff\",\"product_id\":\"p1\"}", false},
	{`{"user_id":"u1","product_id":"p1"`, false},
	{`[{"user_id":"u1","product_id":"p1"},]`, false},
	{"{\"user_id\":\"u1\",\"product_id\":\"p1\"}\n{\"user_id\":\"u2\",\"product_id\":\"p2\",\"type\":\"dwell\",\"duration_ms\":7}\n", true},
	{"\r\n{\"user_id\":\"u1\",\"product_id\":\"p1\"}\r\n\r\n{\"user_id\":\"u1\",\"product_id\":\"p1\",\"ts\":1748779200000}", true},
	{"{\"user_id\":\"u1\",\"product_id\":\"p1\"}{\"user_id\":\"u1\",\"product_id\":\"p1\"}\n", true},
	{"[{\"user_id\":\"u1\",\"product_id\":\"p1\"}]\n", true},
	{"\n\n", true},
	{"{\"user_id\":\"u1\",\n\"product_id\":\"p1\"}\n", true},
	{strings.Repeat("{\"user_id\":\"u1\",\"product_id\":\"p1\"}\n", fuzzMaxEvents+1), true},
	{"[" + strings.Repeat("{\"user_id\":\"u1\",\"product_id\":\"p1\"},", fuzzMaxEvents) + "{\"user_id\":\"u1\",\"product_id\":\"p1\"}]", false},
}

// FuzzDecodeRequest checks the request decoder: it never panics; what it accepts is
// valid, survives the stream codec unchanged, and is what encoding/json reads from the
// same bytes; what it rejects comes with an *Error.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s.body), s.ndjson)
	}
	f.Fuzz(func(t *testing.T, body []byte, ndjson bool) {
		format := events.JSON
		if ndjson {
			format = events.NDJSON
		}
		input := slices.Clone(body)
		evs, err := events.DecodeRequest(input, format, fuzzMaxEvents, now)
		if err != nil {
			if evs != nil {
				t.Fatalf("events %+v returned with error %v", evs, err)
			}
			var e *events.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T %v is not an *events.Error", err, err)
			}
			if e.Index < -1 || e.Index >= fuzzMaxEvents || e.Error() == "" {
				t.Fatalf("error %#v: index out of range or empty message", e)
			}
			return
		}
		if len(evs) == 0 || len(evs) > fuzzMaxEvents {
			t.Fatalf("%d events accepted, want 1..%d", len(evs), fuzzMaxEvents)
		}

		// The events must not alias the body, which ingest reuses.
		for i := range input {
			input[i] = 0
		}
		for i, ev := range evs {
			if verr := ev.Validate(now); verr != nil {
				t.Fatalf("event %d %+v accepted but invalid: %v", i, ev, verr)
			}
			got, derr := events.DecodeEntry(strs(t, ev.AppendFields(nil)))
			if derr != nil || got != ev {
				t.Fatalf("event %d %+v through the codec: %+v, %v", i, ev, got, derr)
			}
		}

		std := stdDecode(t, body, format)
		if !slices.Equal(std, evs) {
			t.Fatalf("body %q:\nDecodeRequest %+v\nencoding/json %+v", body, evs, std)
		}
	})
}

var entrySeeds = []string{
	"u\nu1\np\np1\nk\nc",
	"u\nu1\np\np1\nk\nv\nt\n1748779200000\ne\ne-1",
	"u\nu1\np\np1\nk\nd\nd\n1500",
	"e\ne1\nt\n5\nd\n100\nk\nd\np\np1\nu\nu1",
	"u\nu1\np\np1",
	"u\nu1\np",
	"u\nu1\np\np1\nk\nc\nd\n5",
	"u\nu1\np\np1\nk\nd\nd\n0",
	"u\nu 1\np\np1\nk\nc",
	"u\nu1\np\np1\nk\nc\nx\ny",
	"u\nu1\np\np1\nk\nc\nt\n-1",
	"",
}

// FuzzDecodeEntry checks the stream-entry decoder (fields and values joined by '\n'):
// it never panics, every error wraps ErrMalformed, and what it accepts is a valid event
// that encodes back to an entry with the same meaning.
func FuzzDecodeEntry(f *testing.F) {
	for _, s := range entrySeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		kv := strings.Split(s, "\n")
		ev, err := events.DecodeEntry(kv)
		if err != nil {
			if !errors.Is(err, events.ErrMalformed) {
				t.Fatalf("DecodeEntry(%q) error %v does not wrap ErrMalformed", kv, err)
			}
			return
		}
		if ev.TS < 0 {
			t.Fatalf("DecodeEntry(%q) accepted negative ts %d", kv, ev.TS)
		}
		// Entries are not checked against the clock: validate the shape only.
		shape := ev
		shape.TS = 0
		if verr := shape.Validate(now); verr != nil {
			t.Fatalf("DecodeEntry(%q) accepted invalid %+v: %v", kv, ev, verr)
		}
		again, err := events.DecodeEntry(strs(t, ev.AppendFields(nil)))
		if err != nil || again != ev {
			t.Fatalf("DecodeEntry(%q) = %+v; re-encoded it decodes to %+v, %v", kv, ev, again, err)
		}
	})
}

var segmentSeeds = []string{
	`{"batch":[{"type":"track","event":"Product Clicked","userId":"u1","properties":{"product_id":"p1"},"messageId":"m-1","timestamp":"2025-06-01T11:59:00Z"}],"sentAt":"2025-06-01T11:59:01Z","context":{"library":{"name":"analytics-go"}}}`,
	`{"writeKey":"wk","batch":[{"type":"page","anonymousId":"a1","properties":{"sku":"s1"}},{"type":"identify","userId":"u1","traits":{"a":[1,2.5e3,null,true]}}]}`,
	`{"batch":[{"type":"track","event":"Product Dwelled","userId":7,"properties":{"product_id":"p1","duration_ms":1.5e3},"messageId":"{odd id}"},{"type":"screen","userId":"u\u0031","properties":{"product_id":null,"sku":"s"}}]}`,
	`{"batch":[{"type":"track","event":"Other","userId":"u1"},["x"],{"type":"page","userId":"u1","properties":"p"},{"type":"page","userId":"u1","properties":{"product_id":"p1"},"userId":null,"anonymousId":"a"}]}`,
	`{"batch":[{"type":"page","userId":"u1","properties":{"product_id":"p1"},"timestamp":"2025-06-01T11:00:00.123","sentAt":""}]}`,
	`{"batch":[` + strings.Repeat(`{"type":"page","userId":"u1","properties":{"product_id":"p1"}},`, fuzzMaxEvents) + `{}]}`,
	`{"batch":{}}`,
	`{"batch":[],"batch":[]}`,
	`[{"batch":[]}]`,
	`{"batch":[{"type":"page","x":"` + "\xff" + `"}]}`,
	`{"batch":[` + strings.Repeat(`[`, 300) + `]}`,
	`{"event":"Product Clicked","userId":"u1","properties":{"product_id":"p1"}}`,
	``,
}

// FuzzDecodeSegment checks the Segment body decoder: it never panics; an error is an
// *events.Error (or ErrTooMany) with nothing else returned; what it accepts is valid
// JSON, every call of it is either an event or a drop, the events are valid, survive
// the stream codec and do not alias the body, and each event says what encoding/json
// reads from its call (user, product, event_id, type, time). The second argument picks
// the endpoint: a batch, or a single call of one type.
func FuzzDecodeSegment(f *testing.F) {
	for i, s := range segmentSeeds {
		f.Add([]byte(s), uint8(i%2))
	}
	m := &events.SegmentMapping{
		Click:        map[string]bool{"Product Clicked": true},
		View:         map[string]bool{"Product Viewed": true},
		Dwell:        map[string]bool{"Product Dwelled": true},
		MaxItemBytes: 200,
		MaxItems:     fuzzMaxEvents,
	}
	f.Fuzz(func(t *testing.T, body []byte, callByte uint8) {
		call := events.SegmentCall(callByte % 7)
		input := slices.Clone(body)
		res, err := events.DecodeSegment(input, call, m, now)
		if err != nil {
			var e *events.Error
			if !errors.As(err, &e) || e.Error() == "" {
				t.Fatalf("error %T %v is not an *events.Error with a message", err, err)
			}
			if res.Events != nil || res.Drops != nil || res.Rejected != 0 {
				t.Fatalf("result %+v returned with error %v", res, err)
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("DecodeSegment accepted %q, which encoding/json says is not valid JSON", body)
		}
		for i := range input {
			input[i] = 0
		}
		var top map[string]json.RawMessage
		if err := json.Unmarshal(body, &top); err != nil {
			t.Fatalf("accepted %q, not a JSON object to encoding/json: %v", body, err)
		}
		var items []json.RawMessage
		if call == events.SegmentBatch {
			if err := json.Unmarshal(top["batch"], &items); err != nil {
				t.Fatalf("accepted %q, whose batch is not an array to encoding/json: %v", body, err)
			}
		} else {
			items = []json.RawMessage{body}
		}
		if len(res.Events)+len(res.Drops) != len(items) {
			t.Fatalf("%d calls, %d events + %d drops", len(items), len(res.Events), len(res.Drops))
		}
		dropped := map[int]bool{}
		rejected := 0
		for k, d := range res.Drops {
			if d.Index < 0 || d.Index >= len(items) || (k > 0 && d.Index <= res.Drops[k-1].Index) {
				t.Fatalf("drop %+v: index out of order or range", d)
			}
			known := slices.Contains(events.SegmentIgnoredReasons, d.Reason)
			if !d.Ignored {
				rejected++
				known = slices.Contains(events.SegmentRejectedReasons, d.Reason) && d.Msg != ""
			}
			if !known {
				t.Fatalf("drop %+v: unknown reason or no message", d)
			}
			dropped[d.Index] = true
		}
		if rejected != res.Rejected {
			t.Fatalf("Rejected %d, %d drops are rejections", res.Rejected, rejected)
		}
		var batchSentAt string
		if call == events.SegmentBatch && top["sentAt"] != nil {
			json.Unmarshal(top["sentAt"], &batchSentAt)
		}
		k := 0
		for i, raw := range items {
			if dropped[i] {
				continue
			}
			ev := res.Events[k]
			k++
			if verr := ev.Validate(now); verr != nil {
				t.Fatalf("event %+v accepted but invalid: %v", ev, verr)
			}
			got, derr := events.DecodeEntry(strs(t, ev.AppendFields(nil)))
			if derr != nil || got != ev {
				t.Fatalf("event %+v through the codec: %+v, %v", ev, got, derr)
			}
			checkSegmentEvent(t, raw, call, batchSentAt, ev)
		}
	})
}

// checkSegmentEvent checks ev against what encoding/json reads from the call it came from.
func checkSegmentEvent(t *testing.T, raw json.RawMessage, call events.SegmentCall, batchSentAt string, ev events.Event) {
	t.Helper()
	var c struct {
		Type, Event, MessageID, Timestamp, SentAt *string
		UserID, AnonymousID                       json.RawMessage
		Properties                                map[string]json.RawMessage
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		t.Fatalf("call %s: %v", raw, err)
	}
	str := func(v json.RawMessage) string {
		var s string
		if json.Unmarshal(v, &s) != nil {
			return string(v) // an integer id
		}
		return s
	}
	user := str(fields["userId"])
	if user == "" || user == "null" {
		user = events.AnonPrefix + str(fields["anonymousId"])
	}
	json.Unmarshal(fields["properties"], &c.Properties)
	product := str(c.Properties["product_id"])
	if product == "" || product == "null" {
		product = str(c.Properties["sku"])
	}
	typ := str(fields["type"])
	if call != events.SegmentBatch {
		typ = [...]string{"", "track", "page", "screen"}[call]
	}
	want := map[string]events.Type{"page": events.PageView, "screen": events.PageView}[typ]
	if typ == "track" {
		want = map[string]events.Type{"Product Clicked": events.Click, "Product Viewed": events.PageView, "Product Dwelled": events.Dwell}[str(fields["event"])]
	}
	if ev.UserID != user || ev.ProductID != product || ev.Type != want || ev.EventID != events.SegmentEventID(str(fields["messageId"])) {
		t.Fatalf("call %s became %+v; encoding/json reads user %q product %q type %v messageId %q", raw, ev, user, product, want, str(fields["messageId"]))
	}
	ts, sent := str(fields["timestamp"]), str(fields["sentAt"])
	if sent == "" || sent == "null" {
		sent = batchSentAt
	}
	var wantTS int64
	if ts != "" && ts != "null" {
		wantTS = parseISO(t, ts)
		if sent != "" && sent != "null" {
			wantTS = now.UnixMilli() - (parseISO(t, sent) - wantTS)
		}
	}
	if ev.TS != wantTS {
		t.Fatalf("call %s: ts %d, want %d (timestamp %q, sentAt %q)", raw, ev.TS, wantTS, ts, sent)
	}
}

func parseISO(t *testing.T, s string) int64 {
	t.Helper()
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999"} {
		if ts, err := time.Parse(layout, s); err == nil {
			return ts.UnixMilli()
		}
	}
	t.Fatalf("accepted time %q that is not ISO 8601", s)
	return 0
}
