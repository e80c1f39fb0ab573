package events_test

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/clickstream/pipeline/events"
)

const tsMsg = "must be an RFC 3339 time or Unix milliseconds"

// base holds the two required fields of a valid event.
const base = `"user_id":"u1","product_id":"p1"`

// validObj is a valid event object; it is the event before the one under test in the
// array and NDJSON shapes.
const validObj = `{"user_id":"u0","product_id":"p0"}`

var validEv = events.Event{UserID: "u0", ProductID: "p0"}

func click(user, product string) events.Event {
	return events.Event{UserID: user, ProductID: product}
}

// decodeErr decodes body and checks that it fails with exactly want.
func decodeErr(t *testing.T, body string, format events.Format, max int, want events.Error) {
	t.Helper()
	evs, err := events.DecodeRequest([]byte(body), format, max, now)
	if err == nil {
		t.Fatalf("DecodeRequest(%q) = %+v, nil; want error %#v", body, evs, want)
	}
	if evs != nil {
		t.Errorf("DecodeRequest(%q) returned events %+v with error %v; want none", body, evs, err)
	}
	var got *events.Error
	if !errors.As(err, &got) {
		t.Fatalf("DecodeRequest(%q) error %T %v is not an *events.Error", body, err, err)
	}
	if *got != want {
		t.Fatalf("DecodeRequest(%q) error\n got %#v\nwant %#v", body, *got, want)
	}
}

// decodeOK decodes body and checks that it gives exactly want.
func decodeOK(t *testing.T, body string, format events.Format, max int, want []events.Event) {
	t.Helper()
	evs, err := events.DecodeRequest([]byte(body), format, max, now)
	if err != nil {
		t.Fatalf("DecodeRequest(%q) error %v; want %+v", body, err, want)
	}
	if !slices.Equal(evs, want) {
		t.Fatalf("DecodeRequest(%q)\n got %+v\nwant %+v", body, evs, want)
	}
}

// fieldCase is one event object and what decoding it must give: the event, or an error
// on field with msg. at, when not 0, is the byte offset within obj that a syntax error
// names ("... at byte N"); byte 0 is always '{', where no test case fails.
type fieldCase struct {
	name  string
	obj   string
	want  events.Event
	field string
	msg   string
	at    int
}

func (c fieldCase) isErr() bool { return c.msg != "" }

// run checks the case in the three shapes a request can have: a lone JSON object, the
// second element of a JSON array, and the second line of an NDJSON body. The index and
// byte offset of an error must follow the event.
func (c fieldCase) run(t *testing.T) {
	shapes := []struct {
		name   string
		format events.Format
		prefix string
		suffix string
		index  int
	}{
		{"object", events.JSON, "", "", 0},
		{"array", events.JSON, "[" + validObj + ",", "]", 1},
		{"ndjson", events.NDJSON, validObj + "\n", "\n", 1},
	}
	for _, s := range shapes {
		t.Run(s.name, func(t *testing.T) {
			body := s.prefix + c.obj + s.suffix
			if !c.isErr() {
				want := []events.Event{c.want}
				if s.index == 1 {
					want = []events.Event{validEv, c.want}
				}
				decodeOK(t, body, s.format, 100, want)
				return
			}
			msg := c.msg
			if c.at != 0 {
				msg += " at byte " + strconv.Itoa(len(s.prefix)+c.at)
			}
			decodeErr(t, body, s.format, 100, events.Error{Index: s.index, Field: c.field, Msg: msg})
		})
	}
}

func runFieldCases(t *testing.T, cases []fieldCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, c.run)
	}
}

