package main

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/clickstream/pipeline/internal/server"
)

// bodyLimit bounds the bytes of request bodies ingest holds at once (MAX_INFLIGHT_BYTES).
// Without it, memory grew with the number of clients sending at the same moment: 800
// clients each in the middle of a 1 MiB body took ingest to 1.4 GB.
//
// A body is counted from before it is read until its request is answered, so the count
// also stands for the events decoded from it while they wait for Redis. A body with a
// Content-Length counts that many bytes, reserved before a byte is read; a chunked body
// counts the buffer it fills, reserved each time the buffer grows.
type bodyLimit struct {
	max  int64
	used atomic.Int64
}

// errBodiesInFlight refuses a body that would take the bytes in flight over
// MAX_INFLIGHT_BYTES. It is one value, so that refusing costs no allocation and the
// metrics can tell it from the other 503s.
var errBodiesInFlight = &server.Status{Code: http.StatusServiceUnavailable,
	Msg: "too many request bodies are being received at once (MAX_INFLIGHT_BYTES); retry later"}

// reserve takes n bytes if they fit under the limit.
func (l *bodyLimit) reserve(n int64) bool {
	for {
		used := l.used.Load()
		if used+n > l.max {
			return false
		}
		if l.used.CompareAndSwap(used, used+n) {
			return true
		}
	}
}

func (l *bodyLimit) release(n int64) {
	if n != 0 {
		l.used.Add(-n)
	}
}

// pooledCap is the size of the pooled body buffers: single events and small batches fit.
// A larger body gets a buffer of its own, which is never pooled: a sync.Pool keeps what it
// is given until two garbage collections have passed, so pooling the buffers of 1 MiB
// bodies kept a whole burst of them (1 GB of heap still in use 15 s after 800 such
// bodies). The pool holds at most one small buffer per request being read at once, and a
// pooled buffer never grows: a body that outgrows it is copied into a buffer of its own.
const pooledCap = 4 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, pooledCap); return &b }}

// readBody reads the whole body, up to max bytes, reserving its size against lim first
// (see bodyLimit). It returns the body and the bytes reserved, which the caller releases
// once the request is answered; on error it has released them itself. small is a pooled
// buffer of pooledCap bytes, used when the body fits in it.
func readBody(r *http.Request, max int64, lim *bodyLimit, small []byte) (body []byte, held int64, err error) {
	dst := small[:0]
	if n := r.ContentLength; n >= 0 {
		if n > max {
			return dst, 0, tooLarge(max)
		}
		// Refused before a byte of the body is read: shedding load costs next to nothing.
		if !lim.reserve(n) {
			return dst, 0, errBodiesInFlight
		}
		held = n
		if n >= int64(cap(dst)) {
			dst = make([]byte, 0, n+1) // +1: room for the read that returns io.EOF
		}
	}
	lr := io.LimitReader(r.Body, max+1)
	for {
		if len(dst) == cap(dst) {
			// Only a chunked body gets here: its length is learned as it arrives. The
			// buffer doubles, so a 1 MiB body is copied 9 times, not the 20-odd times of
			// append's 1.25× steps.
			grown := min(2*int64(cap(dst)), max+1)
			if !lim.reserve(grown - held) {
				lim.release(held)
				return dst, 0, errBodiesInFlight
			}
			held = grown
			dst = append(make([]byte, 0, grown), dst...)
		}
		n, rerr := lr.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		switch {
		case int64(len(dst)) > max:
			err = tooLarge(max)
		case rerr == io.EOF:
			return dst, held, nil
		case rerr != nil:
			var ne net.Error
			if errors.As(rerr, &ne) && ne.Timeout() {
				// HTTP_READ_TIMEOUT passed: a client sending too slowly is cut off here.
				err = &server.Status{Code: http.StatusRequestTimeout, Msg: "request body not received within HTTP_READ_TIMEOUT"}
			} else {
				err = &server.Status{Code: http.StatusBadRequest, Msg: "reading request body: " + rerr.Error()}
			}
		}
		if err != nil {
			lim.release(held)
			return dst, 0, err
		}
	}
}

// tooLarge is the error the server's error handler answers with 413 "request body
// larger than max bytes", the type http.MaxBytesReader would return.
func tooLarge(max int64) error {
	return &http.MaxBytesError{Limit: max}
}

// encodingError is a 415 for a body in a Content-Encoding ingest cannot read. It is a
// type of its own so that the metrics can tell it from a wrong Content-Type.
type encodingError struct{ server.Status }

func (e *encodingError) Error() string { return e.Msg }
func (e *encodingError) Unwrap() error { return &e.Status }

// checkEncoding refuses a compressed body. Ingest cannot decompress (yet); before this
// check a gzip body got a puzzling 400 about its first byte, and a plain body labelled
// br was taken as plain JSON. identity (no encoding) is the only one accepted.
func checkEncoding(r *http.Request) error {
	vals, ok := r.Header["Content-Encoding"]
	if !ok {
		return nil
	}
	for _, v := range vals {
		for _, enc := range strings.Split(v, ",") {
			if enc = strings.TrimSpace(enc); enc != "" && !strings.EqualFold(enc, "identity") {
				return &encodingError{server.Status{Code: http.StatusUnsupportedMediaType,
					Msg: "Content-Encoding " + strconv.Quote(enc) + " is not supported; send the body uncompressed"}}
			}
		}
	}
	return nil
}
