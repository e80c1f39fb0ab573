package workload

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Outcome is how one POST to ingest ended.
type Outcome int

const (
	Accepted    Outcome = iota // 202, with a body that accounts for every event
	Unavailable                // 503 with a Retry-After of at least one second
	ConnError                  // no answer: connection refused, reset or closed
	Hung                       // no answer within the client's timeout
	Wrong                      // any other answer: a 4xx, a 500, a 503 without Retry-After, a bad 202 body
	outcomes
)

func (o Outcome) String() string {
	return [...]string{"202", "503", "connection error", "hung", "wrong answer"}[o]
}

// Stats count a Poster's attempts by outcome.
type Stats struct {
	Attempts    atomic.Int64
	Accepted    atomic.Int64 // requests answered 202
	Unavailable atomic.Int64
	ConnErrors  atomic.Int64
	Hung        atomic.Int64
	Wrong       atomic.Int64
	Events      atomic.Int64 // events in requests answered 202, copies included
}

func (s *Stats) count(o Outcome) {
	s.Attempts.Add(1)
	switch o {
	case Accepted:
		s.Accepted.Add(1)
	case Unavailable:
		s.Unavailable.Add(1)
	case ConnError:
		s.ConnErrors.Add(1)
	case Hung:
		s.Hung.Add(1)
	case Wrong:
		s.Wrong.Add(1)
	}
}

// Poster posts batches to ingest and keeps the expected totals. Every attempt ends in
// one Outcome; only a 202 adds to the expected totals. It is safe for concurrent use.
type Poster struct {
	client *http.Client
	url    string
	exp    *Expected
	Stats  Stats

	// RetryPause is the pause before a retry; 100 ms unless set before the first Post.
	RetryPause time.Duration

	mu     sync.Mutex
	wrong  []string       // the first few wrong answers, for the report
	phases []*phaseCounts // see Mark; the last is the current one
}

// phaseCounts counts the attempts that started between one Mark and the next.
type phaseCounts struct {
	running    atomic.Int64
	ended      [outcomes]atomic.Int64 // by outcome
	endedLater [outcomes]atomic.Int64 // of those, the ones that ended after the next Mark
}

// NewPoster returns a Poster to ingest's /v1/events at url that adds accepted events to
// exp. client's Timeout bounds one attempt: an attempt that reaches it counts as Hung.
func NewPoster(client *http.Client, url string, exp *Expected) *Poster {
	return &Poster{client: client, url: url, exp: exp, RetryPause: 100 * time.Millisecond, phases: []*phaseCounts{{}}}
}

// Post sends evs until ingest answers 202 and returns nil, or returns ctx's error.
// 503s, connection errors, hangs and 5xx answers are retried (every event has an
// event_id, so a retry is exact); a 4xx is a bug in the caller and is returned.
func (p *Poster) Post(ctx context.Context, evs []Event, ndjson bool) error {
	for {
		o, detail, err := p.Try(ctx, evs, ndjson)
		if err != nil {
			return err
		}
		if o == Accepted {
			return nil
		}
		if o == Wrong && detail.status >= 400 && detail.status < 500 {
			return fmt.Errorf("POST %s (%d events): %d %s", p.url, len(evs), detail.status, detail.body)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(p.RetryPause):
		}
	}
}

// Answer describes an attempt's answer, for errors.
type Answer struct {
	status int
	body   string
	err    error
}

func (a Answer) String() string {
	if a.err != nil {
		return a.err.Error()
	}
	return strconv.Itoa(a.status) + " " + a.body
}

// Try posts evs once and says how it ended; err is set only when ctx ended first.
func (p *Poster) Try(ctx context.Context, evs []Event, ndjson bool) (Outcome, Answer, error) {
	n, ph := p.phase()
	ph.running.Add(1)
	defer ph.running.Add(-1)
	o, a := p.try(ctx, evs, ndjson)
	if ctx.Err() != nil && o != Accepted {
		return o, a, ctx.Err()
	}
	p.Stats.count(o)
	ph.ended[o].Add(1)
	if now, _ := p.phase(); now != n {
		ph.endedLater[o].Add(1)
	}
	switch o {
	case Accepted:
		p.exp.Add(evs)
		p.Stats.Events.Add(int64(len(evs)))
	case Wrong:
		p.mu.Lock()
		if len(p.wrong) < 10 {
			p.wrong = append(p.wrong, a.String())
		}
		p.mu.Unlock()
	}
	return o, a, nil
}

func (p *Poster) try(ctx context.Context, evs []Event, ndjson bool) (Outcome, Answer) {
	ct, body := Body(evs, ndjson)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return Wrong, Answer{err: err}
	}
	req.Header.Set("Content-Type", ct)
	resp, err := p.client.Do(req)
	if err != nil {
		return transportOutcome(err), Answer{err: err}
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return transportOutcome(err), Answer{err: err}
	}
	a := Answer{status: resp.StatusCode, body: string(b)}
	switch resp.StatusCode {
	case http.StatusAccepted:
		var got struct {
			Accepted   *int `json:"accepted"`
			Duplicates *int `json:"duplicates"`
		}
		if json.Unmarshal(b, &got) != nil || got.Accepted == nil || got.Duplicates == nil ||
			*got.Accepted+*got.Duplicates != len(evs) {
			a.body = fmt.Sprintf("%s (for %d events)", b, len(evs))
			return Wrong, a
		}
		return Accepted, a
	case http.StatusServiceUnavailable:
		if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || n < 1 {
			a.body = fmt.Sprintf("%s (Retry-After %q)", b, resp.Header.Get("Retry-After"))
			return Wrong, a
		}
		return Unavailable, a
	}
	return Wrong, a
}

// transportOutcome tells a hang (the client's timeout) from a connection that failed.
func transportOutcome(err error) Outcome {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return Hung
	}
	return ConnError
}

// WrongAnswers returns the first few wrong answers seen.
func (p *Poster) WrongAnswers() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.wrong...)
}

// Mark notes a moment (say, just before a signal is sent) and returns its number,
// starting a phase: the attempts that start from now on until the next Mark.
// Phase 0 is before the first Mark.
func (p *Poster) Mark() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.phases = append(p.phases, &phaseCounts{})
	return len(p.phases) - 1
}

func (p *Poster) phase() (int, *phaseCounts) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.phases) - 1, p.phases[len(p.phases)-1]
}

// Phase is what became of the attempts that started in one phase.
type Phase struct {
	Running    int64           // not ended yet
	Ended      [outcomes]int64 // by outcome
	EndedLater [outcomes]int64 // of those, the ones that ended after the phase did: in flight at its end
}

// Total is the number of attempts of the phase that ended.
func (ph Phase) Total() int64 {
	var n int64
	for _, c := range ph.Ended {
		n += c
	}
	return n
}

// InFlight is the number of attempts in flight when the phase ended, that ended since.
func (ph Phase) InFlight() int64 {
	var n int64
	for _, c := range ph.EndedLater {
		n += c
	}
	return n
}

// Phase returns what became of the attempts that started in phase n, so far.
func (p *Poster) Phase(n int) Phase {
	p.mu.Lock()
	ph := p.phases[n]
	p.mu.Unlock()
	out := Phase{Running: ph.running.Load()}
	for o := range outcomes {
		out.Ended[o] = ph.ended[o].Load()
		out.EndedLater[o] = ph.endedLater[o].Load()
	}
	return out
}
