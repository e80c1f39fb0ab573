package events

import (
	"crypto/sha256"
	"encoding/hex"
	"math"
	"strconv"
	"time"
)

// This file reads the body of Segment's HTTP Tracking API (the calls every Segment SDK,
// and RudderStack's, sends) and maps each call to the event contract. Unlike
// DecodeRequest it is not all-or-nothing: the SDKs resend a whole batch that gets an
// error up to 10 times, so one call that cannot be counted must not fail the others.
// Each call of a batch is counted (an Event), ignored (it says nothing this pipeline
// counts: identify, group, alias, a track of another name) or rejected (it should be
// counted but cannot be: no user, no product, a bad duration or timestamp), and the
// ignored and rejected ones come back with their index and reason. Only a body that is
// not JSON, or whose shape is wrong as a whole, fails the request.
//
// It is lenient where DecodeRequest is strict, as Segment is: unknown fields (traits,
// context, integrations, originalTimestamp, …) are skipped, and a duplicate field keeps
// its last value, as encoding/json does. It is still a strict JSON reader: invalid
// JSON or UTF-8 anywhere in the body fails the request.

// SegmentCall is the Segment endpoint a body was posted to, which decides its shape: a
// batch ({"batch":[…]}) or a single call of one type.
type SegmentCall uint8

// The endpoints. Batch is /v1/batch and /v1/import.
const (
	SegmentBatch SegmentCall = iota
	SegmentTrack
	SegmentPage
	SegmentScreen
	SegmentIdentify
	SegmentGroup
	SegmentAlias
)

// segmentTypes are the "type" values of batch items, indexed by SegmentCall.
var segmentTypes = [...]string{SegmentTrack: "track", SegmentPage: "page", SegmentScreen: "screen",
	SegmentIdentify: "identify", SegmentGroup: "group", SegmentAlias: "alias"}

// SegmentMapping says which track calls become which events, and bounds a body.
type SegmentMapping struct {
	Click map[string]bool // track names counted as clicks (SEGMENT_CLICK_EVENTS)
	View  map[string]bool // as page views (SEGMENT_VIEW_EVENTS)
	Dwell map[string]bool // as dwell, with properties.duration_ms (SEGMENT_DWELL_EVENTS)

	MaxItemBytes int // a call of a batch larger than this is rejected (Segment: 32 KB per call)
	MaxItems     int // a batch of more calls fails with ErrTooMany (2,500)
}

// Reasons a call is ignored or rejected: stable labels, for the metrics and the answer.
const (
	// Ignored: the call says nothing this pipeline counts.
	SegmentIgnoredIdentify = "identify"
	SegmentIgnoredGroup    = "group"
	SegmentIgnoredAlias    = "alias"
	SegmentIgnoredTrack    = "track_name" // a track call of a name no SEGMENT_*_EVENTS lists

	// Rejected: the call maps to an event, which is invalid.
	SegmentRejectedType      = "type"       // no type, or one Segment does not define
	SegmentRejectedEvent     = "event"      // a track call without an event name
	SegmentRejectedUser      = "user"       // no userId or anonymousId, or not a valid id
	SegmentRejectedProduct   = "product"    // no properties.product_id or sku, or not a valid id
	SegmentRejectedDuration  = "duration"   // a dwell without a valid properties.duration_ms
	SegmentRejectedTimestamp = "timestamp"  // timestamp or sentAt unreadable, or out of bounds
	SegmentRejectedMessageID = "message_id" // messageId not a string of at most 100 characters
	SegmentRejectedTooLarge  = "too_large"  // over MaxItemBytes
	SegmentRejectedMalformed = "malformed"  // not an object, or a field of the wrong JSON type
)

// SegmentIgnoredReasons and SegmentRejectedReasons list every reason, for the metrics.
var (
	SegmentIgnoredReasons  = []string{SegmentIgnoredIdentify, SegmentIgnoredGroup, SegmentIgnoredAlias, SegmentIgnoredTrack}
	SegmentRejectedReasons = []string{SegmentRejectedType, SegmentRejectedEvent, SegmentRejectedUser, SegmentRejectedProduct,
		SegmentRejectedDuration, SegmentRejectedTimestamp, SegmentRejectedMessageID, SegmentRejectedTooLarge, SegmentRejectedMalformed}
)