func TestDecodeIDs(t *testing.T) {
	runFieldCases(t, []fieldCase{
		{name: "valid", obj: `{` + base + `}`, want: click("u1", "p1")},
		{name: "user 128", obj: `{"user_id":"` + id128 + `","product_id":"p1"}`, want: click(id128, "p1")},
		{name: "user alphabet", obj: `{"user_id":"AZaz09._:@-","product_id":"p1"}`, want: click("AZaz09._:@-", "p1")},
		{name: "user escaped", obj: `{"user_id":"u\u0031\/","product_id":"p1"}`, field: "user_id", msg: IDRule},
		{name: "user escaped valid", obj: `{"user_id":"u\u0031","product_id":"p1"}`, want: click("u1", "p1")},
		{name: "user 129", obj: `{"user_id":"` + id129 + `","product_id":"p1"}`, field: "user_id", msg: IDRule},
		{name: "user empty", obj: `{"user_id":"","product_id":"p1"}`, field: "user_id", msg: IDRule},
		{name: "user missing", obj: `{"product_id":"p1"}`, field: "user_id", msg: "is required"},
		{name: "empty object", obj: `{}`, field: "user_id", msg: "is required"},
		{name: "user open brace", obj: `{"user_id":"{","product_id":"p1"}`, field: "user_id", msg: IDRule},
		{name: "user close brace", obj: `{"user_id":"}","product_id":"p1"}`, field: "user_id", msg: IDRule},
		{name: "user hash tag", obj: `{"user_id":"{cs}x","product_id":"p1"}`, field: "user_id", msg: IDRule},
		{name: "user space", obj: `{"user_id":"u 1","product_id":"p1"}`, field: "user_id", msg: IDRule},
		{name: "user escaped tab", obj: `{"user_id":"u\t1","product_id":"p1"}`, field: "user_id", msg: IDRule},
		{name: "user escaped NUL", obj: `{"user_id":"u\u0000","product_id":"p1"}`, field: "user_id", msg: IDRule},
		{name: "user raw tab", obj: "{\"user_id\":\"u\t1\",\"product_id\":\"p1\"}", msg: "control character in string", at: 13},
		{name: "user raw control", obj: "{\"user_id\":\"u\x01\",\"product_id\":\"p1\"}", msg: "control character in string", at: 13},
		{name: "user raw newline", obj: "{\"user_id\":\"u\n\",\"product_id\":\"p1\"}", msg: "control character in string", at: 13},
		{name: "user DEL", obj: "{\"user_id\":\"u\x7f\",\"product_id\":\"p1\"}", field: "user_id", msg: IDRule},
		{name: "user non-ASCII", obj: `{"user_id":"ü","product_id":"p1"}`, field: "user_id", msg: IDRule},
		{name: "user escaped non-ASCII", obj: `{"user_id":"\u00fc","product_id":"p1"}`, field: "user_id", msg: IDRule},
		{name: "user dot", obj: `{"user_id":".","product_id":"p1"}`, field: "user_id", msg: IDRule},
		{name: "user dot dot", obj: `{"user_id":"..","product_id":"p1"}`, field: "user_id", msg: IDRule},
		{name: "user escaped dot dot", obj: `{"user_id":"\u002e.","product_id":"p1"}`, field: "user_id", msg: IDRule},
		{name: "user three dots", obj: `{"user_id":"...","product_id":"p1"}`, want: click("...", "p1")},
		{name: "user emoji pair", obj: `{"user_id":"\ud83d\ude00","product_id":"p1"}`, field: "user_id", msg: IDRule},
		{name: "user number", obj: `{"user_id":1,"product_id":"p1"}`, field: "user_id", msg: "must be a string"},
		{name: "user null", obj: `{"user_id":null,"product_id":"p1"}`, field: "user_id", msg: "must be a string"},
		{name: "user array", obj: `{"user_id":["u1"],"product_id":"p1"}`, field: "user_id", msg: "must be a string"},
		{name: "user object", obj: `{"user_id":{},"product_id":"p1"}`, field: "user_id", msg: "must be a string"},

		{name: "product 128", obj: `{"user_id":"u1","product_id":"` + id128 + `"}`, want: click("u1", id128)},
		{name: "product 129", obj: `{"user_id":"u1","product_id":"` + id129 + `"}`, field: "product_id", msg: IDRule},
		{name: "product empty", obj: `{"user_id":"u1","product_id":""}`, field: "product_id", msg: IDRule},
		{name: "product missing", obj: `{"user_id":"u1"}`, field: "product_id", msg: "is required"},
		{name: "product open brace", obj: `{"user_id":"u1","product_id":"{"}`, field: "product_id", msg: IDRule},
		{name: "product close brace", obj: `{"user_id":"u1","product_id":"}"}`, field: "product_id", msg: IDRule},
		{name: "product space", obj: `{"user_id":"u1","product_id":" "}`, field: "product_id", msg: IDRule},
		{name: "product raw control", obj: "{\"user_id\":\"u1\",\"product_id\":\"\x1f\"}", msg: "control character in string", at: 30},
		{name: "product non-ASCII", obj: `{"user_id":"u1","product_id":"产品"}`, field: "product_id", msg: IDRule},
		{name: "product dot", obj: `{"user_id":"u1","product_id":"."}`, field: "product_id", msg: IDRule},
		{name: "product dot dot", obj: `{"user_id":"u1","product_id":".."}`, field: "product_id", msg: IDRule},
		{name: "product bool", obj: `{"user_id":"u1","product_id":true}`, field: "product_id", msg: "must be a string"},

		{name: "event id", obj: `{` + base + `,"event_id":"e-1"}`, want: events.Event{UserID: "u1", ProductID: "p1", EventID: "e-1"}},
		{name: "event id 128", obj: `{` + base + `,"event_id":"` + id128 + `"}`, want: events.Event{UserID: "u1", ProductID: "p1", EventID: id128}},
		{name: "event id 129", obj: `{` + base + `,"event_id":"` + id129 + `"}`, field: "event_id", msg: IDRule},
		{name: "event id empty", obj: `{` + base + `,"event_id":""}`, field: "event_id", msg: IDRule},
		{name: "event id brace", obj: `{` + base + `,"event_id":"{e}"}`, field: "event_id", msg: IDRule},
		{name: "event id space", obj: `{` + base + `,"event_id":"e 1"}`, field: "event_id", msg: IDRule},
		{name: "event id dot", obj: `{` + base + `,"event_id":"."}`, field: "event_id", msg: IDRule},
		{name: "event id dot dot", obj: `{` + base + `,"event_id":".."}`, field: "event_id", msg: IDRule},
		{name: "event id number", obj: `{` + base + `,"event_id":7}`, field: "event_id", msg: "must be a string"},

		// The first bad field in document order is named, then the contract's order.
		{name: "first bad field user", obj: `{"user_id":"","product_id":"{"}`, field: "user_id", msg: IDRule},
		{name: "first bad field product", obj: `{"product_id":"{","user_id":""}`, field: "product_id", msg: IDRule},
		{name: "contract order", obj: `{"type":"dwell","product_id":"p1"}`, field: "user_id", msg: "is required"},
	})
}

