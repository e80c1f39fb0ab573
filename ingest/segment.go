package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/config"
	"github.com/clickstream/pipeline/internal/server"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// Segment's HTTP Tracking API, so that the analytics SDKs sites already use (Segment's,
// RudderStack's) send to ingest unchanged: point their endpoint (Config.Endpoint in
// analytics-go, host in analytics-node and analytics-python) at ingest. The body is
// mapped to the event contract by events.DecodeSegment; the request goes through the
// same read and write steps as the pipeline's own API.

// SegmentConfig is the Segment API's part of the configuration.
type SegmentConfig struct {
	ClickEvents []string // SEGMENT_CLICK_EVENTS: track names counted as clicks
	ViewEvents  []string // SEGMENT_VIEW_EVENTS: as page views
	DwellEvents []string // SEGMENT_DWELL_EVENTS: as dwell, with properties.duration_ms

	MaxCallBytes   int64 // SEGMENT_MAX_CALL_BYTES: a single call's body, and each call of a batch
	MaxBatchBytes  int64 // SEGMENT_MAX_BATCH_BYTES: a batch's body
	MaxBatchEvents int   // SEGMENT_MAX_BATCH_EVENTS: calls in one batch
}

// readSegmentConfig reads the SEGMENT_* variables. The limits default to Segment's own
// (32 KB per call, 500 KB and 2,500 calls per batch), which the SDKs batch to; 500 KB
// is taken as 500 KiB, so that analytics-go's batches, which may pass 500,000 bytes by
// the few bytes of their envelope, still fit.
func readSegmentConfig(r *config.Reader) SegmentConfig {
	c := SegmentConfig{
		ClickEvents:    r.Names("SEGMENT_CLICK_EVENTS", "Product Clicked"),
		ViewEvents:     r.Names("SEGMENT_VIEW_EVENTS", "Product Viewed"),
		DwellEvents:    r.Names("SEGMENT_DWELL_EVENTS", "Product Dwelled"),
		MaxCallBytes:   int64(r.Int("SEGMENT_MAX_CALL_BYTES", 32<<10, 64, 64<<20)),
		MaxBatchBytes:  int64(r.Int("SEGMENT_MAX_BATCH_BYTES", 500<<10, 64, 64<<20)),
		MaxBatchEvents: r.Int("SEGMENT_MAX_BATCH_EVENTS", 2500, 1, 100_000),
	}
	// A name in two lists would be counted as whichever comes first: say so instead.
	seen := map[string]string{}
	for _, l := range []struct {
		name  string
		names []string
	}{{"SEGMENT_CLICK_EVENTS", c.ClickEvents}, {"SEGMENT_VIEW_EVENTS", c.ViewEvents}, {"SEGMENT_DWELL_EVENTS", c.DwellEvents}} {
		for _, n := range l.names {
			if other, ok := seen[n]; ok && other != l.name {
				r.Invalid(l.name, n, "an event name may be in only one of SEGMENT_CLICK_EVENTS, SEGMENT_VIEW_EVENTS and SEGMENT_DWELL_EVENTS; it is also in "+other)
			}
			seen[n] = l.name
		}
	}
	return c
}

// check reports limits that cannot work together with ingest's own.
func (c SegmentConfig) check(maxInflight int64) error {
	if maxInflight < c.MaxBatchBytes {
		return fmt.Errorf("invalid configuration: MAX_INFLIGHT_BYTES=%d: must be at least SEGMENT_MAX_BATCH_BYTES (%d), or a batch of that size could never be received",
			maxInflight, c.MaxBatchBytes)
	}
	return nil
}

// segment serves the Segment endpoints.
type segment struct {
	h       *handler
	keys    *server.Keyring
	mapping events.SegmentMapping
	cfg     SegmentConfig
	dropped *prometheus.CounterVec // ingest_segment_dropped_total{result,reason}
}

func newSegment(h *handler) *segment {
	c := h.cfg.Segment
	set := func(names []string) map[string]bool {
		m := make(map[string]bool, len(names))
		for _, n := range names {
			m[n] = true
		}
		return m
	}
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ingest_segment_dropped_total",
		Help: "Calls to the Segment endpoints that were not counted, by result (ignored: they say nothing the pipeline counts, such as identify or a track of another name; rejected: invalid) and reason.",
	}, []string{"result", "reason"})
	for _, r := range events.SegmentIgnoredReasons {
		dropped.WithLabelValues("ignored", r)
	}
	for _, r := range events.SegmentRejectedReasons {
		dropped.WithLabelValues("rejected", r)
	}
	h.m.reg.MustRegister(dropped)
	h.logger.Info("segment API", "click_events", c.ClickEvents, "view_events", c.ViewEvents, "dwell_events", c.DwellEvents,
		"max_call_bytes", c.MaxCallBytes, "max_batch_bytes", c.MaxBatchBytes, "max_batch_events", c.MaxBatchEvents)
	return &segment{
		h:    h,
		keys: server.NewKeyring("ingest", h.cfg.Keys),
		mapping: events.SegmentMapping{
			Click: set(c.ClickEvents), View: set(c.ViewEvents), Dwell: set(c.DwellEvents),
			MaxItemBytes: int(c.MaxCallBytes), MaxItems: c.MaxBatchEvents,
		},
		cfg:     c,
		dropped: dropped,
	}
}

