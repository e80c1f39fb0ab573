package events

import (
	"strconv"
	"time"
)

// This file reads the body of ingest's browser endpoint, POST /v1/collect, where the
// tracker script (t.js) sends its beacons. navigator.sendBeacon cannot set headers,
// so the write key cannot come in an Authorization header; it comes in the URL or in
// the body, in an envelope around the events:
//
//	{"writeKey":"…","events":[{"user_id":…},…]}

// Collect is what a body of POST /v1/collect holds.
type Collect struct {
	WriteKey string  // the envelope's writeKey, "" when none
	Events   []Event // validated, in body order
}

// DecodeCollect reads a body of POST /v1/collect. It takes whatever DecodeRequest takes
// (one event, a JSON array of events, NDJSON), with the same rules and errors, and in
// JSON also an envelope: an object with an "events" array and an optional "writeKey"
// string. An object with either field is an envelope (no event has them); any other
// object is one event. The envelope is as strict as an event: events is required, any
// other field, a field twice, or data after the object is an error, and the request
// is all-or-nothing.
//
// The result's WriteKey is read even when the body is not valid, wherever the JSON
// gets that far, so that a caller can authenticate before it answers: a client without
// a key learns nothing about its body.
func DecodeCollect(body []byte, format Format, maxEvents int, now time.Time) (Collect, error) {
	if format != JSON || !isEnvelope(body) {
		evs, err := DecodeRequest(body, format, maxEvents, now)
		return Collect{Events: evs}, err
	}
	d := segmentDecoder{decoder: decoder{buf: body, now: now, max: maxEvents}}
	c, err := d.envelope()
	if err != nil {
		if c.WriteKey == "" {
			c.WriteKey = envelopeKey(body) // it may follow the error
		}
		return Collect{WriteKey: c.WriteKey}, err
	}
	if d.tooMany {
		return Collect{WriteKey: c.WriteKey}, ErrTooMany
	}
	return c, nil
}

// envelope parses {"writeKey":…,"events":[…]}.
func (d *segmentDecoder) envelope() (Collect, *Error) {
	var c Collect
	var hasKey, hasEvents bool
	d.skipSpace()
	err := d.object(-1, 0, func(key []byte) *Error {
		switch string(key) {
		case "writeKey":
			if hasKey {
				return &Error{Index: -1, Field: "writeKey", Msg: "appears more than once"}
			}
			hasKey = true
			if d.buf[d.pos] != '"' {
				return &Error{Index: -1, Field: "writeKey", Msg: "must be a string"}
			}
			s, err := d.rawString(-1)
			c.WriteKey = string(s)
			return err
		case "events":
			if hasEvents {
				return &Error{Index: -1, Field: "events", Msg: "appears more than once"}
			}
			hasEvents = true
			if d.buf[d.pos] != '[' {
				return &Error{Index: -1, Field: "events", Msg: "must be an array of event objects"}
			}
			var err *Error
			c.Events, err = d.array()
			if d.tooMany {
				return ErrTooMany // stops reading: the request fails as a whole
			}
			return err
		}
		return &Error{Index: -1, Field: strconv.QuoteToASCII(string(key)), Msg: "unknown field; a body with writeKey or events is {\"writeKey\":\"…\",\"events\":[…]}"}
	})
	if err == ErrTooMany && d.tooMany {
		return c, nil
	}
	if err != nil {
		return c, err
	}
	d.skipSpace()
	if d.pos != len(d.buf) {
		return c, d.fail(-1, "unexpected data after JSON value")
	}
	if !hasEvents {
		return c, &Error{Index: -1, Field: "events", Msg: "is required"}
	}
	if len(c.Events) == 0 {
		return c, &Error{Index: -1, Msg: "no events in request"}
	}
	return c, nil
}

// isEnvelope reports whether body is a JSON object with a writeKey or events field
// before any error in its syntax.
func isEnvelope(body []byte) bool {
	found := false
	topFields(body, func(d *segmentDecoder, key []byte) *Error {
		if k := string(key); k == "writeKey" || k == "events" {
			found = true
			return errStop
		}
		return d.skipValue(-1, 1)
	})
	return found
}

// envelopeKey is the first writeKey string of a body that is not a valid envelope, as
// far as its JSON can be read, or "".
func envelopeKey(body []byte) string {
	var key string
	topFields(body, func(d *segmentDecoder, k []byte) *Error {
		if string(k) == "writeKey" && d.buf[d.pos] == '"' {
			s, err := d.rawString(-1)
			if err == nil {
				key = string(s)
			}
			return errStop
		}
		return d.skipValue(-1, 1)
	})
	return key
}

// errStop ends topFields early.
var errStop = &Error{Index: -1, Msg: "stop"}

// topFields calls field for each field of the JSON object body, at the start of its
// value, until field returns an error or the object's syntax is wrong.
func topFields(body []byte, field func(d *segmentDecoder, key []byte) *Error) {
	d := segmentDecoder{decoder: decoder{buf: body}}
	d.skipSpace()
	if d.pos == len(body) || body[d.pos] != '{' {
		return
	}
	d.object(-1, 0, func(key []byte) *Error { return field(&d, key) })
}