func TestDecodeType(t *testing.T) {
	dwell := func(ms int64) events.Event {
		return events.Event{UserID: "u1", ProductID: "p1", Type: events.Dwell, DurationMs: ms}
	}
	runFieldCases(t, []fieldCase{
		{name: "default click", obj: `{` + base + `}`, want: click("u1", "p1")},
		{name: "click", obj: `{` + base + `,"type":"click"}`, want: click("u1", "p1")},
		{name: "page view", obj: `{` + base + `,"type":"page_view"}`, want: events.Event{UserID: "u1", ProductID: "p1", Type: events.PageView}},
		{name: "page view escaped", obj: `{` + base + `,"type":"page\u005fview"}`, want: events.Event{UserID: "u1", ProductID: "p1", Type: events.PageView}},
		{name: "dwell", obj: `{` + base + `,"type":"dwell","duration_ms":1500}`, want: dwell(1500)},
		{name: "dwell duration first", obj: `{"duration_ms":1500,"type":"dwell",` + base + `}`, want: dwell(1500)},
		{name: "unknown type", obj: `{` + base + `,"type":"purchase"}`, field: "type", msg: typeMsg},
		{name: "type case", obj: `{` + base + `,"type":"Click"}`, field: "type", msg: typeMsg},
		{name: "type empty", obj: `{` + base + `,"type":""}`, field: "type", msg: typeMsg},
		{name: "type padded", obj: `{` + base + `,"type":" click"}`, field: "type", msg: typeMsg},
		{name: "type number", obj: `{` + base + `,"type":0}`, field: "type", msg: "must be a string: click, page_view or dwell"},
		{name: "type null", obj: `{` + base + `,"type":null}`, field: "type", msg: "must be a string: click, page_view or dwell"},
	})
}

func TestDecodeDuration(t *testing.T) {
	dwell := func(ms int64) events.Event {
		return events.Event{UserID: "u1", ProductID: "p1", Type: events.Dwell, DurationMs: ms}
	}
	// d is a dwell event whose duration_ms is v; the value starts at byte 30.
	d := func(v string) string { return `{"type":"dwell","duration_ms":` + v + `,` + base + `}` }
	runFieldCases(t, []fieldCase{
		{name: "1", obj: d("1"), want: dwell(1)},
		{name: "max", obj: d("86400000"), want: dwell(86_400_000)},
		{name: "spaces", obj: `{"type":"dwell","duration_ms" : 250 ,` + base + `}`, want: dwell(250)},
		{name: "missing", obj: `{"type":"dwell",` + base + `}`, field: "duration_ms", msg: "is required for type dwell"},
		{name: "0", obj: d("0"), field: "duration_ms", msg: durationMsg},
		{name: "-1", obj: d("-1"), field: "duration_ms", msg: durationMsg},
		{name: "-0", obj: d("-0"), field: "duration_ms", msg: durationMsg},
		{name: "max+1", obj: d("86400001"), field: "duration_ms", msg: durationMsg},
		{name: "fraction", obj: d("1.5"), field: "duration_ms", msg: durationMsg},
		{name: "integral fraction", obj: d("100.0"), field: "duration_ms", msg: durationMsg},
		{name: "exponent", obj: d("1e3"), field: "duration_ms", msg: durationMsg},
		{name: "upper exponent", obj: d("1E3"), field: "duration_ms", msg: durationMsg},
		{name: "negative exponent", obj: d("10e-1"), field: "duration_ms", msg: durationMsg},
		{name: "huge exponent", obj: d("1e400"), field: "duration_ms", msg: durationMsg},
		{name: "int64 max", obj: d("9223372036854775807"), field: "duration_ms", msg: durationMsg},
		{name: "int64 max+1", obj: d("9223372036854775808"), field: "duration_ms", msg: durationMsg},
		{name: "int64 min-1", obj: d("-9223372036854775809"), field: "duration_ms", msg: durationMsg},
		{name: "20 digits", obj: d("99999999999999999999"), field: "duration_ms", msg: durationMsg},
		{name: "400 digits", obj: d(strings.Repeat("9", 400)), field: "duration_ms", msg: durationMsg},
		{name: "string", obj: d(`"100"`), field: "duration_ms", msg: durationMsg},
		{name: "NaN", obj: d("NaN"), field: "duration_ms", msg: durationMsg},
		{name: "Infinity", obj: d("Infinity"), field: "duration_ms", msg: durationMsg},
		{name: "null", obj: d("null"), field: "duration_ms", msg: durationMsg},
		{name: "true", obj: d("true"), field: "duration_ms", msg: durationMsg},
		{name: "plus sign", obj: d("+5"), field: "duration_ms", msg: durationMsg},
		{name: "-Infinity", obj: d("-Infinity"), field: "duration_ms", msg: "must be a number"},
		{name: "leading zero", obj: d("01"), msg: "invalid number (leading zero)", at: 32},
		{name: "dangling dot", obj: d("1."), msg: "invalid number", at: 32},
		{name: "dangling exponent", obj: d("1e"), msg: "invalid number", at: 32},
		{name: "dangling exponent sign", obj: d("1e+"), msg: "invalid number", at: 33},
		{name: "hex", obj: d("0x10"), field: "duration_ms", msg: durationMsg},
		{name: "letter after digits", obj: d("1x"), msg: "expected ',' or '}' in object", at: 32},

		{name: "on click", obj: `{"type":"click","duration_ms":5,` + base + `}`, field: "duration_ms", msg: "is only allowed for type dwell"},
		{name: "on default click", obj: `{"duration_ms":5,` + base + `}`, field: "duration_ms", msg: "is only allowed for type dwell"},
		{name: "on page view", obj: `{"duration_ms":5,"type":"page_view",` + base + `}`, field: "duration_ms", msg: "is only allowed for type dwell"},
		{name: "0 on click", obj: `{"type":"click","duration_ms":0,` + base + `}`, field: "duration_ms", msg: durationMsg},
	})
}

