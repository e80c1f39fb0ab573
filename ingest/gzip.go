package main

import (
	"compress/gzip"
	"errors"
	"io"
	"net/http"
	"sync"

	"github.com/clickstream/pipeline/internal/server"
)

// gzipState is what one gzip decompressor holds while it works, counted against
// MAX_INFLIGHT_BYTES besides the decompressed body: flate's 32 KiB window, its Huffman
// tables and gzip's read buffer, about 48 KiB measured.
const gzipState = 48 << 10

// gzipReaders are decompressors for reuse: each is about 48 KiB, and a service that
// takes gzip from every SDK would otherwise allocate one per request. The pool holds at
// most as many as requests were decompressed at once, each counted while in use.
var gzipReaders sync.Pool

// readGzip reads a gzip-compressed body and returns it decompressed, up to max bytes.
// The limit is enforced while decompressing, so a gzip bomb (a few KB that inflate to
// gigabytes) costs no more memory than a body of max bytes: decompression stops at
// max+1 bytes and the request gets a 413 (400 on the Segment endpoints). The compressed
// body is streamed through the decompressor, never held whole; its Content-Length was
// already bounded by max. A stream that is not valid gzip (a corrupt or truncated one,
// or a plain body labelled gzip) is a 400.
func readGzip(r *http.Request, max int64, lim *bodyLimit, dst []byte) (body []byte, held int64, err error) {
	if !lim.reserve(gzipState) {
		return dst, 0, errBodiesInFlight
	}
	defer lim.release(gzipState)
	src := &sourceErr{r: r.Body}
	zr, _ := gzipReaders.Get().(*gzip.Reader)
	if zr == nil {
		zr, err = gzip.NewReader(src)
	} else {
		err = zr.Reset(src)
	}
	if err != nil {
		return dst, 0, gzipError(src, err)
	}
	defer gzipReaders.Put(zr)
	dec := &sourceErr{r: zr}
	body, held, err = readInto(dec, -1, max, lim, dst, r)
	var st *server.Status
	if errors.As(err, &st) && st.Code == http.StatusBadRequest && dec.err != nil {
		// readInto took the decompressor's error for the connection's.
		return body, 0, gzipError(src, dec.err)
	}
	return body, held, err
}

// gzipError is the answer to a failed decompression: the connection's error, when
// reading from it failed, else a 400 for the stream.
func gzipError(src *sourceErr, err error) error {
	if src.err != nil {
		return readError(src.err)
	}
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF // an empty body
	}
	return &server.Status{Code: http.StatusBadRequest, Msg: "request body is not valid gzip: " + err.Error()}
}

// sourceErr remembers the error of a reader: of the connection, which the decompressor
// would otherwise report as its own, and of the decompressor.
type sourceErr struct {
	r   io.Reader
	err error
}

func (s *sourceErr) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}