// MaxMessageIDLen is the longest messageId taken: Segment's own limit is 100 characters.
const MaxMessageIDLen = 100

// AnonPrefix is put before an anonymousId that becomes the user_id, so that the ids a
// site assigns (userId) and the ones an SDK makes up (anonymousId) cannot collide.
const AnonPrefix = "anon:"

// SegmentDrop is one call that was not counted.
type SegmentDrop struct {
	Index   int    // position in the batch (0 for a single call)
	Ignored bool   // ignored (true) or rejected (false)
	Reason  string // one of the Segment*Ignored* or Segment*Rejected* labels
	Msg     string // for a rejected call: what is wrong, naming Segment's field
}

// SegmentResult is what a Segment body holds.
type SegmentResult struct {
	Events   []Event       // the calls counted, validated, in body order
	Drops    []SegmentDrop // the calls ignored or rejected, in body order
	Rejected int           // how many of Drops are rejected
	WriteKey string        // the body's writeKey field, "" when none
}

// Ignored is how many calls were ignored.
func (r *SegmentResult) Ignored() int { return len(r.Drops) - r.Rejected }

// segmentMaxDepth bounds the nesting of JSON values, so that a body of brackets cannot
// take the decoder's stack deep.
const segmentMaxDepth = 256

// DecodeSegment reads the body of a Segment call (batch, or a single call of the type
// the endpoint names) and maps every call to an event, or a drop. now is when the body
// was received: Segment's receivedAt, against which timestamps are corrected for the
// client's clock (see segmentItem.event) and bounded.
//
// An error means the body as a whole is not a Segment call: not JSON, not an object,
// no batch array, a batch-level sentAt that is no time; an *Error, or ErrTooMany for a
// batch of more than m.MaxItems calls. The result's WriteKey is read even then, where
// the body got that far, so that a caller can authenticate before it answers.
func DecodeSegment(body []byte, call SegmentCall, m *SegmentMapping, now time.Time) (SegmentResult, error) {
	d := segmentDecoder{decoder: decoder{buf: body, now: now, max: m.MaxItems}, m: m}
	var res SegmentResult
	if err := d.body(call, &res); err != nil {
		return SegmentResult{WriteKey: res.WriteKey}, err
	}
	return res, nil
}

type segmentDecoder struct {
	decoder
	m *SegmentMapping
}

// segmentItem is one call as read, before the batch-level fields (which may follow the
// batch array in the body) are known.
type segmentItem struct {
	typ       string
	name      string // a track call's event name
	hasName   bool
	userID    string
	anonID    string
	productID string
	sku       string
	duration  float64
	hasDur    bool
	messageID string
	ts        int64 // timestamp, Unix ms
	hasTS     bool
	sentAt    int64
	hasSentAt bool
	drop      *SegmentDrop // set while reading: rejected for a reason found in the JSON
}

func (d *segmentDecoder) body(call SegmentCall, res *SegmentResult) *Error {
	d.skipSpace()
	if d.pos == len(d.buf) {
		return &Error{Index: -1, Msg: "empty body"}
	}
	if d.buf[d.pos] != '{' {
		return d.fail(-1, "body must be a JSON object")
	}
	var items []segmentItem
	var sentAt int64
	var hasSentAt, hasBatch bool
	var single segmentItem
	err := d.object(-1, 0, func(key []byte) *Error {
		switch string(key) {
		case "writeKey":
			s, _, err := d.optString(-1)
			res.WriteKey = s
			return err
		case "batch":
			if call != SegmentBatch {
				break
			}
			if hasBatch {
				return &Error{Index: -1, Field: "batch", Msg: "appears more than once"}
			}
			hasBatch = true
			var err *Error
			items, err = d.batch()
			return err
		case "sentAt":
			if call != SegmentBatch {
				break
			}
			s, _, err := d.optString(-1)
			if err != nil {
				return err
			}
			if s == "" {
				hasSentAt = false
				return nil
			}
			t, bad := parseSegmentTime(s)
			if bad {
				return &Error{Index: -1, Field: "sentAt", Msg: "must be an ISO 8601 time"}
			}
			sentAt, hasSentAt = t, true
			return nil
		}
		if call == SegmentBatch {
			return d.skipValue(-1, 1)
		}
		return d.itemField(&single, key, 0, 1)
	})
	if err != nil {
		return err
	}
	d.skipSpace()
	if d.pos != len(d.buf) {
		return d.fail(-1, "unexpected data after JSON value")
	}
	if call == SegmentBatch {
		if !hasBatch {
			return &Error{Index: -1, Field: "batch", Msg: "is required: an array of calls"}
		}
	} else {
		single.typ = segmentTypes[call]
		items = []segmentItem{single}
	}
	res.Events = make([]Event, 0, len(items))
	for i := range items {
		it := &items[i]
		if it.drop == nil && !it.hasSentAt && hasSentAt {
			it.sentAt, it.hasSentAt = sentAt, true
		}
		ev, drop := it.event(d.m, d.now)
		if drop != nil {
			drop.Index = i
			res.Drops = append(res.Drops, *drop)
			if !drop.Ignored {
				res.Rejected++
			}
			continue
		}
		res.Events = append(res.Events, ev)
	}
	return nil
}