func TestDecodeTS(t *testing.T) {
	at := func(ms int64) events.Event { return events.Event{UserID: "u1", ProductID: "p1", TS: ms} }
	ts := func(v string) string { return `{` + base + `,"ts":` + v + `}` }
	ms := func(v int64) string { return ts(strconv.FormatInt(v, 10)) }
	const hour = int64(3_600_000)
	const days30 = 30 * 24 * hour
	runFieldCases(t, []fieldCase{
		{name: "RFC 3339 now", obj: ts(`"2025-06-01T12:00:00Z"`), want: at(nowMs)},
		{name: "RFC 3339 nanos", obj: ts(`"2025-06-01T12:00:00.123456789Z"`), want: at(nowMs + 123)},
		{name: "RFC 3339 offset", obj: ts(`"2025-06-01T14:00:00+02:00"`), want: at(nowMs)},
		{name: "RFC 3339 1h ahead", obj: ts(`"2025-06-01T13:00:00Z"`), want: at(nowMs + hour)},
		{name: "RFC 3339 past 1h", obj: ts(`"2025-06-01T13:00:00.001Z"`), field: "ts", msg: "is more than 1h in the future"},
		{name: "RFC 3339 30d ago", obj: ts(`"2025-05-02T12:00:00Z"`), want: at(nowMs - days30)},
		{name: "RFC 3339 30d1ms ago", obj: ts(`"2025-05-02T11:59:59.999Z"`), field: "ts", msg: "is more than 30 days in the past"},
		{name: "RFC 3339 epoch", obj: ts(`"1970-01-01T00:00:00Z"`), field: "ts", msg: "is more than 30 days in the past"},
		{name: "RFC 3339 before epoch", obj: ts(`"1969-12-31T23:59:59Z"`), field: "ts", msg: "is more than 30 days in the past"},
		{name: "RFC 3339 year 1", obj: ts(`"0001-01-01T00:00:00Z"`), field: "ts", msg: "is more than 30 days in the past"},
		{name: "RFC 3339 escaped", obj: ts(`"2025-06-01T12:00:00\u005a"`), want: at(nowMs)},
		{name: "date only", obj: ts(`"2025-06-01"`), field: "ts", msg: tsMsg},
		{name: "space separator", obj: ts(`"2025-06-01 12:00:00Z"`), field: "ts", msg: tsMsg},
		{name: "no zone", obj: ts(`"2025-06-01T12:00:00"`), field: "ts", msg: tsMsg},
		{name: "ms as string", obj: ts(`"` + strconv.FormatInt(nowMs, 10) + `"`), field: "ts", msg: tsMsg},
		{name: "empty string", obj: ts(`""`), field: "ts", msg: tsMsg},
		{name: "word", obj: ts(`"yesterday"`), field: "ts", msg: tsMsg},

		{name: "ms now", obj: ms(nowMs), want: at(nowMs)},
		{name: "ms 1h ahead", obj: ms(nowMs + hour), want: at(nowMs + hour)},
		{name: "ms 1h1ms ahead", obj: ms(nowMs + hour + 1), field: "ts", msg: "is more than 1h in the future"},
		{name: "ms 30d ago", obj: ms(nowMs - days30), want: at(nowMs - days30)},
		{name: "ms 30d1ms ago", obj: ms(nowMs - days30 - 1), field: "ts", msg: "is more than 30 days in the past"},
		{name: "ms 1", obj: ms(1), field: "ts", msg: "is more than 30 days in the past"},
		{name: "ms 2^53", obj: ms(1 << 53), field: "ts", msg: "is more than 1h in the future"},
		{name: "ms 2^53+1", obj: ms(1<<53 + 1), field: "ts", msg: tsMsg},
		{name: "ms 0", obj: ms(0), field: "ts", msg: tsMsg},
		{name: "ms -1", obj: ms(-1), field: "ts", msg: tsMsg},
		{name: "seconds fraction", obj: ts("1748779200.5"), field: "ts", msg: tsMsg},
		{name: "ms exponent", obj: ts("1.7487792e12"), field: "ts", msg: tsMsg},
		{name: "ms fraction", obj: ts(strconv.FormatInt(nowMs, 10) + ".0"), field: "ts", msg: tsMsg},
		{name: "huge", obj: ts(strings.Repeat("9", 30)), field: "ts", msg: tsMsg},
		{name: "null", obj: ts("null"), field: "ts", msg: tsMsg},
		{name: "bool", obj: ts("false"), field: "ts", msg: tsMsg},
		{name: "object", obj: ts("{}"), field: "ts", msg: tsMsg},
	})
}

