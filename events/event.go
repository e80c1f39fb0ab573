// Package events is the contract every part of the pipeline shares: the event type and
// its validation, the request decoder, the compact stream-entry codec, and every Redis
// key name the system reads or writes. It has no network code.
package events

import (
	"fmt"
	"strconv"
	"time"
)

// Type is what the user did.
type Type uint8

// The event types. Click is the default when a request names none.
const (
	Click Type = iota
	PageView
	Dwell
)

// Names of the types on the wire.
const (
	typeClick    = "click"
	typePageView = "page_view"
	typeDwell    = "dwell"
)

func (t Type) String() string {
	switch t {
	case Click:
		return typeClick
	case PageView:
		return typePageView
	case Dwell:
		return typeDwell
	}
	return "unknown(" + strconv.Itoa(int(t)) + ")"
}

// Limits of the contract.
const (
	MaxIDLen      = 128
	MaxDurationMs = 86_400_000
	MaxFuture     = time.Hour
	MaxPast       = 30 * 24 * time.Hour
)

// Event is one validated user-behaviour event.
type Event struct {
	UserID     string
	ProductID  string
	Type       Type
	DurationMs int64  // set for Dwell only
	EventID    string // client idempotency key; empty when the client sent none
	TS         int64  // event time in Unix ms; 0 means "when the server received it"
}

// Error describes why an event or a request was rejected. Index is the position of the
// event in the request (-1 when the request as a whole is malformed).
type Error struct {
	Index int
	Field string
	Msg   string
}

func (e *Error) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

func fieldErr(field, format string, args ...any) *Error {
	return &Error{Index: -1, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// IDRule is the message that rejects an id: user, product and event ids, and the ids
// in queryapi's paths.
const IDRule = "must be 1-128 characters of A-Z a-z 0-9 . _ : @ -, and not . or .."

// ValidID reports whether s may be used as a user, product or event id. The alphabet
// excludes '{', '}', spaces and control characters, so an id can never change the
// meaning (or the cluster hash slot) of the key it is embedded in. "." and ".." are
// refused too: browsers and curl resolve them as path segments, so
// GET /v1/users/.. could never read such a user back.
func ValidID(s string) bool {
	return keySafe(s) && s != "." && s != ".."
}

// keySafe reports whether s has the length and alphabet of an id. The stream-entry
// codec checks only this: entries written before "." and ".." were refused are still
// counted, in a rebuild too, and they are harmless inside a key.
func keySafe(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !idByte[s[i]] {
			return false
		}
	}
	return true
}

var idByte = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "._:@-" {
		t[c] = true
	}
	return t
}()

// Validate checks the event against the contract. now is the server's receive time,
// against which ts is bounded.
func (e *Event) Validate(now time.Time) *Error {
	if e.UserID == "" {
		return fieldErr("user_id", "is required")
	}
	if !ValidID(e.UserID) {
		return fieldErr("user_id", IDRule)
	}
	if e.ProductID == "" {
		return fieldErr("product_id", "is required")
	}
	if !ValidID(e.ProductID) {
		return fieldErr("product_id", IDRule)
	}
	switch e.Type {
	case Click, PageView:
		if e.DurationMs != 0 {
			return fieldErr("duration_ms", "is only allowed for type dwell")
		}
	case Dwell:
		if e.DurationMs == 0 {
			return fieldErr("duration_ms", "is required for type dwell")
		}
		if e.DurationMs < 1 || e.DurationMs > MaxDurationMs {
			return fieldErr("duration_ms", "must be an integer from 1 to %d", MaxDurationMs)
		}
	default:
		return fieldErr("type", "must be click, page_view or dwell")
	}
	if e.EventID != "" && !ValidID(e.EventID) {
		return fieldErr("event_id", IDRule)
	}
	if e.TS != 0 {
		nowMs := now.UnixMilli()
		if e.TS > nowMs+MaxFuture.Milliseconds() {
			return fieldErr("ts", "is more than 1h in the future")
		}
		if e.TS < nowMs-MaxPast.Milliseconds() {
			return fieldErr("ts", "is more than 30 days in the past")
		}
	}
	return nil
}