// batch reads the batch array.
func (d *segmentDecoder) batch() ([]segmentItem, *Error) {
	if d.pos == len(d.buf) || d.buf[d.pos] != '[' {
		return nil, &Error{Index: -1, Field: "batch", Msg: "must be an array of calls"}
	}
	d.pos++
	d.skipSpace()
	if d.pos < len(d.buf) && d.buf[d.pos] == ']' {
		d.pos++
		return nil, nil
	}
	items := make([]segmentItem, 0, 16)
	for i := 0; ; i++ {
		if i == d.max {
			// The rest need not be read: the request fails as a whole.
			return nil, ErrTooMany
		}
		d.skipSpace()
		start := d.pos
		var it segmentItem
		if d.pos < len(d.buf) && d.buf[d.pos] == '{' {
			if err := d.object(i, 2, func(key []byte) *Error { return d.itemField(&it, key, i, 3) }); err != nil {
				return nil, err
			}
		} else {
			if err := d.skipValue(i, 2); err != nil {
				return nil, err
			}
			it.reject(SegmentRejectedMalformed, "a call must be a JSON object")
		}
		if d.m.MaxItemBytes > 0 && d.pos-start > d.m.MaxItemBytes && it.drop == nil {
			it.reject(SegmentRejectedTooLarge, "call larger than "+strconv.Itoa(d.m.MaxItemBytes)+" bytes")
		}
		items = append(items, it)
		if done, err := d.nextElement(); err != nil {
			return nil, err
		} else if done {
			return items, nil
		}
	}
}

func (it *segmentItem) reject(reason, msg string) {
	if it.drop == nil {
		it.drop = &SegmentDrop{Reason: reason, Msg: msg}
	}
}

// itemField reads the value of one field of a call. A value of the wrong JSON type
// rejects the call (the JSON is still read through, so that the others are counted).
func (d *segmentDecoder) itemField(it *segmentItem, key []byte, index, depth int) *Error {
	var s string
	var ok bool
	var err *Error
	switch string(key) {
	case "type":
		if s, ok, err = d.itemString(it, index, depth, "type"); ok {
			it.typ = s
		}
	case "event":
		if s, ok, err = d.itemString(it, index, depth, "event"); ok {
			it.name, it.hasName = s, s != ""
		}
	case "userId":
		if s, ok, err = d.itemID(it, index, depth, "userId"); ok {
			it.userID = s
		}
	case "anonymousId":
		if s, ok, err = d.itemID(it, index, depth, "anonymousId"); ok {
			it.anonID = s
		}
	case "messageId":
		if s, ok, err = d.itemString(it, index, depth, "messageId"); ok {
			it.messageID = s
		}
	case "timestamp", "sentAt":
		if s, ok, err = d.itemString(it, index, depth, string(key)); ok {
			ms, bad := parseSegmentTime(s)
			switch {
			case s == "" && key[0] == 't':
				it.hasTS = false
			case s == "":
				it.hasSentAt = false
			case bad:
				it.reject(SegmentRejectedTimestamp, string(key)+": must be an ISO 8601 time")
			case key[0] == 't':
				it.ts, it.hasTS = ms, true
			default:
				it.sentAt, it.hasSentAt = ms, true
			}
		}
	case "properties":
		// A repeated properties object replaces the first, as in encoding/json.
		it.productID, it.sku, it.duration, it.hasDur = "", "", 0, false
		if d.pos < len(d.buf) && d.buf[d.pos] == '{' {
			return d.object(index, depth, func(k []byte) *Error { return d.property(it, k, index, depth+1) })
		}
		if d.isNull() {
			return nil
		}
		it.reject(SegmentRejectedMalformed, "properties: must be an object")
		return d.skipValue(index, depth)
	default:
		return d.skipValue(index, depth)
	}
	return err
}