// SegmentAnswer is the body of a 200 from a Segment endpoint: Segment's {"success":true},
// and what became of the calls. Accepted and duplicates are as in Accepted; ignored
// calls say nothing the pipeline counts; rejected ones are invalid, and errors names
// the first few of them.
type SegmentAnswer struct {
	Success    bool           `json:"success"`
	Accepted   int            `json:"accepted"`
	Duplicates int            `json:"duplicates"`
	Ignored    int            `json:"ignored"`
	Rejected   int            `json:"rejected"`
	Errors     []SegmentError `json:"errors"`
}

// SegmentError is a rejected call: its index in the batch (0 for a single call) and why.
type SegmentError struct {
	Index int    `json:"index"`
	Error string `json:"error"`
}

// maxSegmentErrors is how many rejected calls an answer names.
const maxSegmentErrors = 10

// post is the handler of one Segment endpoint: read, decode (Segment's shape), write,
// answer, with the write key also taken from the body.
func (s *segment) post(call events.SegmentCall) echo.HandlerFunc {
	max := s.cfg.MaxBatchBytes
	if call != events.SegmentBatch {
		max = s.cfg.MaxCallBytes
	}
	return func(c echo.Context) error {
		// The key comes in the Authorization header, as every SDK sends it, or as the
		// body's writeKey (analytics-node sends both): without the first, the body must
		// be read before the request can be refused.
		authed := s.keys.Open() || s.keys.Request(c.Request())
		body, err := s.h.readUpTo(c, max)
		if err != nil {
			return segmentReadError(err, call)
		}
		defer body.close()
		res, derr := events.DecodeSegment(body.data, call, &s.mapping, s.h.now())
		if !authed && !s.keys.Match(res.WriteKey) {
			return s.keys.Unauthorized(c)
		}
		if derr != nil {
			return s.decodeError(derr)
		}
		var acc Accepted
		if len(res.Events) > 0 {
			if acc, err = s.h.write(c, res.Events); err != nil {
				return err
			}
		}
		return s.answer(c, acc, &res)
	}
}

// answer counts the dropped calls and answers 200 with what became of every call.
func (s *segment) answer(c echo.Context, acc Accepted, res *events.SegmentResult) error {
	a := SegmentAnswer{Success: true, Accepted: acc.Accepted, Duplicates: acc.Duplicates,
		Ignored: res.Ignored(), Rejected: res.Rejected, Errors: make([]SegmentError, 0, min(res.Rejected, maxSegmentErrors))}
	for _, d := range res.Drops {
		result := "rejected"
		if d.Ignored {
			result = "ignored"
		} else if len(a.Errors) < maxSegmentErrors {
			a.Errors = append(a.Errors, SegmentError{Index: d.Index, Error: d.Msg})
		}
		s.dropped.WithLabelValues(result, d.Reason).Inc()
	}
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return c.JSONBlob(http.StatusOK, b)
}

// segmentReadError answers a body over Segment's limits as Segment does: 400.
func segmentReadError(err error, call events.SegmentCall) error {
	var size *sizeError
	if !errors.As(err, &size) {
		return err
	}
	what := "call"
	if call == events.SegmentBatch {
		what = "batch"
	}
	msg := size.Msg + " (Segment's limit per " + what + "; the SDKs stay under it)"
	return &sizeError{server.Status{Code: http.StatusBadRequest, Msg: msg}}
}

// tooManyCalls is a batch of more calls than SEGMENT_MAX_BATCH_EVENTS: a type of its own
// for the metrics (too_many).
type tooManyCalls struct{ server.Status }

func (e *tooManyCalls) Error() string { return e.Msg }
func (e *tooManyCalls) Unwrap() error { return &e.Status }

func (s *segment) decodeError(err error) error {
	if errors.Is(err, events.ErrTooMany) {
		return &tooManyCalls{server.Status{Code: http.StatusBadRequest,
			Msg: "more than " + strconv.Itoa(s.cfg.MaxBatchEvents) + " calls in one batch (SEGMENT_MAX_BATCH_EVENTS)"}}
	}
	return decodeError(err, 0)
}