func TestDecodeFields(t *testing.T) {
	runFieldCases(t, []fieldCase{
		{name: "all fields", obj: `{"event_id":"e1","ts":"2025-06-01T11:00:00Z","duration_ms":9,"type":"dwell","product_id":"p1","user_id":"u1"}`,
			want: events.Event{UserID: "u1", ProductID: "p1", Type: events.Dwell, DurationMs: 9, EventID: "e1", TS: nowMs - 3_600_000}},
		{name: "whitespace", obj: "{ \t\r\n\"user_id\" \n: \"u1\" ,\r\n \"product_id\":\"p1\"\t}", want: click("u1", "p1")},
		{name: "escaped key", obj: `{"user\u005fid":"u1","product_id":"p1"}`, want: click("u1", "p1")},
		{name: "solidus escaped key", obj: `{"user_id":"u1","product\/id":"p1"}`, field: `"product/id"`, msg: "unknown field"},

		{name: "unknown field", obj: `{` + base + `,"foo":1}`, field: `"foo"`, msg: "unknown field"},
		{name: "unknown field first", obj: `{"foo":{"bar":[1,2]},` + base + `}`, field: `"foo"`, msg: "unknown field"},
		{name: "unknown field case", obj: `{"User_ID":"u1","product_id":"p1"}`, field: `"User_ID"`, msg: "unknown field"},
		{name: "unknown field camel", obj: `{"userId":"u1","product_id":"p1"}`, field: `"userId"`, msg: "unknown field"},
		{name: "unknown field empty", obj: `{"":"u1",` + base + `}`, field: `""`, msg: "unknown field"},
		{name: "unknown field non-ASCII", obj: `{"ü":1,` + base + `}`, field: `"\u00fc"`, msg: "unknown field"},
		{name: "unknown field NUL", obj: `{"user_id\u0000":"u1"}`, field: `"user_id\x00"`, msg: "unknown field"},

		{name: "duplicate user", obj: `{"user_id":"u1","product_id":"p1","user_id":"u1"}`, field: "user_id", msg: "appears more than once"},
		{name: "duplicate user escaped", obj: `{"user_id":"u1","product_id":"p1","user\u005fid":"u2"}`, field: "user_id", msg: "appears more than once"},
		{name: "duplicate product", obj: `{"product_id":"p1","user_id":"u1","product_id":"p2"}`, field: "product_id", msg: "appears more than once"},
		{name: "duplicate type", obj: `{` + base + `,"type":"dwell","duration_ms":5,"type":"dwell"}`, field: "type", msg: "appears more than once"},
		{name: "duplicate type differs", obj: `{` + base + `,"type":"click","type":"page_view"}`, field: "type", msg: "appears more than once"},
		{name: "duplicate duration", obj: `{` + base + `,"type":"dwell","duration_ms":5,"duration_ms":5}`, field: "duration_ms", msg: "appears more than once"},
		{name: "duplicate event id", obj: `{` + base + `,"event_id":"e1","event_id":"e2"}`, field: "event_id", msg: "appears more than once"},
		{name: "duplicate ts", obj: `{` + base + `,"ts":"2025-06-01T12:00:00Z","ts":"2025-06-01T12:00:00Z"}`, field: "ts", msg: "appears more than once"},

		// `{"user_id":"` is 12 bytes.
		{name: "invalid UTF-8", obj: "{\"user_id\":\"\xff\",\"product_id\":\"p1\"}", msg: "invalid UTF-8 in string", at: 12},
		{name: "truncated UTF-8", obj: "{\"user_id\":\"\xc3\",\"product_id\":\"p1\"}", msg: "invalid UTF-8 in string", at: 12},
		{name: "overlong UTF-8", obj: "{\"user_id\":\"\xc0\xaf\",\"product_id\":\"p1\"}", msg: "invalid UTF-8 in string", at: 12},
		{name: "UTF-8 surrogate", obj: "{\"user_id\":\"\xed\xa0\x80\",\"product_id\":\"p1\"}", msg: "invalid UTF-8 in string", at: 12},
		{name: "invalid UTF-8 after escape", obj: "{\"user_id\":\"\\n\xff\",\"product_id\":\"p1\"}", msg: "invalid UTF-8 in string", at: 14},
		{name: "invalid UTF-8 in key", obj: "{\"\xff\":1}", msg: "invalid UTF-8 in string", at: 2},
		{name: "lone high surrogate", obj: `{"user_id":"\ud83d","product_id":"p1"}`, msg: "invalid surrogate pair", at: 18},
		{name: "high surrogate then letter", obj: `{"user_id":"\ud83dx","product_id":"p1"}`, msg: "invalid surrogate pair", at: 18},
		{name: "two high surrogates", obj: `{"user_id":"\ud83d\ud83d","product_id":"p1"}`, msg: "invalid surrogate pair", at: 24},
		{name: "lone low surrogate", obj: `{"user_id":"\ude00","product_id":"p1"}`, msg: "invalid surrogate pair", at: 18},
		{name: "short unicode escape", obj: `{"user_id":"\u12","product_id":"p1"}`, msg: `invalid \u escape`, at: 14},
		{name: "bad unicode escape", obj: `{"user_id":"\u12g4","product_id":"p1"}`, msg: `invalid \u escape`, at: 14},
		{name: "bad escape", obj: `{"user_id":"\x41","product_id":"p1"}`, msg: "invalid escape in string", at: 14},
		{name: "control after escape", obj: "{\"user_id\":\"\\n\x01\",\"product_id\":\"p1\"}", msg: "control character in string", at: 14},
	})
}

