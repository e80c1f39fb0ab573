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
//
// A body with Content-Encoding: gzip is decompressed as it is read (see readGzip): max
// bounds it once decompressed, and its compressed length too.
func readBody(r *http.Request, max int64, lim *bodyLimit, small []byte) (body []byte, held int64, err error) {
	dst := small[:0]
	gz, err := contentEncoding(r)
	if err != nil {
		return dst, 0, err
	}
	if n := r.ContentLength; n > max {
		discardOversized(r, max, false)
		return dst, 0, tooLarge(max, false)
	}
	if gz {
		return readGzip(r, max, lim, dst)
	}
	return readInto(r.Body, r.ContentLength, max, lim, dst, r)
}

// readInto reads src to its end into dst, up to max bytes. n is the length src is known
// to have, reserved at once and read into a buffer of that size, or -1: the buffer then
// grows as the body arrives, each growth reserved first. r is the request, whose rest is
// discarded when src turns out to be over max.
func readInto(src io.Reader, n, max int64, lim *bodyLimit, dst []byte, r *http.Request) (body []byte, held int64, err error) {
	if n >= 0 {
		// Refused before a byte of the body is read: shedding load costs next to nothing.
		if !lim.reserve(n) {
			return dst, 0, errBodiesInFlight
		}
		held = n
		if n >= int64(cap(dst)) {
			dst = make([]byte, 0, n+1) // +1: room for the read that returns io.EOF
		}
	}
	lr := io.LimitReader(src, max+1)
	for {
		if len(dst) == cap(dst) {
			// Only a chunked or compressed body gets here: its length is learned as it
			// arrives. The buffer doubles, so a 1 MiB body is copied 9 times, not the
			// 20-odd times of append's 1.25× steps.
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
			discardOversized(r, max, true)
			err = tooLarge(max, src != r.Body)
		case rerr == io.EOF:
			return dst, held, nil
		case rerr != nil:
			err = readError(rerr)
		}
		if err != nil {
			lim.release(held)
			return dst, 0, err
		}
	}
}

// readError is the answer to a body that could not be read from the connection.
func readError(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		// HTTP_READ_TIMEOUT passed: a client sending too slowly is cut off here.
		return &server.Status{Code: http.StatusRequestTimeout, Msg: "request body not received within HTTP_READ_TIMEOUT"}
	}
	return &server.Status{Code: http.StatusBadRequest, Msg: "reading request body: " + err.Error()}
}

// maxDiscard is how much of a body over the limit ingest reads and throws away before
// it answers. A client that writes its whole body before it reads the answer (Python's
// urllib, many simple clients) otherwise meets a closed connection while it is still
// sending: the kernel answers the bytes that arrive after the close with a reset, and
// the client sees "connection reset" instead of the 413. Reading the rest of the body
// costs no memory (it goes through a small pooled buffer) and is bounded in time by
// HTTP_READ_TIMEOUT; a body more than maxDiscard over the limit is cut off as before.
const maxDiscard = 16 << 20

// discardOversized reads and drops what is left of a body over max bytes. Before a
// byte of it was read (its Content-Length is over max), all of it when it is at most
// maxDiscard over, except from a client that waits for 100 Continue before it sends its
// body: that one gets the answer at once and never sends it. Once reading has begun (a
// chunked or compressed body outgrew max), up to maxDiscard more.
func discardOversized(r *http.Request, max int64, begun bool) {
	switch n := r.ContentLength; {
	case begun:
		io.CopyN(io.Discard, r.Body, maxDiscard)
	case strings.EqualFold(r.Header.Get("Expect"), "100-continue"):
	case n-max <= maxDiscard:
		io.CopyN(io.Discard, r.Body, n)
	}
}

// tooLarge is the 413 for a body over max bytes ("request body larger than max bytes"),
// once decompressed when gz.
func tooLarge(max int64, gz bool) error {
	msg := "request body larger than " + strconv.FormatInt(max, 10) + " bytes"
	if gz {
		msg += " once decompressed"
	}
	return &sizeError{server.Status{Code: http.StatusRequestEntityTooLarge, Msg: msg}}
}

// sizeError is a body over the size limit. It is a type of its own so that the metrics
// can tell it from too many events, and so that the Segment endpoints can answer it as
// Segment does (400).
type sizeError struct{ server.Status }

func (e *sizeError) Error() string { return e.Msg }
func (e *sizeError) Unwrap() error { return &e.Status }

// encodingError is a 415 for a body in a Content-Encoding ingest cannot read. It is a
// type of its own so that the metrics can tell it from a wrong Content-Type.
type encodingError struct{ server.Status }

func (e *encodingError) Error() string { return e.Msg }
func (e *encodingError) Unwrap() error { return &e.Status }

// contentEncoding reports whether the body is gzip-compressed, and refuses any other
// encoding with a 415: before that check a body in an encoding ingest cannot read got a
// puzzling 400 about its first byte, or (a plain body labelled br) was taken as it is.
// identity (no encoding) and gzip (also as x-gzip, its old name) are accepted, gzip at
// most once.
func contentEncoding(r *http.Request) (gz bool, err error) {
	vals, ok := r.Header["Content-Encoding"]
	if !ok {
		return false, nil
	}
	for _, v := range vals {
		for _, enc := range strings.Split(v, ",") {
			switch enc = strings.TrimSpace(enc); {
			case enc == "" || strings.EqualFold(enc, "identity"):
			case (strings.EqualFold(enc, "gzip") || strings.EqualFold(enc, "x-gzip")) && !gz:
				gz = true
			default:
				return false, &encodingError{server.Status{Code: http.StatusUnsupportedMediaType,
					Msg: "Content-Encoding " + strconv.Quote(enc) + " is not supported; send the body uncompressed or gzip-compressed"}}
			}
		}
	}
	return gz, nil
}
