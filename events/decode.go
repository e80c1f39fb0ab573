package events

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// Format is the shape of a request body.
type Format uint8

const (
	// JSON is one event object or a JSON array of event objects.
	JSON Format = iota
	// NDJSON is one event object per line.
	NDJSON
)

// DecodeRequest parses a request body into validated events. It is all-or-nothing: on
// the first malformed or invalid event it returns an *Error naming the event's index
// and the field, and no events. maxEvents bounds the count (ErrTooMany when exceeded).
//
// The decoder is strict where encoding/json is lenient, because a silently dropped or
// misread field is a wrong count: unknown fields, duplicate fields, invalid UTF-8 and
// trailing data are all errors.
func DecodeRequest(body []byte, format Format, maxEvents int, now time.Time) ([]Event, error) {
	d := decoder{buf: body, now: now, max: maxEvents}
	var out []Event
	var err *Error
	if format == NDJSON {
		out, err = d.ndjson()
	} else {
		out, err = d.json()
	}
	if err != nil {
		return nil, err
	}
	if d.tooMany {
		return nil, ErrTooMany
	}
	return out, nil
}

// ErrTooMany is returned when a request holds more events than allowed.
var ErrTooMany = &Error{Index: -1, Msg: "too many events in one request"}

type decoder struct {
	buf     []byte
	pos     int
	now     time.Time
	max     int
	tooMany bool
}

func (d *decoder) fail(index int, msg string) *Error {
	return &Error{Index: index, Msg: msg + " at byte " + strconv.Itoa(d.pos)}
}

