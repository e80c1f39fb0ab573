package main

import (
	"context"
	"errors"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/server"
	"github.com/labstack/echo/v4"
)

type handler struct {
	w        *Writer
	bp       *backpressure
	inflight *bodyLimit
	m        *ingestMetrics
	logger   *slog.Logger
	cfg      Config
	now      func() time.Time
}

// Accepted is what the write step did, and the body of a 202: accepted events were
// written to the stream now, duplicates carried an event_id seen within the dedup window
// and were not.
type Accepted struct {
	Accepted   int `json:"accepted"`
	Duplicates int `json:"duplicates"`
}

// A request is handled in four steps, each its own function, so that an endpoint is
// a few lines that name them: read the body (bounded, counted against
// MAX_INFLIGHT_BYTES), decode it (a function per API shape), write the events (answered
// only once Redis holds them), answer.

// postEvents is the pipeline's own API: one event, a JSON array or NDJSON.
func (h *handler) postEvents(c echo.Context) error {
	format, err := requestFormat(c.Request())
	if err != nil {
		return err
	}
	body, err := h.read(c)
	if err != nil {
		return err
	}
	defer body.close()
	evs, err := h.decode(body.data, format)
	if err != nil {
		return err
	}
	res, err := h.write(c, evs)
	if err != nil {
		return err
	}
	return answerAccepted(c, res)
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
	body, err := h.read(c)
	if err != nil {
		return err
	}
	defer body.close()
	evs, err := h.decode(body.data, format)
	if err != nil {
		return err
	}
	for i := range evs {
		if evs[i].Type != events.Click {
			return &server.Status{Code: http.StatusBadRequest, Index: &i,
				Msg: "type: POST /click records clicks only; send other types to /v1/events"}
		}
	}
	res, err := h.write(c, evs)
	if err != nil {
		return err
	}
	return answerAccepted(c, res)
}

// requestBody is a request's body, read whole, and what it holds of MAX_INFLIGHT_BYTES
// until close.
type requestBody struct {
	data []byte
	buf  *[]byte // from bufPool
	held int64
	lim  *bodyLimit
}

func (b *requestBody) close() {
	b.lim.release(b.held)
	bufPool.Put(b.buf)
}

// read is the first step: backpressure, then the body, up to MAX_BODY_BYTES.
func (h *handler) read(c echo.Context) (*requestBody, error) {
	return h.readUpTo(c, h.cfg.MaxBodyBytes)
}

// readUpTo is read with a limit of its own (the Segment endpoints have Segment's).
func (h *handler) readUpTo(c echo.Context, max int64) (*requestBody, error) {
	// Refused before the body is read: shedding load should cost next to nothing.
	switch reason := h.bp.Reason(); reason {
	case "":
	case notChecked: // Redis has not answered since ingest started: unavailable, as it is
		return nil, &server.Unavailable{Err: errors.New(reason)}
	default:
		return nil, &server.Status{Code: http.StatusServiceUnavailable, Msg: reason}
	}
	buf := bufPool.Get().(*[]byte)
	data, held, err := readBody(c.Request(), max, h.inflight, *buf)
	if err != nil {
		bufPool.Put(buf)
		return nil, err
	}
	return &requestBody{data: data, buf: buf, held: held, lim: h.inflight}, nil
}

// decode is the second step for the pipeline's own API shapes.
func (h *handler) decode(body []byte, format events.Format) ([]events.Event, error) {
	evs, err := events.DecodeRequest(body, format, h.cfg.MaxEvents, h.now())
	if err != nil {
		return nil, decodeError(err, h.cfg.MaxEvents)
	}
	return evs, nil
}

// write is the third step: it returns once Redis holds every event, or with the error
// the client gets (a 503).
func (h *handler) write(c echo.Context, evs []events.Event) (Accepted, error) {
	// The deadline keeps a client from waiting on a Redis that does not answer: it gets a
	// 503 with Retry-After instead. The wait does not end when the client goes away: its
	// events are on their way to Redis by then, and the metrics must say what became of
	// them. (net/http also reports a client that only shut down its sending side as gone,
	// and that client still reads its answer.)
	rctx := c.Request().Context()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(rctx), h.cfg.RedisTimeout+250*time.Millisecond)
	defer cancel()
	dups, err := h.w.Write(ctx, rctx.Done(), evs)
	gone := rctx.Err() != nil
	if err != nil {
		if gone {
			h.m.goneUnconf.Inc()
		}
		return Accepted{}, &server.Unavailable{Err: err}
	}
	res := Accepted{Accepted: len(evs) - dups, Duplicates: dups}
	h.m.accepted.Add(float64(res.Accepted))
	if dups > 0 {
		h.m.duplicates.Add(float64(dups))
	}
	if gone {
		h.m.goneWritten.Inc()
		h.logger.Debug("client closed its connection (or its sending half) before its answer; its events were written",
			"accepted", res.Accepted, "duplicates", dups)
	}
	return res, nil
}

// answerAccepted is the last step of the pipeline's own API: 202 with the counts.
// Encoded by hand: this is the answer to every request.
func answerAccepted(c echo.Context, res Accepted) error {
	b := make([]byte, 0, 48)
	b = append(b, `{"accepted":`...)
	b = strconv.AppendInt(b, int64(res.Accepted), 10)
	b = append(b, `,"duplicates":`...)
	b = strconv.AppendInt(b, int64(res.Duplicates), 10)
	b = append(b, '}')
	return c.JSONBlob(http.StatusAccepted, b)
}

// requestFormat maps the Content-Type to a body format; anything else is a 415, and so
// is a Content-Encoding other than identity or gzip.
func requestFormat(r *http.Request) (events.Format, error) {
	if _, err := contentEncoding(r); err != nil {
		return 0, err
	}
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