// TestDecodeStructure covers the shape of a JSON body: errors that belong to no event
// have Index -1.
func TestDecodeStructure(t *testing.T) {
	obj := `{` + base + `}`
	n := len(obj)
	for _, tc := range []struct {
		name  string
		body  string
		want  []events.Event
		index int
		field string
		msg   string
	}{
		{name: "object", body: obj, want: []events.Event{click("u1", "p1")}},
		{name: "object in whitespace", body: " \r\n\t" + obj + "\n\n", want: []events.Event{click("u1", "p1")}},
		{name: "array of one", body: "[" + obj + "]", want: []events.Event{click("u1", "p1")}},
		{name: "array", body: `[ {"user_id":"a","product_id":"b"} ,` + "\n" + `{"user_id":"c","product_id":"d","type":"page_view"} ]`,
			want: []events.Event{click("a", "b"), {UserID: "c", ProductID: "d", Type: events.PageView}}},

		{name: "empty body", body: "", index: -1, msg: "empty body"},
		{name: "blank body", body: " \r\n\t ", index: -1, msg: "empty body"},
		{name: "empty array", body: "[]", index: -1, msg: "no events in request"},
		{name: "blank array", body: " [ \n ] ", index: -1, msg: "no events in request"},
		{name: "null", body: "null", index: -1, msg: "body must be a JSON object or an array of objects at byte 0"},
		{name: "string", body: `"u1"`, index: -1, msg: "body must be a JSON object or an array of objects at byte 0"},
		{name: "number", body: " 1", index: -1, msg: "body must be a JSON object or an array of objects at byte 1"},
		{name: "BOM", body: "\xef\xbb\xbf" + obj, index: -1, msg: "body must be a JSON object or an array of objects at byte 0"},
		{name: "nested array", body: "[[" + obj + "]]", index: 0, msg: "expected an event object at byte 1"},
		{name: "array of numbers", body: "[1]", index: 0, msg: "expected an event object at byte 1"},
		{name: "array of null", body: "[" + obj + ",null]", index: 1, msg: "expected an event object at byte " + strconv.Itoa(n+2)},
		{name: "trailing comma", body: "[" + obj + ",]", index: 1, msg: "expected an event object at byte " + strconv.Itoa(n+2)},
		{name: "open array", body: "[", index: 0, msg: "expected an event object at byte 1"},
		{name: "unclosed array", body: "[" + obj, index: -1, msg: "unexpected end of JSON array at byte " + strconv.Itoa(n+1)},
		{name: "unclosed array comma", body: "[" + obj + ",", index: 1, msg: "expected an event object at byte " + strconv.Itoa(n+2)},
		{name: "missing comma", body: "[" + obj + " " + obj + "]", index: -1, msg: "expected ',' or ']' in array at byte " + strconv.Itoa(n+3)},
		{name: "trailing garbage", body: obj + "x", index: -1, msg: "unexpected data after JSON value at byte " + strconv.Itoa(n)},
		{name: "trailing NUL", body: obj + "\x00", index: -1, msg: "unexpected data after JSON value at byte " + strconv.Itoa(n)},
		{name: "two objects", body: obj + "\n" + obj, index: -1, msg: "unexpected data after JSON value at byte " + strconv.Itoa(n+1)},
		{name: "extra bracket", body: "[" + obj + "]]", index: -1, msg: "unexpected data after JSON value at byte " + strconv.Itoa(n+2)},
		{name: "array then garbage", body: "[" + obj + "] {}", index: -1, msg: "unexpected data after JSON value at byte " + strconv.Itoa(n+3)},

		{name: "truncated after value", body: `{"user_id":"u1"`, index: 0, msg: "unexpected end of JSON object at byte 15"},
		{name: "truncated in string", body: `{"user_id":"u1`, index: 0, msg: "unterminated string at byte 14"},
		{name: "truncated in escape", body: `{"user_id":"u1\`, index: 0, msg: "unterminated string at byte 14"},
		{name: "truncated after escape", body: `{"user_id":"u\n`, index: 0, msg: "unterminated string at byte 15"},
		{name: "truncated after colon", body: `{"user_id":`, index: 0, field: "user_id", msg: "must be a string"},
		{name: "truncated after key", body: `{"user_id"`, index: 0, msg: "expected ':' after object key at byte 10"},
		{name: "truncated in key", body: `{"user_`, index: 0, msg: "unterminated string at byte 7"},
		{name: "truncated after brace", body: `{`, index: 0, msg: "expected a string at byte 1"},
		{name: "truncated in number", body: `{"type":"dwell","duration_ms":12`, index: 0, msg: "unexpected end of JSON object at byte 32"},
		{name: "truncated after comma", body: `{"user_id":"u1",`, index: 0, msg: "expected a string at byte 16"},
		{name: "missing colon", body: `{"user_id" "u1"}`, index: 0, msg: "expected ':' after object key at byte 11"},
		{name: "trailing comma in object", body: `{"user_id":"u1",}`, index: 0, msg: "expected a string at byte 16"},
		{name: "semicolon", body: `{"user_id":"u1";"product_id":"p1"}`, index: 0, msg: "expected ',' or '}' in object at byte 16"},
		{name: "single quotes", body: `{'user_id':'u1'}`, index: 0, msg: "expected a string at byte 1"},
		{name: "bare key", body: `{user_id:"u1"}`, index: 0, msg: "expected a string at byte 1"},
		{name: "comment", body: `{/* */"user_id":"u1"}`, index: 0, msg: "expected a string at byte 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.msg == "" {
				decodeOK(t, tc.body, events.JSON, 100, tc.want)
				return
			}
			decodeErr(t, tc.body, events.JSON, 100, events.Error{Index: tc.index, Field: tc.field, Msg: tc.msg})
		})
	}
}