func (d *decoder) skipSpace() {
	for d.pos < len(d.buf) {
		switch d.buf[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

func (d *decoder) json() ([]Event, *Error) {
	d.skipSpace()
	if d.pos == len(d.buf) {
		return nil, &Error{Index: -1, Msg: "empty body"}
	}
	var out []Event
	switch d.buf[d.pos] {
	case '{':
		ev, err := d.object(0)
		if err != nil {
			return nil, err
		}
		out = []Event{ev}
	case '[':
		var err *Error
		if out, err = d.array(); err != nil || d.tooMany {
			return nil, err
		}
	default:
		return nil, d.fail(-1, "body must be a JSON object or an array of objects")
	}
	d.skipSpace()
	if d.pos != len(d.buf) {
		return nil, d.fail(-1, "unexpected data after JSON value")
	}
	if len(out) == 0 {
		return nil, &Error{Index: -1, Msg: "no events in request"}
	}
	return out, nil
}

// array parses a JSON array of event objects starting at '['. It stops at the
// (maxEvents+1)th event with d.tooMany set.
func (d *decoder) array() ([]Event, *Error) {
	d.pos++
	d.skipSpace()
	if d.pos < len(d.buf) && d.buf[d.pos] == ']' {
		d.pos++
		return nil, nil
	}
	out := make([]Event, 0, 16)
	for i := 0; ; i++ {
		if i == d.max {
			d.tooMany = true
			return nil, nil
		}
		d.skipSpace()
		if d.pos == len(d.buf) || d.buf[d.pos] != '{' {
			return nil, d.fail(i, "expected an event object")
		}
		ev, err := d.object(i)
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
		if done, err := d.nextElement(); err != nil {
			return nil, err
		} else if done {
			return out, nil
		}
	}
}

// nextElement moves past what follows an array element: done at the closing ']', an
// error for anything but ','.
func (d *decoder) nextElement() (done bool, err *Error) {
	d.skipSpace()
	if d.pos == len(d.buf) {
		return false, d.fail(-1, "unexpected end of JSON array")
	}
	c := d.buf[d.pos]
	d.pos++
	if c == ']' {
		return true, nil
	}
	if c != ',' {
		return false, d.fail(-1, "expected ',' or ']' in array")
	}
	return false, nil
}

func (d *decoder) ndjson() ([]Event, *Error) {
	out := make([]Event, 0, 16)
	for {
		d.skipSpace() // blank lines are allowed between records
		if d.pos == len(d.buf) {
			break
		}
		i := len(out)
		if i == d.max {
			d.tooMany = true
			return nil, nil
		}
		if d.buf[d.pos] != '{' {
			return nil, d.fail(i, "each NDJSON line must be an event object")
		}
		ev, err := d.object(i)
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
		// The rest of the line may hold only spaces.
		for d.pos < len(d.buf) && (d.buf[d.pos] == ' ' || d.buf[d.pos] == '\t' || d.buf[d.pos] == '\r') {
			d.pos++
		}
		if d.pos < len(d.buf) && d.buf[d.pos] != '\n' {
			return nil, d.fail(i, "expected a newline after the event object")
		}
	}
	if len(out) == 0 {
		return nil, &Error{Index: -1, Msg: "empty body"}
	}
	return out, nil
}

// Field bits, to reject duplicates.
const (
	hasUser = 1 << iota
	hasProduct
	hasType
	hasDuration
	hasEventID
	hasTS
)

// object parses one event object starting at '{' and validates it.
func (d *decoder) object(index int) (Event, *Error) {
	var ev Event
	var seen uint8
	d.pos++ // '{'
	d.skipSpace()
	if d.pos < len(d.buf) && d.buf[d.pos] == '}' {
		d.pos++
	} else {
		for {
			d.skipSpace()
			key, err := d.rawString(index)
			if err != nil {
				return ev, err
			}
			d.skipSpace()
			if d.pos == len(d.buf) || d.buf[d.pos] != ':' {
				return ev, d.fail(index, "expected ':' after object key")
			}
			d.pos++
			d.skipSpace()
			var bit uint8
			var ferr *Error
			switch string(key) {
			case "user_id":
				bit = hasUser
				ev.UserID, ferr = d.idValue(index, "user_id")
			case "product_id":
				bit = hasProduct
				ev.ProductID, ferr = d.idValue(index, "product_id")
			case "event_id":
				bit = hasEventID
				ev.EventID, ferr = d.idValue(index, "event_id")
			case "type":
				bit = hasType
				ev.Type, ferr = d.typeValue(index)
			case "duration_ms":
				bit = hasDuration
				ev.DurationMs, ferr = d.durationValue(index)
			case "ts":
				bit = hasTS
				ev.TS, ferr = d.tsValue(index)
			default:
				return ev, &Error{Index: index, Field: strconv.QuoteToASCII(string(key)), Msg: "unknown field"}
			}
			if ferr != nil {
				return ev, ferr
			}
			if seen&bit != 0 {
				return ev, &Error{Index: index, Field: string(key), Msg: "appears more than once"}
			}
			seen |= bit
			d.skipSpace()
			if d.pos == len(d.buf) {
				return ev, d.fail(index, "unexpected end of JSON object")
			}
			c := d.buf[d.pos]
			d.pos++
			if c == '}' {
				break
			}
			if c != ',' {
				return ev, d.fail(index, "expected ',' or '}' in object")
			}
		}
	}
	if seen&hasDuration != 0 && ev.Type != Dwell {
		return ev, &Error{Index: index, Field: "duration_ms", Msg: "is only allowed for type dwell"}
	}
	if err := ev.Validate(d.now); err != nil {
		err.Index = index
		return ev, err
	}
	return ev, nil
}

// rawString parses a JSON string and returns its unescaped bytes. The result aliases
// the input when the string has no escapes.
func (d *decoder) rawString(index int) ([]byte, *Error) {
	if d.pos == len(d.buf) || d.buf[d.pos] != '"' {
		return nil, d.fail(index, "expected a string")
	}
	d.pos++
	start := d.pos
	for d.pos < len(d.buf) {
		c := d.buf[d.pos]
		switch {
		case c == '"':
			s := d.buf[start:d.pos]
			d.pos++
			return s, nil
		case c == '\\':
			return d.escapedString(index, start)
		case c < 0x20:
			return nil, d.fail(index, "control character in string")
		case c < utf8.RuneSelf:
			d.pos++
		default:
			r, size := utf8.DecodeRune(d.buf[d.pos:])
			if r == utf8.RuneError && size == 1 {
				return nil, d.fail(index, "invalid UTF-8 in string")
			}
			d.pos += size
		}
	}
	return nil, d.fail(index, "unterminated string")
}

// escapedString is the slow path of rawString, for strings that contain escapes.
func (d *decoder) escapedString(index, start int) ([]byte, *Error) {
	out := append([]byte(nil), d.buf[start:d.pos]...)
	for d.pos < len(d.buf) {
		c := d.buf[d.pos]
		switch {
		case c == '"':
			d.pos++
			return out, nil
		case c == '\\':
			if d.pos+1 >= len(d.buf) {
				return nil, d.fail(index, "unterminated string")
			}
			e := d.buf[d.pos+1]
			d.pos += 2
			switch e {
			case '"', '\\', '/':
				out = append(out, e)
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r, ok := d.hex4()
				if !ok {
					return nil, d.fail(index, "invalid \\u escape")
				}
				if r >= 0xD800 && r < 0xDC00 { // high surrogate: a low one must follow
					if d.pos+1 < len(d.buf) && d.buf[d.pos] == '\\' && d.buf[d.pos+1] == 'u' {
						d.pos += 2
						lo, ok := d.hex4()
						if !ok || lo < 0xDC00 || lo > 0xDFFF {
							return nil, d.fail(index, "invalid surrogate pair")
						}
						r = 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00)
					} else {
						return nil, d.fail(index, "invalid surrogate pair")
					}
				} else if r >= 0xDC00 && r <= 0xDFFF {
					return nil, d.fail(index, "invalid surrogate pair")
				}
				out = utf8.AppendRune(out, r)
			default:
				return nil, d.fail(index, "invalid escape in string")
			}
		case c < 0x20:
			return nil, d.fail(index, "control character in string")
		case c < utf8.RuneSelf:
			out = append(out, c)
			d.pos++
		default:
			r, size := utf8.DecodeRune(d.buf[d.pos:])
			if r == utf8.RuneError && size == 1 {
				return nil, d.fail(index, "invalid UTF-8 in string")
			}
			out = append(out, d.buf[d.pos:d.pos+size]...)
			d.pos += size
		}
	}
	return nil, d.fail(index, "unterminated string")
}

func (d *decoder) hex4() (rune, bool) {
	if d.pos+4 > len(d.buf) {
		return 0, false
	}
	var r rune
	for _, c := range d.buf[d.pos : d.pos+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	d.pos += 4
	return r, true
}

// wrongType reports a value of the wrong JSON type for field and skips nothing: the
// request is rejected as a whole, so the rest of the body need not be parsed.
func (d *decoder) wrongType(index int, field, want string) *Error {
	return &Error{Index: index, Field: field, Msg: "must be " + want}
}

func (d *decoder) idValue(index int, field string) (string, *Error) {
	if d.pos == len(d.buf) || d.buf[d.pos] != '"' {
		return "", d.wrongType(index, field, "a string")
	}
	s, err := d.rawString(index)
	if err != nil {
		return "", err
	}
	if len(s) == 0 || !ValidID(string(s)) {
		return "", &Error{Index: index, Field: field, Msg: IDRule}
	}
	return string(s), nil
}

func (d *decoder) typeValue(index int) (Type, *Error) {
	if d.pos == len(d.buf) || d.buf[d.pos] != '"' {
		return 0, d.wrongType(index, "type", "a string: click, page_view or dwell")
	}
	s, err := d.rawString(index)
	if err != nil {
		return 0, err
	}
	switch string(s) {
	case typeClick:
		return Click, nil
	case typePageView:
		return PageView, nil
	case typeDwell:
		return Dwell, nil
	}
	return 0, &Error{Index: index, Field: "type", Msg: "must be click, page_view or dwell"}
}

// number scans a JSON number and returns its text and whether it is a plain integer
// (no fraction, no exponent).
func (d *decoder) number(index int, field string) ([]byte, bool, *Error) {
	start := d.pos
	if d.pos < len(d.buf) && d.buf[d.pos] == '-' {
		d.pos++
	}
	digits := d.pos
	for d.pos < len(d.buf) && d.buf[d.pos] >= '0' && d.buf[d.pos] <= '9' {
		d.pos++
	}
	if d.pos == digits {
		return nil, false, d.wrongType(index, field, "a number")
	}
	if d.buf[digits] == '0' && d.pos-digits > 1 {
		return nil, false, d.fail(index, "invalid number (leading zero)")
	}
	integer := true
	if d.pos < len(d.buf) && d.buf[d.pos] == '.' {
		integer = false
		d.pos++
		frac := d.pos
		for d.pos < len(d.buf) && d.buf[d.pos] >= '0' && d.buf[d.pos] <= '9' {
			d.pos++
		}
		if d.pos == frac {
			return nil, false, d.fail(index, "invalid number")
		}
	}
	if d.pos < len(d.buf) && (d.buf[d.pos] == 'e' || d.buf[d.pos] == 'E') {
		integer = false
		d.pos++
		if d.pos < len(d.buf) && (d.buf[d.pos] == '+' || d.buf[d.pos] == '-') {
			d.pos++
		}
		exp := d.pos
		for d.pos < len(d.buf) && d.buf[d.pos] >= '0' && d.buf[d.pos] <= '9' {
			d.pos++
		}
		if d.pos == exp {
			return nil, false, d.fail(index, "invalid number")
		}
	}
	return d.buf[start:d.pos], integer, nil
}

// intValue parses an integer field bounded by lo..hi; anything else (a fraction, an
// exponent, a string, a huge number) gets msg.
func (d *decoder) intValue(index int, field string, lo, hi int64, msg string) (int64, *Error) {
	if d.pos == len(d.buf) || !(d.buf[d.pos] == '-' || (d.buf[d.pos] >= '0' && d.buf[d.pos] <= '9')) {
		return 0, &Error{Index: index, Field: field, Msg: msg}
	}
	text, integer, err := d.number(index, field)
	if err != nil {
		return 0, err
	}
	if !integer || len(text) > 19 {
		return 0, &Error{Index: index, Field: field, Msg: msg}
	}
	n, perr := strconv.ParseInt(string(text), 10, 64)
	if perr != nil || n < lo || n > hi {
		return 0, &Error{Index: index, Field: field, Msg: msg}
	}
	return n, nil
}

func (d *decoder) durationValue(index int) (int64, *Error) {
	return d.intValue(index, "duration_ms", 1, MaxDurationMs,
		"must be an integer from 1 to "+strconv.Itoa(MaxDurationMs))
}

func (d *decoder) tsValue(index int) (int64, *Error) {
	const msg = "must be an RFC 3339 time or Unix milliseconds"
	if d.pos < len(d.buf) && d.buf[d.pos] == '"' {
		s, err := d.rawString(index)
		if err != nil {
			return 0, err
		}
		t, perr := time.Parse(time.RFC3339Nano, string(s))
		if perr != nil {
			return 0, &Error{Index: index, Field: "ts", Msg: msg}
		}
		ms := t.UnixMilli()
		if ms <= 0 {
			return 0, &Error{Index: index, Field: "ts", Msg: "is more than 30 days in the past"}
		}
		return ms, nil
	}
	ms, err := d.intValue(index, "ts", 1, 1<<53, msg)
	if err != nil {
		return 0, err
	}
	return ms, nil
}
