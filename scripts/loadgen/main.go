// Command loadgen posts synthetic user-behaviour events to ingest at a chosen rate and
// reports, every second, what it sent and how ingest answered.
//
//	go run ./scripts/loadgen -rate 5000 -duration 30s -c 8 -batch 100
//
// It talks only to the URL it is given (ingest on loopback by default) and always
// stops: after -duration, after -n events, or on Ctrl-C, whichever comes first. Events
// that carry an event_id get ids unique to this run; -retries re-sends some of them, as
// a client retrying after a lost answer would, and ingest should count those as
// duplicates.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/bits"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/clickstream/pipeline/events"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

// config is what the flags ask for.
type config struct {
	endpoint  string
	rate      float64 // events per second; 0 = as fast as the connections allow
	duration  time.Duration
	count     int64 // total events; 0 = until duration
	conns     int
	batch     int
	users     int
	products  int
	zipf      float64 // product popularity skew; 0 = uniform
	idFrac    float64 // fraction of new events that carry an event_id
	retryFrac float64 // fraction of events that re-send an earlier event_id
	mix       mix
	seed      uint64
	timeout   time.Duration
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	target := fs.String("url", "http://127.0.0.1:8080", "ingest base URL (POSTs go to /v1/events), or a full endpoint URL")
	fs.Float64Var(&c.rate, "rate", 1000, "events per second; 0 = as fast as possible")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "how long to run; 0 = until -n events are sent")
	fs.Int64Var(&c.count, "n", 0, "total events to send; 0 = until -duration ends")
	fs.IntVar(&c.conns, "c", 4, "concurrent connections (one request in flight on each)")
	fs.IntVar(&c.batch, "batch", 1, "events per request: 1 = one JSON object, more = an NDJSON batch")
	fs.IntVar(&c.users, "users", 1000, "distinct user ids")
	fs.IntVar(&c.products, "products", 100, "distinct product ids")
	fs.Float64Var(&c.zipf, "zipf", 1.1, "skew of product popularity (Zipf s > 1); 0 = uniform")
	fs.Float64Var(&c.idFrac, "event-ids", 0.5, "fraction of new events that carry an event_id")
	fs.Float64Var(&c.retryFrac, "retries", 0.05, "fraction of events that re-send an earlier event (same event_id)")
	mixFlag := fs.String("mix", "click=70,page_view=25,dwell=5", "event type weights")
	fs.Uint64Var(&c.seed, "seed", 0, "random seed; 0 = a new one each run")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Second, "timeout of one request")
	if err := fs.Parse(args[1:]); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	var err error
	if c.endpoint, err = endpoint(*target); err != nil {
		return c, err
	}
	if c.mix, err = parseMix(*mixFlag); err != nil {
		return c, err
	}
	if c.seed == 0 {
		c.seed = uint64(time.Now().UnixNano())
	}
	switch {
	case c.duration <= 0 && c.count <= 0:
		return c, errors.New("-duration or -n must bound the run")
	case c.duration < 0 || c.count < 0:
		return c, errors.New("-duration and -n must not be negative")
	case c.rate < 0:
		return c, errors.New("-rate must not be negative")
	case c.conns < 1 || c.conns > 10_000:
		return c, errors.New("-c must be from 1 to 10000")
	case c.batch < 1 || c.batch > 100_000:
		return c, errors.New("-batch must be from 1 to 100000 (ingest takes 1000 per request by default)")
	case c.users < 1 || c.products < 1:
		return c, errors.New("-users and -products must be at least 1")
	case c.zipf != 0 && c.zipf <= 1:
		return c, errors.New("-zipf must be 0 (uniform) or greater than 1")
	case c.idFrac < 0 || c.idFrac > 1 || c.retryFrac < 0 || c.retryFrac > 1:
		return c, errors.New("-event-ids and -retries must be fractions from 0 to 1")
	case c.timeout <= 0:
		return c, errors.New("-timeout must be positive")
	}
	return c, nil
}

// endpoint accepts a base URL ("http://host:8080") or a full one ("…/click").
func endpoint(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("-url %q: want http://host:port", raw)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/events"
	}
	return u.String(), nil
}

// mix picks event types by weight.
type mix struct {
	types   []events.Type
	weights []float64
	total   float64
}

