package main

import (
	"context"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/server"
	"github.com/labstack/echo/v4"
)

type handler struct {
	w   *Writer
	bp  *backpressure
	m   *ingestMetrics
	cfg Config
	now func() time.Time
}

// Accepted is the body of a 202: accepted events were written to the stream now,
// duplicates carried an event_id seen within the dedup window and were not.
type Accepted struct {
	Accepted   int `json:"accepted"`
	Duplicates int `json:"duplicates"`
}

func (h *handler) postEvents(c echo.Context) error {
	format, err := requestFormat(c.Request())
	if err != nil {
		return err
	}
	return h.ingest(c, format, false)
}

// postClick is the original article's endpoint: the same JSON, recorded as a click.
func (h *handler) postClick(c echo.Context) error {
	format, err := requestFormat(c.Request())
	if err != nil {
		return err
	}
	if format != events.JSON {
		return &server.Status{Code: http.StatusUnsupportedMediaType, Msg: "POST /click takes application/json; send NDJSON to /v1/events"}
	}
	return h.ingest(c, format, true)
}

func (h *handler) ingest(c echo.Context, format events.Format, clicksOnly bool) error {
	// Refused before the body is read: shedding load should cost next to nothing.
	if reason := h.bp.Reason(); reason != "" {
		return &server.Status{Code: http.StatusServiceUnavailable, Msg: reason}
	}
	buf := bufPool.Get().(*[]byte)
	defer bufPool.Put(buf)
	body, err := readBody(c.Request(), h.cfg.MaxBodyBytes, (*buf)[:0])
	*buf = body
	if err != nil {
		return err
	}
	evs, err := events.DecodeRequest(body, format, h.cfg.MaxEvents, h.now())
	if err != nil {
		return decodeError(err, h.cfg.MaxEvents)
	}
	if clicksOnly {
		for i := range evs {
			if evs[i].Type != events.Click {
				return &server.Status{Code: http.StatusBadRequest, Index: &i,
					Msg: "type: POST /click records clicks only; send other types to /v1/events"}
			}
		}
	}
	// The deadline keeps a client from waiting on a Redis that does not answer: it gets a
	// 503 with Retry-After instead.
	ctx, cancel := context.WithTimeout(c.Request().Context(), h.cfg.RedisTimeout+250*time.Millisecond)
	defer cancel()
	dups, err := h.w.Write(ctx, evs)
	if err != nil {
		return &server.Unavailable{Err: err}
	}
	h.m.accepted.Add(float64(len(evs) - dups))
	if dups > 0 {
		h.m.duplicates.Add(float64(dups))
	}
	// Encoded by hand: this is the answer to every request.
	b := make([]byte, 0, 48)
	b = append(b, `{"accepted":`...)
	b = strconv.AppendInt(b, int64(len(evs)-dups), 10)
	b = append(b, `,"duplicates":`...)
	b = strconv.AppendInt(b, int64(dups), 10)
	b = append(b, '}')
	return c.JSONBlob(http.StatusAccepted, b)
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// readBody reads the whole body into dst, up to max bytes.
func readBody(r *http.Request, max int64, dst []byte) ([]byte, error) {
	if r.ContentLength > max {
		return dst, tooLarge(max)
	}
	lr := io.LimitReader(r.Body, max+1)
	for {
		if len(dst) == cap(dst) {
			dst = append(dst, 0)[:len(dst)]
		}
		n, err := lr.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if int64(len(dst)) > max {
			return dst, tooLarge(max)
		}
		if err == io.EOF {
			return dst, nil
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			// HTTP_READ_TIMEOUT passed: a client sending too slowly is cut off here.
			return dst, &server.Status{Code: http.StatusRequestTimeout, Msg: "request body not received within HTTP_READ_TIMEOUT"}
		}
		if err != nil {
			return dst, &server.Status{Code: http.StatusBadRequest, Msg: "reading request body: " + err.Error()}
		}
	}
}

// tooLarge is the error the server's error handler answers with 413 "request body
// larger than max bytes", the type http.MaxBytesReader would return.
func tooLarge(max int64) error {
	return &http.MaxBytesError{Limit: max}
}

// requestFormat maps the Content-Type to a body format; anything else is a 415.
func requestFormat(r *http.Request) (events.Format, error) {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil {
		switch mt {
		case "application/json":
			return events.JSON, nil
		case "application/x-ndjson", "application/ndjson":
			return events.NDJSON, nil
		}
	}
	return 0, &server.Status{Code: http.StatusUnsupportedMediaType,
		Msg: "Content-Type must be application/json, application/x-ndjson or application/ndjson, got " + strconv.Quote(ct)}
}

func decodeError(err error, maxEvents int) error {
	if errors.Is(err, events.ErrTooMany) {
		return &server.Status{Code: http.StatusRequestEntityTooLarge, Msg: "more than " + strconv.Itoa(maxEvents) + " events in one request"}
	}
	var ee *events.Error
	if errors.As(err, &ee) {
		st := &server.Status{Code: http.StatusBadRequest, Msg: ee.Error()}
		if ee.Index >= 0 {
			i := ee.Index
			st.Index = &i
		}
		return st
	}
	return err
}