func TestDecodeNDJSONStructure(t *testing.T) {
	obj := `{` + base + `}`
	n := len(obj)
	ev := click("u1", "p1")
	for _, tc := range []struct {
		name  string
		body  string
		want  []events.Event
		index int
		field string
		msg   string
	}{
		{name: "one line", body: obj + "\n", want: []events.Event{ev}},
		{name: "no final newline", body: obj, want: []events.Event{ev}},
		{name: "two lines", body: obj + "\n" + validObj, want: []events.Event{ev, validEv}},
		{name: "CRLF", body: obj + "\r\n" + validObj + "\r\n", want: []events.Event{ev, validEv}},
		{name: "blank lines", body: "\n\n" + obj + "\n \t\n\r\n" + validObj + "\n\n", want: []events.Event{ev, validEv}},
		{name: "padded lines", body: "  " + obj + " \t \n\t" + validObj + "  ", want: []events.Event{ev, validEv}},
		{name: "three lines", body: validObj + "\n" + obj + "\n" + validObj + "\n", want: []events.Event{validEv, ev, validEv}},

		{name: "empty", body: "", index: -1, msg: "empty body"},
		{name: "blank", body: "\n\r\n \t\n", index: -1, msg: "empty body"},
		{name: "two objects on a line", body: obj + obj + "\n", index: 0, msg: "expected a newline after the event object at byte " + strconv.Itoa(n)},
		{name: "comma between objects", body: obj + "," + obj + "\n", index: 0, msg: "expected a newline after the event object at byte " + strconv.Itoa(n)},
		{name: "garbage after object", body: obj + " x\n", index: 0, msg: "expected a newline after the event object at byte " + strconv.Itoa(n+1)},
		{name: "garbage on second line", body: obj + "\n" + validObj + "x", index: 1, msg: "expected a newline after the event object at byte " + strconv.Itoa(2*n+1)},
		{name: "array line", body: "[" + obj + "]\n", index: 0, msg: "each NDJSON line must be an event object at byte 0"},
		{name: "array on second line", body: obj + "\n[" + obj + "]\n", index: 1, msg: "each NDJSON line must be an event object at byte " + strconv.Itoa(n+1)},
		{name: "null line", body: obj + "\nnull\n", index: 1, msg: "each NDJSON line must be an event object at byte " + strconv.Itoa(n+1)},
		{name: "invalid third line", body: obj + "\n" + obj + "\n" + `{"user_id":"u1"}` + "\n", index: 2, field: "product_id", msg: "is required"},
		{name: "truncated second line", body: obj + "\n" + `{"user_id":"u1"`, index: 1, msg: "unexpected end of JSON object at byte " + strconv.Itoa(n+1+15)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.msg == "" {
				decodeOK(t, tc.body, events.NDJSON, 100, tc.want)
				return
			}
			decodeErr(t, tc.body, events.NDJSON, 100, events.Error{Index: tc.index, Field: tc.field, Msg: tc.msg})
		})
	}
}

