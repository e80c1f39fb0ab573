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
