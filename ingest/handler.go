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
	body, held, err := readBody(c.Request(), h.cfg.MaxBodyBytes, h.inflight, *buf)
	if err != nil {
		return err
	}
	defer h.inflight.release(held)
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
		return &server.Unavailable{Err: err}
	}
	h.m.accepted.Add(float64(len(evs) - dups))
	if dups > 0 {
		h.m.duplicates.Add(float64(dups))
	}
	if gone {
		h.m.goneWritten.Inc()
		h.logger.Debug("client closed its connection (or its sending half) before its answer; its events were written",
			"accepted", len(evs)-dups, "duplicates", dups)
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

// requestFormat maps the Content-Type to a body format; anything else is a 415, and so
// is a Content-Encoding other than identity.
func requestFormat(r *http.Request) (events.Format, error) {
	if err := checkEncoding(r); err != nil {
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