// property reads one field of a call's properties.
func (d *segmentDecoder) property(it *segmentItem, key []byte, index, depth int) *Error {
	switch string(key) {
	case "product_id", "sku":
		s, ok, err := d.itemID(it, index, depth, "properties."+string(key))
		if ok {
			if key[0] == 'p' {
				it.productID = s
			} else {
				it.sku = s
			}
		}
		return err
	case "duration_ms":
		if d.isNull() {
			it.hasDur = false
			return nil
		}
		if d.pos < len(d.buf) && (d.buf[d.pos] == '-' || d.buf[d.pos] >= '0' && d.buf[d.pos] <= '9') {
			text, _, err := d.number(index, "duration_ms")
			if err != nil {
				return err
			}
			f, perr := strconv.ParseFloat(string(text), 64)
			if perr != nil { // out of float64's range: still a bad duration
				f = math.Inf(1)
			}
			it.duration, it.hasDur = f, true
			return nil
		}
		it.duration, it.hasDur = math.NaN(), true
		return d.skipValue(index, depth)
	}
	return d.skipValue(index, depth)
}

// isNull consumes a JSON null, if that is what comes next.
func (d *segmentDecoder) isNull() bool {
	if len(d.buf)-d.pos >= 4 && string(d.buf[d.pos:d.pos+4]) == "null" {
		d.pos += 4
		return true
	}
	return false
}

// optString reads a string or null (ok false); any other value is an error of the
// request as a whole.
func (d *segmentDecoder) optString(index int) (string, bool, *Error) {
	if d.isNull() {
		return "", false, nil
	}
	if d.pos == len(d.buf) || d.buf[d.pos] != '"' {
		return "", false, d.fail(index, "expected a string")
	}
	s, err := d.rawString(index)
	return string(s), err == nil, err
}

// itemString reads a string field of a call; null reads as "" (absent: it also clears
// an earlier value of a repeated field, as in encoding/json), any other type rejects
// the call.
func (d *segmentDecoder) itemString(it *segmentItem, index, depth int, field string) (string, bool, *Error) {
	if d.pos < len(d.buf) && d.buf[d.pos] == '"' {
		s, err := d.rawString(index)
		return string(s), err == nil, err
	}
	if d.isNull() {
		return "", true, nil
	}
	it.reject(SegmentRejectedMalformed, field+": must be a string")
	return "", false, d.skipValue(index, depth)
}

// itemID reads an id field of a call: a string, or an integer taken as its decimal
// text (some SDKs send numeric ids); null reads as "".
func (d *segmentDecoder) itemID(it *segmentItem, index, depth int, field string) (string, bool, *Error) {
	if d.pos < len(d.buf) && (d.buf[d.pos] == '-' || d.buf[d.pos] >= '0' && d.buf[d.pos] <= '9') {
		text, integer, err := d.number(index, field)
		if err != nil {
			return "", false, err
		}
		if !integer {
			it.reject(SegmentRejectedMalformed, field+": must be a string or an integer")
			return "", false, nil
		}
		return string(text), true, nil
	}
	if d.pos < len(d.buf) && d.buf[d.pos] == '"' {
		s, err := d.rawString(index)
		return string(s), err == nil, err
	}
	if d.isNull() {
		return "", true, nil
	}
	it.reject(SegmentRejectedMalformed, field+": must be a string or an integer")
	return "", false, d.skipValue(index, depth)
}