func parseMix(s string) (mix, error) {
	byName := map[string]events.Type{}
	for _, t := range []events.Type{events.Click, events.PageView, events.Dwell} {
		byName[t.String()] = t
	}
	var m mix
	for part := range strings.SplitSeq(s, ",") {
		name, w, ok := strings.Cut(strings.TrimSpace(part), "=")
		t, known := byName[name]
		weight, err := strconv.ParseFloat(w, 64)
		if !ok || !known || err != nil || weight < 0 {
			return m, fmt.Errorf("-mix %q: want type=weight,… with types click, page_view, dwell", s)
		}
		m.types = append(m.types, t)
		m.weights = append(m.weights, weight)
		m.total += weight
	}
	if m.total <= 0 {
		return m, fmt.Errorf("-mix %q: weights add up to zero", s)
	}
	return m, nil
}

func (m mix) pick(r *rand.Rand) events.Type {
	x := r.Float64() * m.total
	for i, w := range m.weights {
		if x < w {
			return m.types[i]
		}
		x -= w
	}
	return m.types[len(m.types)-1]
}

func (m mix) String() string {
	parts := make([]string, len(m.types))
	for i, t := range m.types {
		parts[i] = t.String() + "=" + strconv.FormatFloat(m.weights[i], 'g', -1, 64)
	}
	return strings.Join(parts, ",")
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	bound := fmt.Sprintf("%d events", cfg.count)
	if cfg.duration > 0 {
		bound = cfg.duration.String()
		if cfg.count > 0 {
			bound += fmt.Sprintf(" or %d events", cfg.count)
		}
	}
	rate := "unlimited"
	if cfg.rate > 0 {
		rate = strconv.FormatFloat(cfg.rate, 'g', -1, 64) + "/s"
	}
	fmt.Fprintf(stdout, "POST %s: rate %s for %s, %d connections, batch %d, %d users, %d products, event_id %.0f%%, retries %.0f%%, mix %s, seed %d\n",
		cfg.endpoint, rate, bound, cfg.conns, cfg.batch, cfg.users, cfg.products, cfg.idFrac*100, cfg.retryFrac*100, cfg.mix, cfg.seed)

	// Stopping ends the sending of new requests; requests in flight finish (bounded by
	// -timeout), so that what was sent is also counted.
	stopCtx := ctx
	if cfg.duration > 0 {
		var cancel context.CancelFunc
		stopCtx, cancel = context.WithTimeout(ctx, cfg.duration)
		defer cancel()
	}
	client := &http.Client{
		Timeout: cfg.timeout,
		Transport: &http.Transport{
			MaxIdleConns:        cfg.conns,
			MaxIdleConnsPerHost: cfg.conns,
			MaxConnsPerHost:     cfg.conns,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
	}
	defer client.CloseIdleConnections()

	st := newStats()
	p := &pacer{start: time.Now(), rate: cfg.rate, limit: cfg.count}
	runID := strconv.FormatInt(time.Now().UnixNano(), 36)
	var wg sync.WaitGroup
	for i := range cfg.conns {
		w := &worker{cfg: &cfg, client: client, pacer: p, stats: st, gen: newGenerator(&cfg, runID, i)}
		wg.Go(func() { w.run(stopCtx) })
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	prev, prevAt := st.snapshot(), p.start
	for {
		select {
		case <-done:
			return summary(stdout, cfg, st, time.Since(p.start))
		case now := <-tick.C:
			cur := st.snapshot()
			fmt.Fprintln(stdout, progress(now.Sub(p.start), cur, prev, now.Sub(prevAt)))
			prev, prevAt = cur, now
		}
	}
}

// pacer hands out events to the workers: how many a request may carry, and when it
// may be sent so that the run keeps to -rate. The schedule is fixed from the start, so
// a slow answer delays the requests behind it but not the total rate.
type pacer struct {
	start  time.Time
	rate   float64
	limit  int64
	issued atomic.Int64
}

// next reserves up to n events; it returns 0 once -n events have been handed out.
func (p *pacer) next(n int) (int, time.Time) {
	end := p.issued.Add(int64(n))
	first := end - int64(n)
	if p.limit > 0 {
		if first >= p.limit {
			return 0, time.Time{}
		}
		n = int(min(end, p.limit) - first)
	}
	if p.rate == 0 {
		return n, time.Time{}
	}
	return n, p.start.Add(time.Duration(float64(first) / p.rate * float64(time.Second)))
}

// wire is an event as a client sends it.
type wire struct {
	UserID     string `json:"user_id"`
	ProductID  string `json:"product_id"`
	Type       string `json:"type"`
	DurationMs int64  `json:"duration_ms,omitempty"`
	EventID    string `json:"event_id,omitempty"`
}

// generator makes one worker's events. Its seed is derived from -seed and the worker
// number, so a run with the same flags sends the same users, products and types.
type generator struct {
	cfg    *config
	r      *rand.Rand
	zipf   *rand.Zipf
	idBase string
	seq    int64
	recent []wire // events with an event_id, replayed as retries
	next   int
}

func newGenerator(cfg *config, runID string, worker int) *generator {
	g := &generator{cfg: cfg, r: rand.New(rand.NewPCG(cfg.seed, uint64(worker)))}
	if cfg.zipf > 0 && cfg.products > 1 {
		g.zipf = rand.NewZipf(g.r, cfg.zipf, 1, uint64(cfg.products-1))
	}
	// Event ids are unique to the run even with a fixed seed: ingest remembers them for
	// its dedup window, and a second run must not be all duplicates.
	g.idBase = "lg." + runID + "." + strconv.Itoa(worker) + "."
	return g
}

// event returns a new event, or with probability -retries a copy of a recent one.
func (g *generator) event() (ev wire, retry bool) {
	if len(g.recent) > 0 && g.r.Float64() < g.cfg.retryFrac {
		return g.recent[g.r.IntN(len(g.recent))], true
	}
	ev.UserID = "u" + strconv.Itoa(g.r.IntN(g.cfg.users))
	if g.zipf != nil {
		ev.ProductID = "p" + strconv.FormatUint(g.zipf.Uint64(), 10)
	} else {
		ev.ProductID = "p" + strconv.Itoa(g.r.IntN(g.cfg.products))
	}
	t := g.cfg.mix.pick(g.r)
	ev.Type = t.String()
	if t == events.Dwell {
		ev.DurationMs = 100 + g.r.Int64N(60_000)
	}
	if g.r.Float64() < g.cfg.idFrac {
		g.seq++
		ev.EventID = g.idBase + strconv.FormatInt(g.seq, 10)
		g.remember(ev)
	}
	return ev, false
}

func (g *generator) remember(ev wire) {
	const keep = 256
	if len(g.recent) < keep {
		g.recent = append(g.recent, ev)
		return
	}
	g.recent[g.next] = ev
	g.next = (g.next + 1) % keep
}

// worker sends requests one after another on its own connection.
type worker struct {
	cfg    *config
	client *http.Client
	pacer  *pacer
	stats  *stats
	gen    *generator
	body   bytes.Buffer
}

func (w *worker) run(ctx context.Context) {
	contentType := "application/json"
	if w.cfg.batch > 1 {
		contentType = "application/x-ndjson"
	}
	enc := json.NewEncoder(&w.body)
	for {
		n, at := w.pacer.next(w.cfg.batch)
		if n == 0 || !sleepUntil(ctx, at) {
			return
		}
		// Encoder ends each object with a newline: one object is a JSON body, several
		// are NDJSON.
		w.body.Reset()
		retries := 0
		for range n {
			ev, retry := w.gen.event()
			if retry {
				retries++
			}
			if err := enc.Encode(ev); err != nil {
				panic(err) // cannot happen: wire has only strings and ints
			}
		}
		if !w.post(contentType, n, retries) {
			// Ingest is down or refusing connections: pause instead of spinning.
			sleepUntil(ctx, time.Now().Add(100*time.Millisecond))
		}
	}
}

func sleepUntil(ctx context.Context, at time.Time) bool {
	d := time.Until(at)
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// post sends the body and counts the answer. It returns false if no answer came.
func (w *worker) post(contentType string, n, retries int) bool {
	// Not tied to the run's context: a request sent before the end is answered and counted.
	req, err := http.NewRequest(http.MethodPost, w.cfg.endpoint, bytes.NewReader(w.body.Bytes()))
	if err != nil {
		panic(err) // cannot happen: the URL was parsed at start
	}
	req.Header.Set("Content-Type", contentType)
	start := time.Now()
	resp, err := w.client.Do(req)
	if err != nil {
		w.stats.failed(n, retries, "net", time.Since(start))
		return false
	}
	defer resp.Body.Close()
	var a struct {
		Accepted   int64 `json:"accepted"`
		Duplicates int64 `json:"duplicates"`
	}
	if resp.StatusCode != http.StatusAccepted {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // so the connection is reused
		w.stats.failed(n, retries, strconv.Itoa(resp.StatusCode), time.Since(start))
		return true
	}
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		w.stats.failed(n, retries, "bad-202-body", time.Since(start))
		return true
	}
	w.stats.ok(n, retries, a.Accepted, a.Duplicates, time.Since(start))
	return true
}

// stats counts events and answers; workers update it concurrently.
type stats struct {
	sent, accepted, duplicates, failedEvents, retries atomic.Int64
	latency                                           histogram

	mu     sync.Mutex
	errors map[string]int64 // failed requests by HTTP status, "net" for transport errors
}

func newStats() *stats { return &stats{errors: map[string]int64{}} }

func (s *stats) ok(n, retries int, accepted, duplicates int64, d time.Duration) {
	s.sent.Add(int64(n))
	s.retries.Add(int64(retries))
	s.accepted.Add(accepted)
	s.duplicates.Add(duplicates)
	s.latency.record(d)
}

func (s *stats) failed(n, retries int, status string, d time.Duration) {
	s.sent.Add(int64(n))
	s.retries.Add(int64(retries))
	s.failedEvents.Add(int64(n))
	s.latency.record(d)
	s.mu.Lock()
	s.errors[status]++
	s.mu.Unlock()
}

type snapshot struct {
	sent, accepted, duplicates, failedEvents, retries int64
	errors                                            map[string]int64
}

func (s *stats) snapshot() snapshot {
	s.mu.Lock()
	errs := make(map[string]int64, len(s.errors))
	for k, v := range s.errors {
		errs[k] = v
	}
	s.mu.Unlock()
	return snapshot{
		sent: s.sent.Load(), accepted: s.accepted.Load(), duplicates: s.duplicates.Load(),
		failedEvents: s.failedEvents.Load(), retries: s.retries.Load(), errors: errs,
	}
}

func formatErrors(errs map[string]int64) string {
	if len(errs) == 0 {
		return "0"
	}
	keys := make([]string, 0, len(errs))
	for k := range errs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s×%d", k, errs[k])
	}
	return strings.Join(parts, " ")
}

func progress(elapsed time.Duration, cur, prev snapshot, interval time.Duration) string {
	rate := float64(cur.sent-prev.sent) / interval.Seconds()
	return fmt.Sprintf("%5.0fs  sent %9d  %8.0f/s  accepted %9d  duplicates %7d  errors %s",
		elapsed.Seconds(), cur.sent, rate, cur.accepted, cur.duplicates, formatErrors(cur.errors))
}

func summary(w io.Writer, cfg config, st *stats, elapsed time.Duration) error {
	s := st.snapshot()
	fmt.Fprintf(w, "\nsent        %d events in %.2fs (%.0f events/s), %d connections, batch %d\n",
		s.sent, elapsed.Seconds(), float64(s.sent)/elapsed.Seconds(), cfg.conns, cfg.batch)
	fmt.Fprintf(w, "accepted    %d\n", s.accepted)
	fmt.Fprintf(w, "duplicates  %d (retries sent: %d)\n", s.duplicates, s.retries)
	fmt.Fprintf(w, "errors      %s (requests; %d events not accepted)\n", formatErrors(s.errors), s.failedEvents)
	fmt.Fprintf(w, "latency     p50 %v  p90 %v  p99 %v  max %v (per request)\n",
		st.latency.quantile(0.50), st.latency.quantile(0.90), st.latency.quantile(0.99), st.latency.quantile(1))
	if s.sent > 0 && s.accepted+s.duplicates == 0 {
		return errors.New("ingest accepted no event")
	}
	return nil
}

// histogram records durations in buckets 1/8 of a power of two wide, so a quantile is
// within 12.5% of the true value, in fixed memory however long the run.
type histogram struct {
	buckets [64 * 8]atomic.Int64
}

func (h *histogram) record(d time.Duration) {
	h.buckets[bucketOf(uint64(max(d/time.Microsecond, 0))+1)].Add(1)
}

func bucketOf(us uint64) int {
	exp := bits.Len64(us) - 1
	var sub uint64
	if exp >= 3 {
		sub = us >> (exp - 3) & 7
	} else {
		sub = us << (3 - exp) & 7
	}
	return exp*8 + int(sub)
}

// upper is the largest duration that falls into bucket b.
func upper(b int) time.Duration {
	exp, sub := b/8, uint64(b%8)
	us := (8 + sub + 1) << exp >> 3 // (1 + (sub+1)/8) · 2^exp
	return time.Duration(us-1) * time.Microsecond
}

// quantile returns the upper bound of the bucket holding the q-quantile.
func (h *histogram) quantile(q float64) time.Duration {
	counts := make([]int64, len(h.buckets))
	var total int64
	for i := range h.buckets {
		counts[i] = h.buckets[i].Load()
		total += counts[i]
	}
	if total == 0 {
		return 0
	}
	rank := max(int64(q*float64(total)+0.5), 1)
	var seen int64
	for i, c := range counts {
		seen += c
		if seen >= rank {
			return upper(i)
		}
	}
	return upper(len(counts) - 1)
}
