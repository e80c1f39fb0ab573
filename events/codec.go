package events

import (
	"errors"
	"math"
	"strconv"
)

// Stream entry fields. An entry is flat and short-named because the stream, the source
// of truth that a rebuild replays, is the largest thing the pipeline keeps in Redis
// (the README's "What it costs" gives its bytes per event); watermill's envelope of
// uuid, metadata and a JSON payload would take several times as much. The entry ID
// already carries the receive time, so ts is stored only when the client sent one.
const (
	fUser     = "u"
	fProduct  = "p"
	fKind     = "k"
	fDuration = "d"
	fTS       = "t"
	fEventID  = "e"
)

// Kind codes stored in field k.
const (
	kindClick    = "c"
	kindPageView = "v"
	kindDwell    = "d"
)

// AppendFields appends the stream-entry field/value pairs of e to dst, in the order
// XADD takes them.
func (e *Event) AppendFields(dst []any) []any {
	dst = append(dst, fUser, e.UserID, fProduct, e.ProductID)
	switch e.Type {
	case PageView:
		dst = append(dst, fKind, kindPageView)
	case Dwell:
		dst = append(dst, fKind, kindDwell, fDuration, strconv.FormatInt(e.DurationMs, 10))
	default:
		dst = append(dst, fKind, kindClick)
	}
	if e.TS != 0 {
		dst = append(dst, fTS, strconv.FormatInt(e.TS, 10))
	}
	if e.EventID != "" {
		dst = append(dst, fEventID, e.EventID)
	}
	return dst
}

// ErrMalformed wraps every reason an entry cannot be decoded.
var ErrMalformed = errors.New("malformed stream entry")

// DecodeEntry turns a stream entry's field/value pairs (as XREADGROUP returns them,
// flattened) into an event. It never panics: anything that is not an entry this codec
// wrote is reported as an error wrapping ErrMalformed. The result is validated for
// shape (ids, type, duration) but not for time, since an entry may be replayed long
// after it was written.
func DecodeEntry(kv []string) (Event, error) {
	var e Event
	if len(kv)%2 != 0 {
		return e, malformed("odd number of fields")
	}
	var kind string
	var dur string
	for i := 0; i < len(kv); i += 2 {
		v := kv[i+1]
		switch kv[i] {
		case fUser:
			e.UserID = v
		case fProduct:
			e.ProductID = v
		case fKind:
			kind = v
		case fDuration:
			dur = v
		case fTS:
			ts, err := strconv.ParseInt(v, 10, 64)
			if err != nil || ts <= 0 {
				return e, malformed("bad ts " + strconv.Quote(v))
			}
			e.TS = ts
		case fEventID:
			e.EventID = v
		default:
			return e, malformed("unknown field " + strconv.Quote(kv[i]))
		}
	}
	switch kind {
	case kindClick:
		e.Type = Click
	case kindPageView:
		e.Type = PageView
	case kindDwell:
		e.Type = Dwell
		n, err := strconv.ParseInt(dur, 10, 64)
		if err != nil || n < 1 || n > MaxDurationMs {
			return e, malformed("bad duration " + strconv.Quote(dur))
		}
		e.DurationMs = n
	default:
		return e, malformed("bad kind " + strconv.Quote(kind))
	}
	if e.Type != Dwell && dur != "" {
		return e, malformed("duration on a non-dwell entry")
	}
	if !keySafe(e.UserID) {
		return e, malformed("bad user id " + strconv.Quote(e.UserID))
	}
	if !keySafe(e.ProductID) {
		return e, malformed("bad product id " + strconv.Quote(e.ProductID))
	}
	if e.EventID != "" && !keySafe(e.EventID) {
		return e, malformed("bad event id " + strconv.Quote(e.EventID))
	}
	return e, nil
}

func malformed(reason string) error {
	return &malformedError{reason}
}

type malformedError struct{ reason string }

func (m *malformedError) Error() string { return ErrMalformed.Error() + ": " + m.reason }
func (m *malformedError) Unwrap() error { return ErrMalformed }

// CompareIDs orders two stream entry ids ("ms-seq") as Redis does: -1, 0 or +1. An id
// that does not parse sorts as 0-0.
func CompareIDs(a, b string) int {
	am, as := splitID(a)
	bm, bs := splitID(b)
	switch {
	case am != bm:
		return cmp(am, bm)
	default:
		return cmp(as, bs)
	}
}

// IDTime is the time in an entry id: the Unix ms at which Redis received the entry.
func IDTime(id string) int64 {
	ms, _ := splitID(id)
	return int64(ms)
}

// Time is the event's time: ts when the client sent it, else the receive time that its
// stream entry id carries.
func (e *Event) Time(entryID string) int64 {
	if e.TS != 0 {
		return e.TS
	}
	return IDTime(entryID)
}

// NextID returns the smallest entry id greater than id, e.g. for XTRIM MINID, which
// keeps the entries at or after its argument.
func NextID(id string) string {
	ms, seq := splitID(id)
	if seq == math.MaxUint64 {
		return strconv.FormatUint(ms+1, 10) + "-0"
	}
	return strconv.FormatUint(ms, 10) + "-" + strconv.FormatUint(seq+1, 10)
}

func splitID(id string) (ms, seq uint64) {
	for i := 0; i < len(id); i++ {
		if id[i] == '-' {
			ms, _ = strconv.ParseUint(id[:i], 10, 64)
			seq, _ = strconv.ParseUint(id[i+1:], 10, 64)
			return ms, seq
		}
	}
	ms, _ = strconv.ParseUint(id, 10, 64)
	return ms, 0
}

func cmp(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