// object reads a JSON object starting at '{', calling field for each key with the
// position at the start of its value; field must consume the value.
func (d *segmentDecoder) object(index, depth int, field func(key []byte) *Error) *Error {
	if depth > segmentMaxDepth {
		return d.fail(index, "JSON nested more than "+strconv.Itoa(segmentMaxDepth)+" levels")
	}
	d.pos++ // '{'
	d.skipSpace()
	if d.pos < len(d.buf) && d.buf[d.pos] == '}' {
		d.pos++
		return nil
	}
	for {
		d.skipSpace()
		key, err := d.rawString(index)
		if err != nil {
			return err
		}
		d.skipSpace()
		if d.pos == len(d.buf) || d.buf[d.pos] != ':' {
			return d.fail(index, "expected ':' after object key")
		}
		d.pos++
		d.skipSpace()
		if d.pos == len(d.buf) {
			return d.fail(index, "unexpected end of JSON object")
		}
		if err := field(key); err != nil {
			return err
		}
		d.skipSpace()
		if d.pos == len(d.buf) {
			return d.fail(index, "unexpected end of JSON object")
		}
		c := d.buf[d.pos]
		d.pos++
		if c == '}' {
			return nil
		}
		if c != ',' {
			return d.fail(index, "expected ',' or '}' in object")
		}
	}
}

// skipValue reads past one JSON value, checking its syntax.
func (d *segmentDecoder) skipValue(index, depth int) *Error {
	if depth > segmentMaxDepth {
		return d.fail(index, "JSON nested more than "+strconv.Itoa(segmentMaxDepth)+" levels")
	}
	if d.pos == len(d.buf) {
		return d.fail(index, "unexpected end of JSON")
	}
	switch c := d.buf[d.pos]; {
	case c == '"':
		_, err := d.rawString(index)
		return err
	case c == '{':
		return d.object(index, depth, func([]byte) *Error { return d.skipValue(index, depth+1) })
	case c == '[':
		d.pos++
		d.skipSpace()
		if d.pos < len(d.buf) && d.buf[d.pos] == ']' {
			d.pos++
			return nil
		}
		for {
			d.skipSpace()
			if err := d.skipValue(index, depth+1); err != nil {
				return err
			}
			d.skipSpace()
			if d.pos == len(d.buf) {
				return d.fail(index, "unexpected end of JSON array")
			}
			c := d.buf[d.pos]
			d.pos++
			if c == ']' {
				return nil
			}
			if c != ',' {
				return d.fail(index, "expected ',' or ']' in array")
			}
		}
	case c == '-' || c >= '0' && c <= '9':
		_, _, err := d.number(index, "")
		return err
	}
	for _, lit := range [...]string{"true", "false", "null"} {
		if len(d.buf)-d.pos >= len(lit) && string(d.buf[d.pos:d.pos+len(lit)]) == lit {
			d.pos += len(lit)
			return nil
		}
	}
	return d.fail(index, "invalid JSON value")
}

// parseSegmentTime reads an ISO 8601 time as the SDKs write it: RFC 3339, or without a
// zone (taken as UTC; older analytics-python sends that). bad reports anything else.
func parseSegmentTime(s string) (ms int64, bad bool) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		if t, err = time.Parse("2006-01-02T15:04:05.999999999", s); err != nil {
			return 0, true
		}
	}
	return t.UnixMilli(), false
}