// TestDecodeFirstBadEvent checks that the error names the first bad event, not a later
// one, in both formats.
func TestDecodeFirstBadEvent(t *testing.T) {
	evs := []string{
		validObj,
		validObj,
		`{"user_id":"u1","product_id":"p1","type":"scroll"}`,
		`{"user_id":"{bad}","product_id":"p1"}`,
		`{"user_id":"u1"}`,
	}
	want := events.Error{Index: 2, Field: "type", Msg: typeMsg}
	decodeErr(t, "["+strings.Join(evs, ",")+"]", events.JSON, 100, want)
	decodeErr(t, strings.Join(evs, "\n"), events.NDJSON, 100, want)
}

func TestDecodeTooMany(t *testing.T) {
	obj := `{` + base + `}`
	bad := `{"user_id":"u1"}`
	two := []events.Event{click("u1", "p1"), click("u1", "p1")}
	for _, tc := range []struct {
		name   string
		format events.Format
		body   string
		max    int
		want   []events.Event
		err    *events.Error // nil with want nil: ErrTooMany
	}{
		{name: "json at max", format: events.JSON, body: "[" + obj + "," + obj + "]", max: 2, want: two},
		{name: "json over max", format: events.JSON, body: "[" + obj + "," + obj + "," + obj + "]", max: 2},
		{name: "json over max by bad event", format: events.JSON, body: "[" + obj + "," + obj + "," + bad + "]", max: 2},
		{name: "json over max unterminated", format: events.JSON, body: "[" + obj + "," + obj + ",", max: 2},
		{name: "json bad event before max", format: events.JSON, body: "[" + obj + "," + bad + "," + obj + "]", max: 2,
			err: &events.Error{Index: 1, Field: "product_id", Msg: "is required"}},
		{name: "json object max 1", format: events.JSON, body: obj, max: 1, want: two[:1]},
		{name: "json array max 1", format: events.JSON, body: "[" + obj + "," + obj + "]", max: 1},
		{name: "ndjson at max", format: events.NDJSON, body: obj + "\n" + obj + "\n\n", max: 2, want: two},
		{name: "ndjson over max", format: events.NDJSON, body: obj + "\n" + obj + "\n" + obj + "\n", max: 2},
		{name: "ndjson over max by bad event", format: events.NDJSON, body: obj + "\n" + obj + "\n" + bad, max: 2},
		{name: "ndjson bad event before max", format: events.NDJSON, body: bad + "\n" + obj + "\n" + obj, max: 2,
			err: &events.Error{Index: 0, Field: "product_id", Msg: "is required"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.want != nil {
				decodeOK(t, tc.body, tc.format, tc.max, tc.want)
				return
			}
			if tc.err != nil {
				decodeErr(t, tc.body, tc.format, tc.max, *tc.err)
				return
			}
			evs, err := events.DecodeRequest([]byte(tc.body), tc.format, tc.max, now)
			if err != events.ErrTooMany || !errors.Is(err, events.ErrTooMany) || evs != nil {
				t.Fatalf("DecodeRequest(max %d) = %+v, %v; want nil, ErrTooMany", tc.max, evs, err)
			}
			var e *events.Error
			if !errors.As(err, &e) || e.Index != -1 || e.Field != "" {
				t.Fatalf("ErrTooMany = %#v; want an *Error with Index -1 and no field", err)
			}
		})
	}
}

// TestDecodeCopiesStrings checks that the events do not alias the body: ingest reuses
// body buffers from a pool.
func TestDecodeCopiesStrings(t *testing.T) {
	body := []byte(`[{"user_id":"u1","product_id":"p1","event_id":"e1"},{"user_id":"u\u0032","product_id":"p2"}]`)
	evs, err := events.DecodeRequest(body, events.JSON, 10, now)
	if err != nil {
		t.Fatal(err)
	}
	for i := range body {
		body[i] = 'x'
	}
	want := []events.Event{{UserID: "u1", ProductID: "p1", EventID: "e1"}, click("u2", "p2")}
	if !slices.Equal(evs, want) {
		t.Fatalf("after the body was overwritten the events are %+v, want %+v", evs, want)
	}
}