// event maps one call to an event, or says why it is dropped.
//
// The event time is Segment's: timestamp, corrected for the client's clock by how far
// it was off when it sent the call, receivedAt − (sentAt − timestamp), where sentAt is
// the call's own or else the batch's. An SDK buffers calls before it sends them, so its
// clock's error is the difference between its sentAt and the moment the server received
// the call; timestamp carries the same error. A call without a timestamp takes the
// receive time.
func (it *segmentItem) event(m *SegmentMapping, now time.Time) (Event, *SegmentDrop) {
	if it.drop != nil {
		return Event{}, it.drop
	}
	var ev Event
	switch it.typ {
	case "track":
		if !it.hasName {
			return ev, &SegmentDrop{Reason: SegmentRejectedEvent, Msg: "event: is required for a track call"}
		}
		switch {
		case m.Click[it.name]:
			ev.Type = Click
		case m.View[it.name]:
			ev.Type = PageView
		case m.Dwell[it.name]:
			ev.Type = Dwell
		default:
			return ev, &SegmentDrop{Ignored: true, Reason: SegmentIgnoredTrack}
		}
	case "page", "screen":
		ev.Type = PageView
	case "identify":
		return ev, &SegmentDrop{Ignored: true, Reason: SegmentIgnoredIdentify}
	case "group":
		return ev, &SegmentDrop{Ignored: true, Reason: SegmentIgnoredGroup}
	case "alias":
		return ev, &SegmentDrop{Ignored: true, Reason: SegmentIgnoredAlias}
	case "":
		return ev, &SegmentDrop{Reason: SegmentRejectedType, Msg: "type: is required"}
	default:
		return ev, &SegmentDrop{Reason: SegmentRejectedType, Msg: "type: must be track, page, screen, identify, group or alias"}
	}

	switch {
	case it.userID != "":
		ev.UserID = it.userID
	case it.anonID != "":
		ev.UserID = AnonPrefix + it.anonID
	default:
		return ev, &SegmentDrop{Reason: SegmentRejectedUser, Msg: "userId or anonymousId: one is required"}
	}
	ev.ProductID = it.productID
	if ev.ProductID == "" {
		ev.ProductID = it.sku
	}
	if ev.Type == Dwell {
		// Any JSON number that is an integer (1500, 1500.0, 1.5e3); anything else is a
		// bad duration.
		f := it.duration
		switch {
		case !it.hasDur:
			// Validate says it is required.
		case f >= 1 && f <= MaxDurationMs && f == math.Trunc(f):
			ev.DurationMs = int64(f)
		default:
			ev.DurationMs = -1
		}
	}
	if len(it.messageID) > MaxMessageIDLen {
		return ev, &SegmentDrop{Reason: SegmentRejectedMessageID,
			Msg: "messageId: must be at most " + strconv.Itoa(MaxMessageIDLen) + " characters"}
	}
	ev.EventID = SegmentEventID(it.messageID)
	if it.hasTS {
		ts := it.ts
		if it.hasSentAt {
			ts = now.UnixMilli() - (it.sentAt - it.ts)
		}
		if ts <= 0 {
			return ev, &SegmentDrop{Reason: SegmentRejectedTimestamp, Msg: "timestamp: is more than 30 days in the past"}
		}
		ev.TS = ts
	}
	if err := ev.Validate(now); err != nil {
		return ev, segmentInvalid(err)
	}
	return ev, nil
}

// segmentInvalid names, in Segment's terms, what Validate found wrong.
func segmentInvalid(err *Error) *SegmentDrop {
	switch err.Field {
	case "user_id":
		return &SegmentDrop{Reason: SegmentRejectedUser, Msg: "userId or anonymousId: " + IDRule +
			" (an anonymousId becomes " + AnonPrefix + "<anonymousId>)"}
	case "product_id":
		if err.Msg == "is required" {
			return &SegmentDrop{Reason: SegmentRejectedProduct, Msg: "properties.product_id (or properties.sku): is required"}
		}
		return &SegmentDrop{Reason: SegmentRejectedProduct, Msg: "properties.product_id (or properties.sku): " + err.Msg}
	case "duration_ms":
		return &SegmentDrop{Reason: SegmentRejectedDuration,
			Msg: "properties.duration_ms: must be an integer from 1 to " + strconv.Itoa(MaxDurationMs)}
	case "ts":
		return &SegmentDrop{Reason: SegmentRejectedTimestamp, Msg: "timestamp: " + err.Msg + " (after correcting for the client's clock with sentAt)"}
	}
	return &SegmentDrop{Reason: SegmentRejectedMalformed, Msg: err.Error()}
}

// SegmentEventID maps a messageId to an event_id: itself when it is a valid id, as the
// SDKs' ids are (UUIDs, node-next-…), else a stable hash of it, "h:" and 32 hex digits,
// so that retries of a call with an odd messageId are still recognized. "" stays "":
// such a call cannot be deduplicated.
func SegmentEventID(messageID string) string {
	if messageID == "" || ValidID(messageID) {
		return messageID
	}
	sum := sha256.Sum256([]byte(messageID))
	return "h:" + hex.EncodeToString(sum[:16])
}
